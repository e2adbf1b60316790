"""TLS to Consul everywhere: the properties of Hardening finding 8 ("Kubernetes sends every
leaf private key and ACL token in clear text"), asserted on the rendered manifests and on
deploy/docker-compose.yml. Called by scripts/k8s_properties.py, whose helpers it uses.

Consul is deployed as its own Helm chart runs it in production:
  - the API on HTTPS only (`ports.http = -1`), no container or Service port for plain HTTP;
  - TLS on RPC with verify_incoming, verify_outgoing and verify_server_hostname;
  - gossip encryption (`encrypt`), its key never on a command line or in a ConfigMap;
  - the certificates and the gossip key created by the manifests themselves (a Job running
    `consul tls ca create`, `consul tls cert create -server`, `consul keygen`, storing them
    in Secrets with an RBAC Role that allows exactly that);
  - every pod that talks to Consul uses `CONSUL_HTTP_ADDR=https://…` and mounts the CA
    (`CONSUL_CACERT`), and no other pod may reach the API port.
"""

from __future__ import annotations

import json
import os
import re
import urllib.parse

import yaml

import k8s_properties as k
from k8s_properties import need

TLS_JOB = "consul-tls-bootstrap"
# Consul's own ports besides the API: server RPC, Serf LAN/WAN, DNS.
CONSUL_NON_HTTP_PORTS = {8300, 8301, 8302, 8600}
# What the TLS Job must run to make what the servers and clients mount.
TLS_COMMANDS = ("consul tls ca create", "consul tls cert create -server", "consul keygen")


def consul_config(r: k.Rendered, consul: dict) -> tuple[dict, list[str]]:
    """The server's settings from every -config-file in a ConfigMap (merged in order), and
    the paths of the -config-file arguments mounted from Secrets (not readable here)."""
    ct = k.main_container(consul)
    args = list(ct.get("command", [])[1:]) + list(ct.get("args", []))
    files = [a.split("=", 1)[1] for a in args if a.startswith("-config-file=")]
    mounts = {m["mountPath"].rstrip("/"): m["name"] for m in ct.get("volumeMounts", []) or []}
    volumes = {v["name"]: v for v in k.pod_spec(consul).get("volumes", []) or []}
    merged: dict = {}
    from_secrets = []
    for path in files:
        if k.mounted_secret_file(consul, ct, path):
            from_secrets.append(path)
            continue
        folder, name = path.rsplit("/", 1)
        vol = volumes.get(mounts.get(folder, ""), {})
        need("configMap" in vol, f"-config-file {path} is neither in a ConfigMap nor a Secret")
        data = r.get("ConfigMap", vol["configMap"]["name"]).get("data", {}) or {}
        need(name in data, f"{name} is not in ConfigMap {vol['configMap']['name']}")
        deep_merge(merged, json.loads(data[name]))
    return merged, from_secrets


def deep_merge(into: dict, other: dict):
    for key, value in other.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            deep_merge(into[key], value)
        else:
            into[key] = value


def tls_setting(config: dict, interface: str, key: str):
    """A TLS setting as Consul resolves it: tls.<interface>, then tls.defaults, then the
    pre-1.12 top-level key (verify_incoming_rpc for internal RPC)."""
    tls = config.get("tls") or {}
    for section in (tls.get(interface) or {}, tls.get("defaults") or {}):
        if key in section:
            return section[key]
    legacy = {("internal_rpc", "verify_incoming"): "verify_incoming_rpc",
              ("https", "verify_incoming"): "verify_incoming_https"}.get((interface, key))
    if legacy and legacy in config:
        return config[legacy]
    return config.get(key)


def https_port(config: dict) -> int:
    ports = config.get("ports") or {}
    need(ports.get("http") == -1, f"ports.http is {ports.get('http')!r}, not -1 (the API must be HTTPS only)")
    need(isinstance(ports.get("https"), int) and ports["https"] > 0, f"ports.https is {ports.get('https')!r}")
    return ports["https"]


