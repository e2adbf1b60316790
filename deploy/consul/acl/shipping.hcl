# ACL policy "mesh-shipping" (Consul 1.8+): what a shipping instance needs and nothing more.
# Register, re-register and deregister itself; Connect-native identity (its leaf
# certificate) and authorizing inbound connections need service:write on itself;
# intentions = "read" lets it list the intentions that name it.
service "shipping" {
  policy     = "write"
  intentions = "read"
}

# It calls no service; it finds the message broker it consumes from in Consul
# (service "mesh-broker") when no --broker-url is given.
service "mesh-broker" {
  policy = "read"
}

# Health entries are filtered by node: without node:read they come back empty.
node_prefix "" {
  policy = "read"
}
