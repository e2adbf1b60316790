"""TLS to the events' broker wherever the services reach it across hosts: asserted on the
rendered manifests and on deploy/docker-compose.yml. Called by scripts/k8s_properties.py,
whose helpers it uses (and k8s_consul_tls's, for what the TLS Job creates).

  - every broker URL any workload or compose service is given is `rediss://`/`amqps://`;
  - the broker listens on no plaintext port (`port 0`, `tls-port` = the port the Service,
    the NetworkPolicy and the URLs use), its certificate, key and CA read from a Secret (k8s)
    or a volume (compose) that the manifests themselves make;
  - its probes/healthcheck speak TLS (`redis-cli --tls --cacert …`);
  - each client gets the broker's CA as a mounted file, where MESH_BROKER_CACERT says.
"""

from __future__ import annotations

import urllib.parse

import k8s_consul_tls
import k8s_properties as k
from k8s_properties import need

TLS_SCHEMES = ("rediss", "amqps")
PLAIN_SCHEMES = ("redis", "amqp")
# What the TLS Job (k8s) or the init service (compose) runs to make the broker's own CA and
# a certificate for the host in the URLs.
CERT_COMMANDS = ("consul tls ca create -domain=broker", "consul tls cert create -server -domain=broker")


def conf_lines(text: str) -> dict[str, str]:
    """redis.conf directives (last one wins, as in Redis)."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            out[key] = value.strip()
    return out


def plaintext_urls(values) -> list[str]:
    """The values that carry a broker URL without TLS."""
    return [v for v in values if isinstance(v, str) and
            any(f"{scheme}://" in v for scheme in PLAIN_SCHEMES)]


def check(rep: k.Report, r: k.Rendered, tag: str):
    def c(label, fn):
        rep.check(f"{tag} {label}", fn)

    sts = r.by_kind.get("StatefulSet", {}).get(k.BROKER_STS)
    c(f"StatefulSet/{k.BROKER_STS} exists", lambda: need(sts is not None, "missing"))
    if sts is None:
        return
    ct = k.main_container(sts)
    sid = f"StatefulSet/{k.BROKER_STS}"

    def broker_conf() -> dict[str, str]:
        return conf_lines(k.find_generated(r, "ConfigMap", "mesh-broker-config")["data"]["redis.conf"])

    def tls_only():
        conf = broker_conf()
        need(conf.get("port") == "0", f"plaintext port {conf.get('port')!r}, not `port 0`")
        need(conf.get("tls-port") == str(k.BROKER_PORT), f"tls-port {conf.get('tls-port')!r}")
        ports = [p["containerPort"] for p in ct.get("ports", []) or []]
        need(ports == [k.BROKER_PORT], f"container ports {ports}")
        svc_ports = [p["port"] for p in r.get("Service", k.BROKER_STS)["spec"]["ports"]]
        need(svc_ports == [k.BROKER_PORT], f"Service ports {svc_ports}")
        return f"port 0, tls-port {k.BROKER_PORT}"
    c(f"{sid}: TLS only (port 0, tls-port {k.BROKER_PORT}), no other port", tls_only)

    def certificate_from_the_job():
        conf = broker_conf()
        job = r.get("Job", k8s_consul_tls.TLS_JOB)
        made = k8s_consul_tls.created_secrets(r, job)
        script = k8s_consul_tls.tls_job_script(r, job)
        for command in CERT_COMMANDS:
            need(command in script, f"the Job does not run `{command}`")
        need(f"-additional-dnsname={k.BROKER_STS}" in script,
             f"the certificate does not name {k.BROKER_STS}, the host of the URLs")
        files = []
        for key in ("tls-cert-file", "tls-key-file", "tls-ca-cert-file"):
            path = conf.get(key)
            need(path, f"redis.conf has no {key}")
            secret = k.mounted_secret_file(sts, ct, path)
            need(secret is not None, f"{key} {path} is not a mounted Secret file")
            need(secret[0] in made, f"{key} comes from Secret {secret[0]}, which the Job does not make")
            files.append(f"{secret[0]}/{secret[1]}")
        return ", ".join(files)
    c(f"{sid}: certificate, key and CA are files of the Secret Job/{k8s_consul_tls.TLS_JOB} makes",
      certificate_from_the_job)

    def probes():
        for kind in ("readinessProbe", "livenessProbe"):
            probe = ct.get(kind) or {}
            need("tcpSocket" not in probe and "exec" in probe, f"{kind} is not an exec probe")
            text = " ".join(probe["exec"]["command"])
            need("redis-cli --tls" in text, f"{kind} does not speak TLS: {text!r}")
            ca = text.split("--cacert", 1)[1].split()[0] if "--cacert" in text else None
            need(ca and k.mounted_secret_file(sts, ct, ca), f"{kind}: --cacert {ca} is not a mounted file")
            need("-a " not in text and "--pass" not in text, f"{kind} puts the password on a command line")
    c(f"{sid}: readiness and liveness probes PING over verified TLS", probes)

    def every_url_tls():
        values = []
        for w in r.workloads():
            for container in k.containers(w):
                values += [e.get("value") for e in container.get("env", []) or []]
                values += container.get("command", []) or []
                values += container.get("args", []) or []
        for cm in r.all("ConfigMap"):
            values += list((cm.get("data") or {}).values())
        plain = plaintext_urls(values)
        need(not plain, f"plaintext broker URLs: {plain}")
    c("no workload or ConfigMap is given a plaintext broker URL", every_url_tls)

    clients = [w for w in r.workloads() if any(
        e["name"] == "MESH_BROKER_URL" for container in k.containers(w) for e in container.get("env", []) or [])]
    c("some workloads talk to the broker", lambda: need(clients, "none"))
    for w in clients:
        def client(w=w):
            container = k.main_container(w)
            url = urllib.parse.urlsplit(k.env_text(r, container, "MESH_BROKER_URL"))
            need(url.scheme in TLS_SCHEMES, f"MESH_BROKER_URL is {url.scheme}://")
            need(url.port == k.BROKER_PORT, f"MESH_BROKER_URL's port {url.port}")
            ca = k.env_text(r, container, "MESH_BROKER_CACERT")
            secret = k.mounted_secret_file(w, container, ca)
            need(secret is not None, f"MESH_BROKER_CACERT {ca} is not a mounted Secret file")
            job = r.get("Job", k8s_consul_tls.TLS_JOB)
            need(secret[0] in k8s_consul_tls.created_secrets(r, job),
                 f"the CA comes from Secret {secret[0]}, which the TLS Job does not make")
            need(secret[0] != "broker-tls", "a client mounts the Secret with the broker's key")
            return f"{url.scheme}://{url.hostname}:{url.port}, CA {secret[0]}/{secret[1]} at {ca}"
        c(f"{w['kind']}/{w['metadata']['name']}: rediss:// to the broker, its CA mounted", client)


# ---------------------------------------------------------------------------------------
# docker compose


def check_compose(rep: k.Report, path: str):
    def c(label, fn):
        rep.check(f"[compose] {label}", fn)

    import yaml

    with open(path) as f:
        doc = yaml.safe_load(f)
    services = doc.get("services", {})

    def command(svc: dict) -> str:
        parts = []
        for key in ("entrypoint", "command"):
            value = svc.get(key) or []
            parts += value if isinstance(value, list) else [value]
        return " ".join(str(p) for p in parts)

    def mounts(svc: dict) -> dict[str, str]:
        out = {}
        for v in svc.get("volumes", []) or []:
            source, target = (v.split(":")[:2] if isinstance(v, str) else (v["source"], v["target"]))
            out[target] = source
        return out

    def mounted(svc: dict, file: str) -> str | None:
        """The volume FILE lies on in SVC, if any."""
        for target, source in mounts(svc).items():
            if file.startswith(target.rstrip("/") + "/"):
                return source
        return None

    broker = services.get("broker")
    c("a broker service", lambda: need(broker, "missing"))
    if not broker:
        return
    text = command(broker)
    state = {}

    def tls_only():
        need("--port 0" in text, "the broker does not switch its plaintext port off (--port 0)")
        need(f"--tls-port {k.BROKER_PORT}" in text, f"no --tls-port {k.BROKER_PORT}")
        need(not broker.get("ports"), f"publishes {broker.get('ports')}")
        return f"--port 0 --tls-port {k.BROKER_PORT}"
    c("broker: TLS only", tls_only)

    def certificates_from_the_init_service():
        volumes = set()
        for flag in ("--tls-cert-file", "--tls-key-file", "--tls-ca-cert-file"):
            need(flag in text, f"no {flag}")
            file = text.split(flag, 1)[1].split()[0]
            volume = mounted(broker, file)
            need(volume, f"{flag} {file} is not on a volume")
            volumes.add(volume)
        makers = [name for name, svc in services.items()
                  if all(cmd in command(svc) for cmd in CERT_COMMANDS)
                  and any(mounts(svc).get(t) in volumes for t in mounts(svc))]
        need(makers, f"no init service makes the broker's certificates into {sorted(volumes)}")
        dep = (broker.get("depends_on") or {}).get(makers[0], {})
        need(dep.get("condition") == "service_completed_successfully",
             f"the broker does not wait for {makers[0]} to complete")
        state["volumes"] = volumes
        return f"{makers[0]} → {', '.join(sorted(volumes))}"
    c("broker: certificate, key and CA from a volume an init service makes first",
      certificates_from_the_init_service)

    def healthcheck():
        test = " ".join(broker.get("healthcheck", {}).get("test", []))
        need("redis-cli --tls" in test and "--cacert" in test, f"healthcheck {test!r}")
    c("broker: healthcheck PINGs over verified TLS", healthcheck)

    def every_url_tls():
        values = []
        for svc in services.values():
            env = svc.get("environment") or {}
            values += list(env.values()) if isinstance(env, dict) else list(env)
            values.append(command(svc))
        plain = plaintext_urls(values)
        need(not plain, f"plaintext broker URLs: {plain}")
    c("no service is given a plaintext broker URL", every_url_tls)

    clients = {name: svc for name, svc in services.items()
               if isinstance(svc.get("environment"), dict) and "MESH_BROKER_URL" in svc["environment"]}
    c("some services talk to the broker", lambda: need(clients, "none"))
    for name, svc in clients.items():
        def client(svc=svc):
            env = svc["environment"]
            url = urllib.parse.urlsplit(env["MESH_BROKER_URL"])
            need(url.scheme in TLS_SCHEMES, f"MESH_BROKER_URL is {url.scheme}://")
            need(url.hostname == "broker" and url.port == k.BROKER_PORT, f"MESH_BROKER_URL {url.geturl()}")
            ca = env.get("MESH_BROKER_CACERT")
            need(ca, "no MESH_BROKER_CACERT")
            need(mounted(svc, ca), f"MESH_BROKER_CACERT {ca} is not on a mounted volume")
            return f"{url.geturl()}, CA {ca}"
        c(f"{name}: rediss:// to the broker, its CA mounted", client)