def tls_job_script(r: k.Rendered, job: dict) -> str:
    """The text the TLS Job runs: its command line and every script mounted from a ConfigMap."""
    ct = k.main_container(job)
    text = " ".join(ct.get("command", []) + ct.get("args", []))
    volumes = {v["name"]: v for v in k.pod_spec(job).get("volumes", []) or []}
    for m in ct.get("volumeMounts", []) or []:
        cm = volumes.get(m["name"], {}).get("configMap")
        if cm:
            text += "\n" + "\n".join((r.get("ConfigMap", cm["name"]).get("data") or {}).values())
    return text


def created_secrets(r: k.Rendered, job: dict) -> set[str]:
    """The Secrets the TLS Job may create: the names its Role lets it read back (create
    cannot be limited by name in RBAC; get can, and the Job reads each before creating it)."""
    sa = k.pod_spec(job).get("serviceAccountName")
    need(sa, "the Job runs without its own ServiceAccount")
    names = set()
    for rb in r.all("RoleBinding"):
        if not any(s.get("kind") == "ServiceAccount" and s.get("name") == sa for s in rb.get("subjects", [])):
            continue
        role = r.get("Role", rb["roleRef"]["name"])
        for rule in role.get("rules", []):
            if "get" in rule.get("verbs", []) and "secrets" in rule.get("resources", []):
                names.update(rule.get("resourceNames", []))
    return names


