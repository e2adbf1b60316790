# ACL policy "mesh-agent": the Consul agent's own token (acl.tokens.agent), which it uses
# to register its node and to run anti-entropy of the services registered with it.
node_prefix "" {
  policy = "write"
}
service_prefix "" {
  policy = "read"
}
