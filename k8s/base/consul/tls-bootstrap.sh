#!/bin/sh
# Makes what Consul's TLS and gossip encryption need, once, as Secrets of this namespace
# (the job of the Consul Helm chart's TLS init Job; docs/adr/0004-consul-on-kubernetes.md):
#   consul-ca          ca.pem                       the CA certificate: every client mounts it
#   consul-ca-key      ca.pem, ca-key.pem           the CA's key: mounted nowhere, issues the
#                                                   next server certificate
#   consul-server-tls  server.pem, server-key.pem   the servers' certificate: server.dc1.consul
#                                                   (RPC, verify_server_hostname), the API
#                                                   Service `consul`, every server's DNS name
#   consul-gossip-key  gossip.json                  {"encrypt": "<consul keygen>"}
# and, with a CA of its own (domain `broker`: a broker certificate can never pass for a
# Consul server, whose name is server.dc1.consul), what the events' broker's TLS needs:
#   broker-ca          ca.pem                       the broker's CA: orders and shipping
#                                                   mount it (MESH_BROKER_CACERT)
#   broker-ca-key      ca.pem, ca-key.pem           its key: mounted nowhere
#   broker-tls         server.pem, server-key.pem,  the broker's certificate: mesh-broker
#                      ca.pem                       (the host of MESH_BROKER_URL), its
#                                                   namespace names, 127.0.0.1 (the probes)
# Idempotent: a Secret that exists is kept, a missing server certificate is issued by the
# existing CA (delete consul-server-tls or broker-tls and re-run the Job to renew it). Runs
# in the hashicorp/consul image (consul, curl, busybox) as a ServiceAccount that may create
# Secrets and read only these seven.
set -eu
sa=${SERVICE_ACCOUNT_DIR:-/var/run/secrets/kubernetes.io/serviceaccount}
ns=$(cat "$sa/namespace")
api="${KUBERNETES_API:-https://kubernetes.default.svc}/api/v1/namespaces/$ns/secrets"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

kube() { curl -sS --cacert "$sa/ca.crt" -H "Authorization: Bearer $(cat "$sa/token")" "$@"; }

# exists NAME: whether the Secret exists; any other answer stops the Job (it is retried).
exists() {
  code=$(kube -o /dev/null -w '%{http_code}' "$api/$1")
  case $code in
    200) return 0 ;;
    404) return 1 ;;
    *) echo "GET Secret $1: HTTP $code" >&2; exit 1 ;;
  esac
}

# field NAME KEY: one key of an existing Secret, decoded.
field() {
  key=$(printf '%s' "$2" | sed 's/\./\\./g')
  kube "$api/$1" | tr -d '\n' | sed -n "s/.*\"$key\": *\"\([^\"]*\)\".*/\1/p" | base64 -d
}

# create NAME KEY=FILE...: a Secret holding those files.
create() {
  name=$1
  shift
  data=""
  for pair in "$@"; do
    data="$data${data:+,}\"${pair%%=*}\":\"$(base64 -w0 < "${pair#*=}")\""
  done
  labels='"app.kubernetes.io/part-of":"mesh","app.kubernetes.io/managed-by":"consul-tls-bootstrap"'
  body="{\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"type\":\"Opaque\",\"metadata\":{\"name\":\"$name\",\"labels\":{$labels}},\"data\":{$data}}"
  code=$(kube -o answer.json -w '%{http_code}' -X POST -H 'Content-Type: application/json' --data-binary "$body" "$api")
  case $code in
    201) echo "created Secret $name" ;;
    409) echo "Secret $name was made meanwhile: kept" ;;
    *) echo "POST Secret $name: HTTP $code: $(head -c 500 answer.json)" >&2; exit 1 ;;
  esac
}

if exists consul-ca-key; then
  field consul-ca-key ca.pem > consul-agent-ca.pem
  field consul-ca-key ca-key.pem > consul-agent-ca-key.pem
  echo "using the CA of Secret consul-ca-key"
else
  consul tls ca create -days=1825
  create consul-ca-key ca.pem=consul-agent-ca.pem ca-key.pem=consul-agent-ca-key.pem
fi
exists consul-ca || create consul-ca ca.pem=consul-agent-ca.pem
if ! exists consul-server-tls; then
  consul tls cert create -server -dc=dc1 -days=365 \
    -additional-dnsname=consul \
    -additional-dnsname="consul.$ns.svc" \
    -additional-dnsname="consul.$ns.svc.cluster.local" \
    -additional-dnsname="*.consul-server.$ns.svc" \
    -additional-dnsname="*.consul-server.$ns.svc.cluster.local"
  create consul-server-tls server.pem=dc1-server-consul-0.pem server-key.pem=dc1-server-consul-0-key.pem
fi
if ! exists consul-gossip-key; then
  printf '{"encrypt": "%s"}\n' "$(consul keygen)" > gossip.json
  create consul-gossip-key gossip.json=gossip.json
fi

# The events' broker: its own CA, then its server certificate.
if exists broker-ca-key; then
  field broker-ca-key ca.pem > broker-agent-ca.pem
  field broker-ca-key ca-key.pem > broker-agent-ca-key.pem
  echo "using the CA of Secret broker-ca-key"
else
  consul tls ca create -domain=broker -days=1825
  create broker-ca-key ca.pem=broker-agent-ca.pem ca-key.pem=broker-agent-ca-key.pem
fi
exists broker-ca || create broker-ca ca.pem=broker-agent-ca.pem
if ! exists broker-tls; then
  consul tls cert create -server -domain=broker -dc=dc1 -days=365 \
    -ca=broker-agent-ca.pem -key=broker-agent-ca-key.pem \
    -additional-dnsname=mesh-broker \
    -additional-dnsname="mesh-broker.$ns.svc" \
    -additional-dnsname="mesh-broker.$ns.svc.cluster.local" \
    -additional-dnsname="*.mesh-broker.$ns.svc" \
    -additional-dnsname="*.mesh-broker.$ns.svc.cluster.local" \
    -additional-ipaddress=127.0.0.1
  create broker-tls server.pem=dc1-server-broker-0.pem server-key.pem=dc1-server-broker-0-key.pem \
    ca.pem=broker-agent-ca.pem
fi
