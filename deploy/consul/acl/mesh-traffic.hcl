# ACL policy "mesh-traffic": traffic management. Write the service-defaults, service-resolver,
# service-splitter and service-router config entries of the mesh's services
# (`consul config write`, the README's canary walkthrough, the Job consul-config-entries).
# Consul 1.8 has no narrower rule for config entries: writing those of a service takes
# service:write on it (and service:read on every service an entry sends to, which write
# includes here). It can also register instances of these services: give it to operators
# and the config Job, never to a service.
service "users" {
  policy = "write"
}
service "inventory" {
  policy = "write"
}
service "payments" {
  policy = "write"
}
service "orders" {
  policy = "write"
}
service "shipping" {
  policy = "write"
}

# `mesh chain` and `consul config read` next to the writes: health entries are filtered by node.
node_prefix "" {
  policy = "read"
}
