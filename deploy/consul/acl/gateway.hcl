# ACL policy "mesh-gateway" (Consul 1.8+): what an API gateway instance needs and nothing more.
# Register, re-register and deregister itself, and its Connect identity (the leaf
# certificate it presents to the services) need service:write on itself.
service "gateway" {
  policy = "write"
}

# The services the gateway calls: resolve their healthy instances
# (/v1/health/connect/<name>). Not payments: the gateway never calls it.
service "users" {
  policy = "read"
}
service "inventory" {
  policy = "read"
}
service "orders" {
  policy = "read"
}
service "shipping" {
  policy = "read"
}

# Health entries are filtered by node: without node:read they come back empty.
node_prefix "" {
  policy = "read"
}
