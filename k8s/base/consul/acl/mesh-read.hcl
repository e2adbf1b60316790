# ACL policy "mesh-read": read-only view of the mesh, for `mesh status`, the Consul UI and
# dashboards. It can change nothing.
service_prefix "" {
  policy     = "read"
  intentions = "read"
}
node_prefix "" {
  policy = "read"
}
agent_prefix "" {
  policy = "read"
}
