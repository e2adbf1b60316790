# ACL policy "mesh-orders" (Consul 1.8+): what an orders instance needs and nothing more.
# Register, re-register and deregister itself; Connect-native identity (its leaf
# certificate) and authorizing inbound connections need service:write on itself;
# intentions = "read" lets it list the intentions that name it.
service "orders" {
  policy     = "write"
  intentions = "read"
}

# The services orders calls: resolve their healthy instances
# (/v1/health/service/<name>, /v1/health/connect/<name>).
service "users" {
  policy = "read"
}
service "inventory" {
  policy = "read"
}
service "payments" {
  policy = "read"
}

# The message broker its outbox relay publishes to, found in Consul (service
# "mesh-broker") when no --broker-url is given.
service "mesh-broker" {
  policy = "read"
}

# Health entries are filtered by node: without node:read they come back empty.
node_prefix "" {
  policy = "read"
}