def check(rep: k.Report, r: k.Rendered, tag: str):
    def c(label, fn):
        rep.check(f"{tag} {label}", fn)

    consul = r.by_kind.get("StatefulSet", {}).get(k.CONSUL_STS)
    job = r.by_kind.get("Job", {}).get(TLS_JOB)
    c(f"Job/{TLS_JOB} exists (creates Consul's certificates and gossip key)",
      lambda: need(job is not None, "missing: nothing creates the certificates the servers need"))
    if consul is None:
        return
    ct = k.main_container(consul)
    sid = f"StatefulSet/{k.CONSUL_STS}"
    state = {}

    def https_only():
        config, _ = consul_config(r, consul)
        port = https_port(config)
        state["port"] = port
        http_ports = [p for p in ct.get("ports", []) or []
                      if p["containerPort"] not in CONSUL_NON_HTTP_PORTS | {port}]
        need(not http_ports, f"container ports other than HTTPS {port}: {http_ports}")
        for s in r.all("Service"):
            if not k.service_selects(s, k.pod_labels(consul)):
                continue
            for p in s["spec"]["ports"]:
                target = k.container_port(ct, p.get("targetPort", p["port"]))
                need(target in CONSUL_NON_HTTP_PORTS | {port},
                     f"Service {s['metadata']['name']} port {p['port']} reaches {target}, not HTTPS {port}")
                need(p.get("appProtocol") != "http", f"Service {s['metadata']['name']} says appProtocol http")
        return f"https {port}, ports.http -1"
    c(f"{sid}: the API on HTTPS only, no HTTP port in the container or any Service", https_only)

    def tls_files():
        config, _ = consul_config(r, consul)
        found = []
        for key in ("ca_file", "cert_file", "key_file"):
            path = tls_setting(config, "defaults", key)
            need(path, f"no tls {key}")
            src = k.mounted_secret_file(consul, ct, path)
            need(src, f"{key} {path} is not mounted from a Secret")
            found.append(f"{key} from {src[0]}")
        return ", ".join(found)
    c(f"{sid}: CA, certificate and key mounted from Secrets", tls_files)

    def verify():
        config, _ = consul_config(r, consul)
        for interface, key in (("internal_rpc", "verify_incoming"), ("internal_rpc", "verify_outgoing"),
                               ("internal_rpc", "verify_server_hostname")):
            need(tls_setting(config, interface, key) is True, f"{interface}.{key} is not true")
        return "RPC: verify_incoming, verify_outgoing, verify_server_hostname"
    c(f"{sid}: TLS on RPC with verify_incoming, verify_outgoing and verify_server_hostname", verify)

    def gossip():
        config, from_secrets = consul_config(r, consul)
        args = list(ct.get("args", [])) + list(ct.get("command", []))
        need(not any(a.startswith("-encrypt") for a in args), "the gossip key is on the command line")
        need("encrypt" not in config, "the gossip key is in a ConfigMap")
        gossip = [p for p in from_secrets if os.path.basename(p).startswith("gossip")]
        need(gossip, f"no -config-file with the gossip key from a Secret (Secret files: {from_secrets})")
        need(config.get("encrypt_verify_incoming", True) and config.get("encrypt_verify_outgoing", True),
             "encrypt_verify_* turned off")
        src = k.mounted_secret_file(consul, ct, gossip[0])
        if job is not None:
            need(src[0] in created_secrets(r, job), f"Secret {src[0]} is not made by Job/{TLS_JOB}")
        return f"{gossip[0]} from Secret {src[0]}"
    c(f"{sid}: gossip encryption, the key from a Secret file", gossip)

    def probes():
        port = state.get("port") or https_port(consul_config(r, consul)[0])
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            p = ct.get(kind) or {}
            if "httpGet" in p:
                g = p["httpGet"]
                need(g.get("scheme") == "HTTPS", f"{kind} uses {g.get('scheme', 'HTTP')}")
                need(k.container_port(ct, g["port"]) == port, f"{kind} port {g['port']} is not {port}")
            elif "exec" in p:
                text = " ".join(p["exec"]["command"])
                need("http://" not in text and f"https://127.0.0.1:{port}" in text, f"{kind} runs {text!r}")
                need("--cacert" in text and " -k" not in text and "--insecure" not in text,
                     f"{kind} does not verify the agent's certificate: {text!r}")
        return "HTTPS"
    c(f"{sid}: probes speak HTTPS to the agent", probes)

    if job is not None:
        def makes_everything():
            script = tls_job_script(r, job)
            for command in TLS_COMMANDS:
                need(command in script, f"the Job does not run `{command}`")
            mounted = set()
            for path in [tls_setting(consul_config(r, consul)[0], "defaults", key)
                         for key in ("ca_file", "cert_file", "key_file")] + consul_config(r, consul)[1]:
                src = k.mounted_secret_file(consul, ct, path)
                if src and not k.generated(src[0], "consul-acl-tokens"):
                    mounted.add(src[0])
            made = created_secrets(r, job)
            need(mounted <= made, f"the servers mount {sorted(mounted - made)}, which the Job does not make")
            return f"makes {', '.join(sorted(made))}"
        c(f"Job/{TLS_JOB}: runs consul tls ca/cert create and consul keygen, makes every Secret the servers mount",
          makes_everything)

        def least_rbac():
            spec = k.pod_spec(job)
            need(spec.get("automountServiceAccountToken") is False, "the ServiceAccount token is automounted")
            sa = spec.get("serviceAccountName")
            rules = []
            for rb in r.all("RoleBinding"):
                if any(s.get("name") == sa for s in rb.get("subjects", [])):
                    rules += r.get("Role", rb["roleRef"]["name"]).get("rules", [])
            need(rules, f"no Role bound to ServiceAccount {sa}")
            for rule in rules:
                need(rule.get("resources") == ["secrets"] and rule.get("apiGroups") == [""],
                     f"rule beyond core Secrets: {rule}")
                need(set(rule.get("verbs", [])) <= {"get", "create"}, f"verbs {rule.get('verbs')}")
                if "get" in rule.get("verbs", []):
                    need(rule.get("resourceNames"), "get on every Secret (no resourceNames)")
            others = [f"{w['kind']}/{w['metadata']['name']}" for w in r.workloads()
                      if w is not job and (k.pod_spec(w).get("serviceAccountName") == sa
                                           or any("serviceAccountToken" in src for v in k.pod_spec(w).get("volumes", []) or []
                                                  for src in (v.get("projected") or {}).get("sources", [])))]
            need(not others, f"other workloads hold a ServiceAccount token: {others}")
            return f"{sa}: create Secrets, get only its own"
        c(f"Job/{TLS_JOB}: the only workload with a ServiceAccount token, which may only make its Secrets",
          least_rbac)

    # Every client of Consul: HTTPS to the API Service, the CA mounted.
    clients = []
    hosts = set()
    for w in r.workloads():
        if w is consul:
            continue
        for cont in k.containers(w):
            if k.env_source(r, cont, "CONSUL_HTTP_ADDR") is not None:
                clients.append((w, cont))
    state["hosts"] = hosts
    c("some workloads talk to Consul", lambda: need(clients, "no CONSUL_HTTP_ADDR anywhere"))
    for w, cont in clients:
        wid = f"{w['kind']}/{w['metadata']['name']}"

        def https_client(w=w, cont=cont):
            addr = k.env_text(r, cont, "CONSUL_HTTP_ADDR")
            u = urllib.parse.urlsplit(addr if "://" in addr else "http://" + addr)
            need(u.scheme == "https", f"CONSUL_HTTP_ADDR is {addr}: tokens and leaf keys would cross in clear")
            hosts.add(u.hostname)
            svc = r.get("Service", u.hostname.split(".")[0])
            need(k.service_selects(svc, k.pod_labels(consul)), f"{u.hostname} is not the Consul servers")
            port = [p for p in svc["spec"]["ports"] if p["port"] == (u.port or 443)]
            need(port and k.container_port(ct, port[0].get("targetPort", port[0]["port"])) == state.get("port"),
                 f"{u.hostname}:{u.port} does not reach the HTTPS port")
            need(k.env_source(r, cont, "CONSUL_HTTP_SSL_VERIFY") is None, "CONSUL_HTTP_SSL_VERIFY is set")
            return addr
        c(f"{wid}: CONSUL_HTTP_ADDR is https:// to the Consul API Service", https_client)

        def ca_mounted(w=w, cont=cont):
            path = k.env_text(r, cont, "CONSUL_CACERT")
            src = k.mounted_secret_file(w, cont, path)
            need(src, f"CONSUL_CACERT {path} is not mounted from a Secret")
            if job is not None:
                need(src[0] in created_secrets(r, job), f"the CA Secret {src[0]} is not made by Job/{TLS_JOB}")
            return f"{path} from Secret {src[0]}"
        c(f"{wid}: mounts the Consul CA (CONSUL_CACERT)", ca_mounted)

    # Nobody reaches Consul's API without being one of those clients.
    def only_clients_reach_the_api():
        port = state.get("port")
        need(port, "no HTTPS port")
        consul_ep = k.workload_endpoint(consul)
        talking = {w["metadata"]["name"] for w, _ in clients}
        strays = [w["metadata"]["name"] for w in r.workloads() if w is not consul
                  and w["metadata"]["name"] not in talking
                  and k.flow_allowed(r, k.workload_endpoint(w), consul_ep, port)]
        need(not strays, f"may reach the Consul API without TLS settings: {strays}")
        for w, _ in clients:
            need(k.flow_allowed(r, k.workload_endpoint(w), consul_ep, port),
                 f"{w['metadata']['name']} may not reach {port}")
            need(not k.flow_allowed(r, k.workload_endpoint(w), consul_ep, 8500),
                 f"{w['metadata']['name']} may still reach the plain HTTP port 8500")
        return f"{len(talking)} clients on {port}"
    c("NetworkPolicy: the Consul API port is open to its TLS clients only, 8500 to nobody",
      only_clients_reach_the_api)

    # The hosts clients use must be in the server certificate; checked after the clients.
    if job is not None:
        def names_hosts():
            script = tls_job_script(r, job)
            missing = [h for h in sorted(hosts) if f"-additional-dnsname={h}" not in script]
            need(hosts and not missing, f"the server certificate does not name {missing or 'any client host'}")
            return ", ".join(sorted(hosts))
        c(f"Job/{TLS_JOB}: the server certificate names every host clients dial", names_hosts)


