# ACL policy "mesh-users" (Consul 1.8+): what a users instance needs and nothing more.
# Register, re-register and deregister itself; Connect-native identity (its leaf
# certificate) and authorizing inbound connections need service:write on itself;
# intentions = "read" lets it list the intentions that name it.
service "users" {
  policy     = "write"
  intentions = "read"
}

# Health entries are filtered by node: without node:read they come back empty.
node_prefix "" {
  policy = "read"
}
