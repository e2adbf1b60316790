# ACL policy "mesh-payments" (Consul 1.8+): what a payments instance needs and nothing more.
# Register, re-register and deregister itself; Connect-native identity (its leaf
# certificate) and authorizing inbound connections need service:write on itself;
# intentions = "read" lets it list the intentions that name it.
service "payments" {
  policy     = "write"
  intentions = "read"
}

# Health entries are filtered by node: without node:read they come back empty.
node_prefix "" {
  policy = "read"
}