# ---------------------------------------------------------------------------------------
# docker compose


def check_compose(rep: k.Report, path: str):
    def c(label, fn):
        rep.check(f"[compose] {label}", fn)

    with open(path) as f:
        doc = yaml.safe_load(f)
    services = doc.get("services", {})
    folder = os.path.dirname(os.path.abspath(path))

    def command(svc: dict) -> list[str]:
        cmd = svc.get("command") or []
        return cmd if isinstance(cmd, list) else cmd.split()

    def mounts(svc: dict) -> dict[str, str]:
        out = {}
        for v in svc.get("volumes", []) or []:
            source, target = (v.split(":")[:2] if isinstance(v, str) else (v["source"], v["target"]))
            out[target] = source
        return out

    consul = services.get("consul")
    c("a consul service", lambda: need(consul, "missing"))
    if not consul:
        return
    args = command(consul)
    state = {}

    def config():
        merged = {}
        state["volume_files"] = []
        for a in args:
            if not a.startswith("-config-file="):
                continue
            file = a.split("=", 1)[1]
            dirname, name = file.rsplit("/", 1)
            source = mounts(consul).get(file) or mounts(consul).get(dirname)
            need(source, f"{file} is not mounted")
            if source.startswith("."):
                host = os.path.normpath(os.path.join(folder, source if source.endswith(name) else
                                                     os.path.join(source, name)))
                with open(host) as f:
                    deep_merge(merged, json.load(f))
            else:
                state.setdefault("volume_files", []).append(file)
        return merged

    def https_only():
        port = https_port(config())
        published = [str(p) for p in consul.get("ports", []) or []]
        need(all(p.endswith(f":{port}") for p in published), f"publishes {published}, not only {port}")
        need(not any("-http-port" in a for a in args), "an -http-port flag")
        state["port"] = port
        return f"https {port}, published {published}"
    c("consul: the API on HTTPS only", https_only)

    def verify():
        conf = config()
        for key in ("verify_incoming", "verify_outgoing", "verify_server_hostname"):
            need(tls_setting(conf, "internal_rpc", key) is True, f"internal_rpc.{key} is not true")
    c("consul: TLS on RPC with verify_incoming, verify_outgoing, verify_server_hostname", verify)

    def acl_and_gossip():
        text = " ".join(args).replace(" ", "")
        need('default_policy="deny"' in text and "enabled=true" in text, f"ACLs not on with deny: {args}")
        config()
        files = state.get("volume_files", [])
        need(any(os.path.basename(f).startswith("gossip") for f in files), f"no gossip key file in {files}")
        need(not any(a.startswith("-encrypt") for a in args), "the gossip key on the command line")
        return ", ".join(files)
    c("consul: ACLs default-deny and gossip encryption from the init volume", acl_and_gossip)

    def health():
        test = " ".join(consul.get("healthcheck", {}).get("test", []))
        need("https://" in test and "--cacert" in test and "http://" not in test, f"healthcheck {test!r}")
    c("consul: healthcheck over verified HTTPS", health)

    def init():
        made = [name for name, svc in services.items()
                if all(cmd in " ".join(command(svc) + [str(svc.get("entrypoint", ""))]) for cmd in TLS_COMMANDS)]
        need(made, "no service runs consul tls ca create, consul tls cert create -server and consul keygen")
        dep = (consul.get("depends_on") or {}).get(made[0], {})
        need(dep.get("condition") == "service_completed_successfully",
             f"consul does not wait for {made[0]} to complete")
        return made[0]
    c("an init service creates the certificates and the gossip key before Consul starts", init)

    clients = {name: svc for name, svc in services.items()
               if "CONSUL_HTTP_ADDR" in (svc.get("environment") or {})}
    c("services talk to Consul", lambda: need(clients, "none"))
    for name, svc in clients.items():
        def client(svc=svc):
            env = svc["environment"]
            addr = env["CONSUL_HTTP_ADDR"]
            need(addr.startswith("https://"), f"CONSUL_HTTP_ADDR is {addr}")
            need(urllib.parse.urlsplit(addr).port == state.get("port"), f"{addr} is not the HTTPS port")
            ca = env.get("CONSUL_CACERT")
            need(ca, "no CONSUL_CACERT")
            need(any(ca.startswith(target.rstrip("/") + "/") for target in mounts(svc)), f"{ca} is not mounted")
            need(env.get("CONSUL_HTTP_TOKEN_FILE") and not env.get("CONSUL_HTTP_TOKEN"),
                 "no token file (or a token in the environment)")
            return addr
        c(f"{name}: https:// to Consul, the CA mounted, a token file", client)
