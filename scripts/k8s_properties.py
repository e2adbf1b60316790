#!/usr/bin/env python3
"""Asserts the mesh's deployment properties on rendered Kubernetes manifests.

    python3 scripts/k8s_properties.py RENDERED.yaml... [--compose deploy/docker-compose.yml]

Each file is the output of `kubectl kustomize k8s/overlays/<overlay>`; a file named
dev.yaml or prod.yaml (after its overlay) is also held to that overlay's counts (Consul
servers, replicas). Prints one line per checked property ("ok" or "FAIL", with the object
and the reason) and ends with exactly `k8s: N passed, M failed`; exits 1 on any failure.

NetworkPolicies are checked by evaluating them (ingress of the destination AND egress of
the source, as Kubernetes does) for the flows the mesh needs and for flows it must not have.
TLS to Consul (HTTPS-only API, verified RPC, gossip encryption, the CA in every client, the
certificates made by the manifests) is checked by scripts/k8s_consul_tls.py, also on the
compose file. Needs PyYAML (scripts/install-tools puts it in .tools/venv).
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
import shlex
import sys
import urllib.parse
from dataclasses import dataclass, field

import yaml

NAMESPACE = "mesh"
PART_OF = ("app.kubernetes.io/part-of", "mesh")
NAME_LABEL = "app.kubernetes.io/name"
METRICS_PORT = 9100
# Plaintext grpc.health.v1 only (kubelet probes, Consul's check); the grpc port is mTLS-only.
HEALTH_PORT = 8081
DEFAULT_DRAIN_MS = 2000


def duration_ms(text):
    """A `--*-ms` value as the services read it (mesh::config::duration):
    bare milliseconds, or a number with ms, s, m/min or h."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h)?\s*", str(text))
    if not match:
        raise ValueError(f"{text!r} is not a duration like 2000, 500ms or 2s")
    factor = {None: 1, "ms": 1, "s": 1000, "m": 60_000, "min": 60_000, "h": 3_600_000}
    return float(match.group(1)) * factor[match.group(2)]
SERVICE_UID = 10001
# Consul name -> (well-known port, full gRPC service name, None for an edge): each service
# crate's IDENTITY (a contract: docs/architecture.md, "Services"); cli/tests/service_lists.rs
# checks it against mesh_cli::services::ALL.
SERVICES = {
    "users": (50051, "mesh.users.v1.Users"),
    "inventory": (50052, "mesh.inventory.v1.Inventory"),
    "payments": (50053, "mesh.payments.v1.Payments"),
    "orders": (50054, "mesh.orders.v1.Orders"),
    "shipping": (50055, "mesh.shipping.v1.Shipping"),
    "gateway": (8080, None),
}
# The gRPC services with a database: what the per-service checks below assert. The edge
# (the gateway) has its own checks (check_gateway and its flows).
GRPC_SERVICES = {name: entry for name, entry in SERVICES.items() if entry[1] is not None}
BACKENDS = ("users", "inventory", "payments")
# The API gateway (an edge: HTTPS, no database): the only workload reached from outside the
# namespace. It calls these, and never payments.
GATEWAY = "gateway"
GATEWAY_PORT = 8443
GATEWAY_CALLS = ("users", "inventory", "orders", "shipping")
CONSUL_STS = "consul-server"
ACL_JOB = "consul-acl-bootstrap"
ACL_POLICIES_CM = "consul-acl-policies"
# The policies as the repository ships them (the CLI compiles the same files in).
POLICY_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "deploy", "consul", "acl")
# Traffic management: the config entries as the repository ships them, written by a Job.
TRAFFIC_JOB = "consul-config-entries"
TRAFFIC_CM = "consul-traffic-config"
TRAFFIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "deploy", "consul", "config")
# Token holders besides the services (each has its Secret consul-token-<name>).
EXTRA_TOKENS = ["mesh-read", "traffic"]
POSTGRES_STS = "postgres"
# The events' broker (docs/EVENTS.md) and who talks to it.
BROKER_STS = "mesh-broker"
BROKER_PORT = 6379
BROKER_CLIENTS = ("orders", "shipping")
# Consul's HTTPS API (ports.https in k8s/base/consul/tls.json; there is no HTTP port).
CONSUL_API_PORT = 8501
# Consul server-to-server ports.
CONSUL_PEER_PORTS = [(8300, "TCP"), (8301, "TCP"), (8301, "UDP"), (8302, "TCP"), (8302, "UDP"),
                     (CONSUL_API_PORT, "TCP"), (8600, "TCP"), (8600, "UDP")]
# Expectations per overlay (file stem): Consul servers, service replicas (min, max or None).
OVERLAYS = {
    "dev": {"consul_servers": 1, "replicas": (1, 1)},
    "prod": {"consul_servers": 3, "replicas": (2, None)},
}


class Failed(Exception):
    """A property does not hold; the message says why."""


def need(cond, why: str):
    if not cond:
        raise Failed(why)


class Report:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, label: str, fn):
        try:
            detail = fn()
        except Failed as e:
            self.failed += 1
            print(f"FAIL {label}: {e}")
            return
        except Exception as e:  # a missing field, a wrong type: the property fails
            self.failed += 1
            print(f"FAIL {label}: {type(e).__name__}: {e}")
            return
        self.passed += 1
        print(f"ok   {label}" + (f" ({detail})" if detail else ""))


# ---------------------------------------------------------------------------------------
# Rendered objects


class Rendered:
    def __init__(self, path: str):
        self.path = path
        with open(path) as f:
            self.docs = [d for d in yaml.safe_load_all(f) if d]
        self.by_kind: dict[str, dict[str, dict]] = {}
        for d in self.docs:
            self.by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d

    def get(self, kind: str, name: str) -> dict:
        obj = self.by_kind.get(kind, {}).get(name)
        need(obj is not None, f"no {kind} named {name!r} in {self.path}")
        return obj

    def has(self, kind: str, name: str) -> bool:
        return name in self.by_kind.get(kind, {})

    def all(self, kind: str) -> list[dict]:
        return list(self.by_kind.get(kind, {}).values())

    def workloads(self) -> list[dict]:
        return (self.all("Deployment") + self.all("StatefulSet") + self.all("DaemonSet")
                + self.all("Job"))


def pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def pod_labels(workload: dict) -> dict:
    return workload["spec"]["template"]["metadata"].get("labels", {}) or {}


def containers(workload: dict, init: bool = True) -> list[dict]:
    spec = pod_spec(workload)
    return list(spec.get("containers", [])) + (list(spec.get("initContainers", []) or []) if init else [])


def main_container(workload: dict) -> dict:
    cs = pod_spec(workload)["containers"]
    need(len(cs) >= 1, "no container")
    return cs[0]


def selects(selector, labels: dict) -> bool:
    """Kubernetes LabelSelector semantics ({} selects everything)."""
    if selector is None:
        return False
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def service_selects(svc: dict, labels: dict) -> bool:
    sel = svc["spec"].get("selector") or {}
    return bool(sel) and all(labels.get(k) == v for k, v in sel.items())


def container_port(container: dict, name_or_number) -> int | None:
    for p in container.get("ports", []) or []:
        if p.get("name") == name_or_number or p.get("containerPort") == name_or_number:
            return p["containerPort"]
    return None


def port_of(addr: str) -> int:
    """Port of HOST:PORT or URL."""
    if "://" in addr:
        return urllib.parse.urlsplit(addr).port
    return int(addr.rsplit(":", 1)[1])


def env_source(r: Rendered, container: dict, name: str):
    """What env var NAME resolves to: ('value', str) | ('fieldRef', path) |
    ('secret', (secret, key)) | ('configMap', str) | None. Explicit env wins over envFrom."""
    for e in container.get("env", []) or []:
        if e["name"] != name:
            continue
        if "value" in e:
            return ("value", e["value"])
        vf = e.get("valueFrom", {})
        if "fieldRef" in vf:
            return ("fieldRef", vf["fieldRef"]["fieldPath"])
        if "secretKeyRef" in vf:
            return ("secret", (vf["secretKeyRef"]["name"], vf["secretKeyRef"]["key"]))
        if "configMapKeyRef" in vf:
            cm = r.get("ConfigMap", vf["configMapKeyRef"]["name"])
            return ("configMap", cm.get("data", {}).get(vf["configMapKeyRef"]["key"]))
        return ("other", vf)
    for ef in container.get("envFrom", []) or []:
        prefix = ef.get("prefix", "")
        if "configMapRef" in ef and r.has("ConfigMap", ef["configMapRef"]["name"]):
            data = r.get("ConfigMap", ef["configMapRef"]["name"]).get("data", {}) or {}
            for k, v in data.items():
                if prefix + k == name:
                    return ("configMap", v)
    return None


def env_text(r: Rendered, container: dict, name: str) -> str:
    src = env_source(r, container, name)
    need(src is not None, f"{name} is not set")
    need(src[0] in ("value", "configMap"), f"{name} is not a plain value but {src}")
    return src[1]


def secret_value(r: Rendered, name: str, key: str) -> str | None:
    if not r.has("Secret", name):
        return None
    s = r.get("Secret", name)
    if key in (s.get("stringData") or {}):
        return s["stringData"][key]
    if key in (s.get("data") or {}):
        return base64.b64decode(s["data"][key]).decode()
    return None


def generated(name: str | None, base: str) -> bool:
    """NAME is BASE, or BASE with the hash suffix kustomize's generators add."""
    return name is not None and (name == base or re.fullmatch(re.escape(base) + r"-[a-z0-9]{10}", name) is not None)


def find_generated(r: Rendered, kind: str, base: str) -> dict:
    found = [o for n, o in r.by_kind.get(kind, {}).items() if generated(n, base)]
    need(len(found) == 1, f"{len(found)} {kind} named {base!r} (with or without a hash suffix)")
    return found[0]


def mounted_secret_file(w: dict, container: dict, path: str):
    """(secret name, key) behind the file PATH in CONTAINER, through a secret or projected volume."""
    volumes = {v["name"]: v for v in pod_spec(w).get("volumes", []) or []}
    for m in container.get("volumeMounts", []) or []:
        mount = m["mountPath"].rstrip("/")
        if not path.startswith(mount + "/") or m.get("subPath"):
            continue
        rel = path[len(mount) + 1:]
        v = volumes.get(m["name"], {})
        sources = [{"secret": v["secret"]}] if "secret" in v else \
            (v.get("projected") or {}).get("sources", [])
        for src in sources:
            sec = src.get("secret")
            if not sec:
                continue
            name = sec.get("secretName") or sec.get("name")
            for item in sec.get("items", []) or []:
                if item["path"] == rel:
                    return (name, item["key"])
    return None


def prestop_seconds(container: dict) -> float:
    pre = (container.get("lifecycle") or {}).get("preStop")
    need(pre, "no preStop hook")
    if "sleep" in pre:
        return float(pre["sleep"]["seconds"])
    if "exec" in pre:
        cmd = pre["exec"]["command"]
        if os.path.basename(cmd[0]) == "sleep" and len(cmd) == 2:
            return float(cmd[1])
        return 0.0
    return 0.0


# ---------------------------------------------------------------------------------------
# NetworkPolicy evaluation


@dataclass
class Endpoint:
    name: str
    namespace: str | None = None       # None: outside the cluster
    labels: dict = field(default_factory=dict)
    ports: list = field(default_factory=list)  # container ports (for named ports)
    ip: str | None = None               # for outside endpoints


def namespace_labels(r: Rendered, ns: str) -> dict:
    labels = {"kubernetes.io/metadata.name": ns}
    if r.has("Namespace", ns):
        labels.update(r.get("Namespace", ns)["metadata"].get("labels", {}) or {})
    return labels


def peer_matches(r: Rendered, peer: dict, policy_ns: str, ep: Endpoint) -> bool:
    if "ipBlock" in peer:
        if ep.ip is None:
            return False  # pod IPs are not modelled; the mesh's policies use selectors
        ip = ipaddress.ip_address(ep.ip)
        block = peer["ipBlock"]
        return ip in ipaddress.ip_network(block["cidr"]) and not any(
            ip in ipaddress.ip_network(x) for x in block.get("except", []) or [])
    if ep.namespace is None:
        return False
    ns_sel = peer.get("namespaceSelector")
    if ns_sel is None:
        if ep.namespace != policy_ns:
            return False
    elif not selects(ns_sel, namespace_labels(r, ep.namespace)):
        return False
    pod_sel = peer.get("podSelector")
    return pod_sel is None or selects(pod_sel, ep.labels)


def port_matches(ports, dst: Endpoint, port: int, proto: str) -> bool:
    if not ports:
        return True
    for p in ports:
        if p.get("protocol", "TCP") != proto:
            continue
        want = p.get("port")
        if want is None:
            return True
        if isinstance(want, str):
            named = [cp["containerPort"] for cp in dst.ports
                     if cp.get("name") == want and cp.get("protocol", "TCP") == proto]
            if port in named:
                return True
        elif "endPort" in p:
            if want <= port <= p["endPort"]:
                return True
        elif want == port:
            return True
    return False


def policy_types(np: dict) -> list[str]:
    spec = np["spec"]
    if "policyTypes" in spec:
        return spec["policyTypes"]
    return ["Ingress"] + (["Egress"] if "egress" in spec else [])


def direction_allowed(r: Rendered, subject: Endpoint, other: Endpoint, dst: Endpoint,
                      port: int, proto: str, direction: str) -> bool:
    """Is SUBJECT's DIRECTION ('Ingress'/'Egress') allowed for this flow?"""
    if subject.namespace is None:
        return True
    pols = [np for np in r.all("NetworkPolicy")
            if np["metadata"].get("namespace") == subject.namespace
            and direction in policy_types(np)
            and selects(np["spec"].get("podSelector", {}), subject.labels)]
    if not pols:
        return True  # not isolated in this direction
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    for np in pols:
        for rule in np["spec"].get(key, []) or []:
            peers = rule.get(peers_key)
            if peers and not any(peer_matches(r, p, subject.namespace, other) for p in peers):
                continue
            if port_matches(rule.get("ports"), dst, port, proto):
                return True
    return False


def flow_allowed(r: Rendered, src: Endpoint, dst: Endpoint, port: int, proto: str = "TCP") -> bool:
    return (direction_allowed(r, src, dst, dst, port, proto, "Egress")
            and direction_allowed(r, dst, src, dst, port, proto, "Ingress"))


def workload_endpoint(w: dict) -> Endpoint:
    ports = [p for c in containers(w) for p in (c.get("ports") or [])]
    return Endpoint(w["metadata"]["name"], w["metadata"].get("namespace"), pod_labels(w), ports)


# ---------------------------------------------------------------------------------------
# The properties


def check_overlay(rep: Report, r: Rendered, overlay: str | None):
    tag = f"[{overlay or os.path.basename(r.path)}]"
    expect = OVERLAYS.get(overlay or "", {})

    def c(label, fn):
        rep.check(f"{tag} {label}", fn)

    # -- namespace and labels ----------------------------------------------------------
    c("Namespace mesh exists", lambda: need(r.has("Namespace", NAMESPACE), "missing"))

    def all_namespaced():
        wrong = [f"{d['kind']}/{d['metadata']['name']}" for d in r.docs
                 if d["kind"] != "Namespace" and d["metadata"].get("namespace") != NAMESPACE]
        need(not wrong, f"not in namespace {NAMESPACE}: {', '.join(wrong)}")
        return f"{len(r.docs) - 1} objects"
    c("every namespaced object is in namespace mesh", all_namespaced)

    def all_labelled():
        k, v = PART_OF
        wrong = [f"{d['kind']}/{d['metadata']['name']}" for d in r.docs
                 if (d["metadata"].get("labels") or {}).get(k) != v]
        wrong += [f"{w['kind']}/{w['metadata']['name']} (pod template)" for w in r.workloads()
                  if pod_labels(w).get(k) != v or NAME_LABEL not in pod_labels(w)]
        need(not wrong, f"missing {k}={v} or {NAME_LABEL}: {', '.join(wrong)}")
    c(f"every object and pod template is labelled {PART_OF[0]}={PART_OF[1]}", all_labelled)

    # -- every workload: restricted pod security, resources ------------------------------
    for w in r.workloads():
        wid = f"{w['kind']}/{w['metadata']['name']}"
        spec = pod_spec(w)
        psc = spec.get("securityContext") or {}

        def non_root(psc=psc, spec=spec):
            need(psc.get("runAsNonRoot") is True, "pod securityContext.runAsNonRoot is not true")
            need(psc.get("runAsUser", 1) != 0, "runAsUser is 0")
            need("fsGroup" in psc, "no fsGroup (volumes would not be writable)")
            return f"uid {psc.get('runAsUser')}, fsGroup {psc.get('fsGroup')}"
        c(f"{wid}: runs as non-root with an fsGroup", non_root)

        def seccomp(psc=psc, w=w):
            bad = [ct["name"] for ct in containers(w)
                   if ((ct.get("securityContext") or {}).get("seccompProfile")
                       or psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault"]
            need(not bad, f"seccompProfile is not RuntimeDefault for {bad}")
        c(f"{wid}: seccompProfile RuntimeDefault", seccomp)

        for ct in containers(w):
            cid = f"{wid} container {ct['name']}"
            sc = ct.get("securityContext") or {}
            c(f"{cid}: readOnlyRootFilesystem",
              lambda sc=sc: need(sc.get("readOnlyRootFilesystem") is True, "not true"))
            c(f"{cid}: allowPrivilegeEscalation false",
              lambda sc=sc: need(sc.get("allowPrivilegeEscalation") is False, "not false"))

            def caps(sc=sc):
                cp = sc.get("capabilities") or {}
                need("ALL" in (cp.get("drop") or []), "capabilities.drop lacks ALL")
                need(not cp.get("add"), f"adds capabilities {cp.get('add')}")
                need(not sc.get("privileged"), "privileged")
            c(f"{cid}: capabilities drop ALL, none added, not privileged", caps)

            def resources(ct=ct):
                res = ct.get("resources") or {}
                for kind in ("requests", "limits"):
                    for what in ("cpu", "memory"):
                        need(what in (res.get(kind) or {}), f"no {kind}.{what}")
                return f"requests {res['requests']['cpu']}/{res['requests']['memory']}, " \
                       f"limits {res['limits']['cpu']}/{res['limits']['memory']}"
            c(f"{cid}: resources requests and limits (cpu, memory)", resources)

        def restricted_volumes(spec=spec):
            allowed = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                       "persistentVolumeClaim", "projected", "secret"}
            bad = [v["name"] for v in spec.get("volumes", []) or []
                   if not (set(v) - {"name"}) <= allowed]
            need(not bad, f"volume types outside the restricted profile: {bad}")
            need(not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"),
                 "uses host namespaces")
        c(f"{wid}: only restricted-profile volumes, no host namespaces", restricted_volumes)

        c(f"{wid}: no service account token mounted",
          lambda spec=spec: need(spec.get("automountServiceAccountToken") is False, "automountServiceAccountToken is not false"))

    # -- the four services ---------------------------------------------------------------
    images = {}
    db_secrets = {}
    databases = {}
    deployments = {name: r.by_kind.get("Deployment", {}).get(name) for name in GRPC_SERVICES}
    for svc, (grpc_port, full) in GRPC_SERVICES.items():
        did = f"Deployment/{svc}"
        d = deployments[svc]
        c(f"{did} exists", lambda d=d: need(d is not None, "missing"))
        if d is None:
            continue
        ct = main_container(d)
        spec = pod_spec(d)
        labels = pod_labels(d)

        def image(ct=ct, svc=svc):
            images[svc] = ct["image"]
            need(ct.get("command") == [f"/usr/local/bin/{svc}"],
                 f"command is {ct.get('command')}, want ['/usr/local/bin/{svc}']")
            return f"{ct['image']} {ct['command'][0]}"
        c(f"{did}: runs /usr/local/bin/{svc} from the mesh image", image)

        def ports(ct=ct, grpc_port=grpc_port):
            need(container_port(ct, "grpc") == grpc_port, f"container port 'grpc' is not {grpc_port}")
            need(container_port(ct, "metrics") == METRICS_PORT, f"container port 'metrics' is not {METRICS_PORT}")
            need(container_port(ct, "health") == HEALTH_PORT, f"container port 'health' is not {HEALTH_PORT}")
            need(port_of(env_text(r, ct, "MESH_HEALTH_LISTEN")) == HEALTH_PORT,
                 "MESH_HEALTH_LISTEN port differs from the health port")
            need(port_of(env_text(r, ct, "MESH_LISTEN")) == grpc_port, "MESH_LISTEN port differs from the grpc port")
            need(port_of(env_text(r, ct, "MESH_METRICS_LISTEN")) == METRICS_PORT,
                 "MESH_METRICS_LISTEN port differs from the metrics port")
            return f"grpc {grpc_port}, metrics {METRICS_PORT}, health {HEALTH_PORT}"
        c(f"{did}: ports match MESH_LISTEN / MESH_METRICS_LISTEN / MESH_HEALTH_LISTEN", ports)

        def mtls(ct=ct):
            need(env_text(r, ct, "MESH_MTLS") == "required", "MESH_MTLS is not 'required'")
            return "MESH_MTLS=required"
        c(f"{did}: the grpc port is Connect mTLS only", mtls)

        def readiness(ct=ct, grpc_port=grpc_port, full=full):
            g = (ct.get("readinessProbe") or {}).get("grpc")
            need(g, "readinessProbe is not a gRPC probe")
            need(g.get("port") == HEALTH_PORT, f"port {g.get('port')} != the health port {HEALTH_PORT}")
            need(g.get("service") == full, f"service {g.get('service')!r} != {full!r}")
            return f"grpc {HEALTH_PORT} service {full}"
        c(f"{did}: readinessProbe uses grpc for the full service name", readiness)

        def liveness(ct=ct, grpc_port=grpc_port):
            g = (ct.get("livenessProbe") or {}).get("grpc")
            need(g, "livenessProbe is not a gRPC probe")
            need(g.get("port") == HEALTH_PORT, f"port {g.get('port')} != the health port {HEALTH_PORT}")
            need(g.get("service", "") == "", f"service {g.get('service')!r} is not \"\"")
            return f"grpc {HEALTH_PORT} service \"\""
        c(f"{did}: livenessProbe uses grpc for service \"\"", liveness)

        def startup(ct=ct, grpc_port=grpc_port):
            p = ct.get("startupProbe") or {}
            g = p.get("grpc")
            need(g, "startupProbe is not a gRPC probe")
            need(g.get("port") == HEALTH_PORT, f"port {g.get('port')} != the health port {HEALTH_PORT}")
            budget = p.get("periodSeconds", 10) * p.get("failureThreshold", 3)
            need(budget >= 30, f"only {budget}s to start (open storage, run migrations)")
            return f"grpc {HEALTH_PORT}, {budget}s budget"
        c(f"{did}: startupProbe uses grpc", startup)

        def grace(ct=ct, spec=spec):
            pre = prestop_seconds(ct)
            src = env_source(r, ct, "MESH_DRAIN_MS")
            drain_ms = duration_ms(src[1]) if src and src[0] in ("value", "configMap") else DEFAULT_DRAIN_MS
            tgps = spec.get("terminationGracePeriodSeconds", 30)
            want = pre + drain_ms / 1000 + 5
            need(tgps >= want, f"terminationGracePeriodSeconds {tgps} < preStop {pre}s + drain "
                               f"{drain_ms / 1000}s + 5s")
            return f"{tgps}s >= preStop {pre:g}s + drain {drain_ms / 1000:g}s + 5s"
        c(f"{did}: preStop hook, terminationGracePeriodSeconds covers preStop + drain + 5s", grace)

        def writable(ct=ct, spec=spec):
            need(spec["securityContext"].get("runAsUser") == SERVICE_UID,
                 f"runAsUser is not the image's uid {SERVICE_UID}")
            mounts = {m["mountPath"]: m["name"] for m in ct.get("volumeMounts", []) or []}
            vols = {v["name"]: v for v in spec.get("volumes", []) or []}
            data_dir = env_text(r, ct, "MESH_DATA_DIR")
            for path in ("/tmp", data_dir):
                need(path in mounts and "emptyDir" in vols.get(mounts[path], {})
                     or path in mounts and "persistentVolumeClaim" in vols.get(mounts[path], {}),
                     f"{path} is not a writable volume (read-only root filesystem)")
            return f"uid {SERVICE_UID}, /tmp and MESH_DATA_DIR={data_dir} writable"
        c(f"{did}: image uid, writable /tmp and data dir on a read-only root", writable)

        def advertise(ct=ct):
            need(env_source(r, ct, "MESH_ADVERTISE") == ("fieldRef", "status.podIP"),
                 f"MESH_ADVERTISE is {env_source(r, ct, 'MESH_ADVERTISE')}")
        c(f"{did}: MESH_ADVERTISE from status.podIP", advertise)

        def instance(ct=ct):
            need(env_source(r, ct, "MESH_INSTANCE_ID") == ("fieldRef", "metadata.name"),
                 f"MESH_INSTANCE_ID is {env_source(r, ct, 'MESH_INSTANCE_ID')}")
        c(f"{did}: MESH_INSTANCE_ID from metadata.name", instance)

        def consul_addr(ct=ct):
            addr = env_text(r, ct, "CONSUL_HTTP_ADDR")
            u = urllib.parse.urlsplit(addr if "://" in addr else "http://" + addr)
            host = u.hostname.split(".")[0]
            s = r.get("Service", host)
            need(any(p["port"] == u.port for p in s["spec"]["ports"]), f"Service {host} has no port {u.port}")
            consul = r.get("StatefulSet", CONSUL_STS)
            need(service_selects(s, pod_labels(consul)), f"Service {host} does not select the Consul servers")
            return addr
        c(f"{did}: CONSUL_HTTP_ADDR set to the Consul API Service", consul_addr)

        def consul_token(ct=ct, d=d, svc=svc):
            need(env_source(r, ct, "CONSUL_HTTP_TOKEN") is None,
                 "CONSUL_HTTP_TOKEN is set: the token belongs in a file (CONSUL_HTTP_TOKEN_FILE)")
            path = env_text(r, ct, "CONSUL_HTTP_TOKEN_FILE")
            src = mounted_secret_file(d, ct, path)
            need(src and generated(src[0], f"consul-token-{svc}") and src[1] == "token",
                 f"{path} is {src}, not its own Secret consul-token-{svc}")
            return f"{path} from Secret consul-token-{svc}"
        c(f"{did}: its own Consul ACL token, as a file from its own Secret", consul_token)

        def config_map(ct=ct):
            refs = [ef["configMapRef"]["name"] for ef in ct.get("envFrom", []) or [] if "configMapRef" in ef]
            need(refs, "no envFrom configMapRef")
            for ref in refs:
                need(r.has("ConfigMap", ref), f"ConfigMap {ref} is not rendered")
            return ", ".join(refs)
        c(f"{did}: settings from its own ConfigMap (envFrom)", config_map)

        def database(ct=ct, svc=svc):
            src = env_source(r, ct, "DATABASE_URL")
            need(src and src[0] == "secret", f"DATABASE_URL is not from a Secret: {src}")
            name, key = src[1]
            need(re.fullmatch(rf"{svc}-db(-[a-z0-9]+)?", name), f"Secret {name} is not named {svc}-db")
            db_secrets[svc] = (name, key)
            url = secret_value(r, name, key)
            if url is None:
                need(overlay != "dev", f"Secret {name} is not rendered in the dev overlay")
                return f"Secret {name} supplied at deploy time"
            u = urllib.parse.urlsplit(url)
            need(u.scheme in ("postgres", "postgresql"), f"scheme {u.scheme}")
            db = u.path.lstrip("/")
            databases[svc] = db
            need(db == svc, f"database {db!r} is not {svc!r}")
            need(urllib.parse.unquote(u.username or "") == svc, f"role {u.username!r} is not {svc!r}")
            host = u.hostname
            need(r.has("Service", host) and service_selects(r.get("Service", host),
                                                            pod_labels(r.get("StatefulSet", POSTGRES_STS))),
                 f"host {host} is not the PostgreSQL Service")
            return f"postgres://{svc}:***@{host}:{u.port or 5432}/{db}"
        c(f"{did}: DATABASE_URL from a Secret naming its own database", database)

        def annotations(d=d):
            a = d["spec"]["template"]["metadata"].get("annotations") or {}
            need(a.get("prometheus.io/scrape") == "true", "prometheus.io/scrape is not \"true\"")
            need(a.get("prometheus.io/port") == str(METRICS_PORT), f"prometheus.io/port is not {METRICS_PORT}")
        c(f"{did}: Prometheus scrape annotations", annotations)

        def replicas(d=d):
            n = d["spec"].get("replicas", 1)
            lo, hi = expect["replicas"]
            need(n >= lo and (hi is None or n <= hi), f"{n} replicas, want {lo}..{hi or ''}")
            return f"{n}"
        if expect:
            c(f"{did}: replica count for {overlay}", replicas)

        # Service, HPA, PDB, NetworkPolicy of this service
        def service(svc=svc, labels=labels, ct=ct, grpc_port=grpc_port):
            s = r.get("Service", svc)
            need(s["spec"].get("type", "ClusterIP") == "ClusterIP", "not ClusterIP")
            need(service_selects(s, labels), "selector does not match the pods")
            others = [o for o in GRPC_SERVICES if o != svc and deployments.get(o)
                      and service_selects(s, pod_labels(deployments[o]))]
            need(not others, f"selector also matches {others}")
            by_name = {p["name"]: p for p in s["spec"]["ports"]}
            g = by_name.get("grpc")
            need(g and g["port"] == grpc_port and container_port(ct, g.get("targetPort", g["port"])) == grpc_port,
                 f"no port grpc {grpc_port} reaching the container")
            need(g.get("appProtocol") == "grpc", "grpc port lacks appProtocol: grpc")
            m = by_name.get("metrics")
            need(m and container_port(ct, m.get("targetPort", m["port"])) == METRICS_PORT, "no metrics port")
        c(f"Service/{svc}: ClusterIP, grpc (appProtocol grpc) and metrics ports to the pods", service)

        def hpa(svc=svc, d=d):
            h = r.get("HorizontalPodAutoscaler", svc)
            need(h["apiVersion"] == "autoscaling/v2", h["apiVersion"])
            ref = h["spec"]["scaleTargetRef"]
            need(ref["kind"] == "Deployment" and ref["name"] == svc, f"targets {ref}")
            cpu = [m for m in h["spec"].get("metrics", []) if m.get("type") == "Resource"
                   and m["resource"]["name"] == "cpu"]
            need(cpu and cpu[0]["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70},
                 "no CPU 70 % utilization target")
            lo, hi = h["spec"].get("minReplicas", 1), h["spec"]["maxReplicas"]
            need(lo == d["spec"].get("replicas", 1), f"minReplicas {lo} != Deployment replicas")
            need(hi > lo or overlay == "dev", f"maxReplicas {hi} leaves no room above {lo}")
            return f"{lo}..{hi} at 70 % CPU"
        c(f"HorizontalPodAutoscaler/{svc}: autoscaling/v2 on CPU 70 %", hpa)

        def pdb(svc=svc, labels=labels, d=d):
            p = r.get("PodDisruptionBudget", svc)
            need(selects(p["spec"]["selector"], labels), "selector does not match the pods")
            n = d["spec"].get("replicas", 1)
            if "maxUnavailable" in p["spec"]:
                need(p["spec"]["maxUnavailable"] not in (0, "0%"), "maxUnavailable 0 blocks every drain")
                return f"maxUnavailable {p['spec']['maxUnavailable']}"
            need(p["spec"]["minAvailable"] < n, f"minAvailable {p['spec']['minAvailable']} blocks drains at {n} replicas")
            return f"minAvailable {p['spec']['minAvailable']}"
        c(f"PodDisruptionBudget/{svc}: selects the pods and lets a drain proceed", pdb)

        def netpol(labels=labels):
            own = [np["metadata"]["name"] for np in r.all("NetworkPolicy")
                   if np["spec"].get("podSelector") and selects(np["spec"]["podSelector"], labels)
                   and (np["spec"]["podSelector"].get("matchLabels") or np["spec"]["podSelector"].get("matchExpressions"))]
            need(own, "no NetworkPolicy selecting these pods")
            return ", ".join(own)
        c(f"NetworkPolicy for {svc}", netpol)

    check_gateway(c, r, expect, overlay, images)

    def one_image():
        need(len(set(images.values())) == 1, f"several images: {images}")
        return next(iter(images.values()), "")
    c("every mesh workload (the four services, the gateway) runs the same image", one_image)

    def distinct_databases():
        secrets = list(db_secrets.values())
        need(len(set(secrets)) == len(secrets), f"two services share a DATABASE_URL Secret: {db_secrets}")
        dbs = list(databases.values())
        need(len(set(dbs)) == len(dbs), f"two services share a database: {databases}")
        return "databases " + ", ".join(dbs) if dbs else "one Secret per service"
    c("no two services share a database", distinct_databases)

    # -- PostgreSQL --------------------------------------------------------------------
    def postgres():
        pg = r.get("StatefulSet", POSTGRES_STS)
        ct = main_container(pg)
        need(ct["image"].startswith("postgres:16"), f"image {ct['image']}")
        need(pod_spec(pg)["securityContext"].get("runAsUser") == 999, "not running as the image's postgres uid 999")
        s = r.get("Service", POSTGRES_STS)
        need(service_selects(s, pod_labels(pg)) and any(p["port"] == 5432 for p in s["spec"]["ports"]),
             "Service postgres does not expose 5432 of the pods")
        return ct["image"]
    c(f"StatefulSet/{POSTGRES_STS}: postgres:16 as uid 999 behind Service postgres:5432", postgres)

    # -- The events' broker ------------------------------------------------------------
    def broker():
        sts = r.get("StatefulSet", BROKER_STS)
        need(sts["spec"].get("volumeClaimTemplates"), "no volume for the append-only file")
        conf = find_generated(r, "ConfigMap", "mesh-broker-config")["data"]["redis.conf"]
        lines = {line.strip() for line in conf.splitlines()}
        for line in ("appendonly yes", "appendfsync always", "dir /data"):
            need(line in lines, f"redis.conf lacks `{line}`")
        ct = main_container(sts)
        # The password is read from its Secret's file at start, never written into the manifest.
        secret = mounted_secret_file(sts, ct, "/var/run/secrets/broker/password")
        need(secret is not None and generated(secret[0], "broker-password") and secret[1] == "password",
             f"the broker's password is not the Secret broker-password's file: {secret}")
        for svc in BROKER_CLIENTS:
            w = r.get("Deployment", svc)
            sct = main_container(w)
            need(env_text(r, sct, "MESH_BROKER_URL") == f"rediss://{BROKER_STS}:{BROKER_PORT}",
                 f"{svc}: MESH_BROKER_URL")
            need(mounted_secret_file(w, sct, env_text(r, sct, "MESH_BROKER_PASSWORD_FILE")),
                 f"{svc}: MESH_BROKER_PASSWORD_FILE is not a mounted Secret file")
        return "appendfsync always on a volume; orders and shipping get the URL and a password file"
    c(f"StatefulSet/{BROKER_STS}: durable Redis, its clients get a password file", broker)

    def postgres_init():
        pg = r.get("StatefulSet", POSTGRES_STS)
        ct = main_container(pg)
        mount = [m for m in ct.get("volumeMounts", []) if m["mountPath"] == "/docker-entrypoint-initdb.d"]
        need(mount, "nothing mounted at /docker-entrypoint-initdb.d")
        vol = [v for v in pod_spec(pg)["volumes"] if v["name"] == mount[0]["name"]][0]
        cm = r.get("ConfigMap", vol["configMap"]["name"])
        need(any(k.endswith(".sh") for k in cm.get("data", {})), "no init script in the ConfigMap")
        for svc in GRPC_SERVICES:
            src = env_source(r, ct, f"{svc.upper()}_DATABASE_URL")
            need(src and src[0] == "secret" and src[1] == db_secrets.get(svc),
                 f"{svc.upper()}_DATABASE_URL is not the Secret {svc} reads ({src} vs {db_secrets.get(svc)})")
        return "roles and databases from the services' own Secrets"
    c(f"StatefulSet/{POSTGRES_STS}: init script creates each service's database from its Secret", postgres_init)

    # -- Consul servers ----------------------------------------------------------------
    consul = r.by_kind.get("StatefulSet", {}).get(CONSUL_STS)
    c(f"StatefulSet/{CONSUL_STS} exists", lambda: need(consul is not None, "missing"))
    if consul is not None:
        cid = f"StatefulSet/{CONSUL_STS}"
        ct = main_container(consul)
        args = list(ct.get("command", [])[1:]) + list(ct.get("args", []))

        def flag_values(name):
            out = []
            for i, a in enumerate(args):
                if a.startswith(f"-{name}="):
                    out.append(a.split("=", 1)[1])
                elif a == f"-{name}" and i + 1 < len(args):
                    out.append(args[i + 1])
            return out

        def bootstrap():
            be = flag_values("bootstrap-expect")
            need(len(be) == 1, f"-bootstrap-expect given {len(be)} times")
            n = consul["spec"]["replicas"]
            need(int(be[0]) == n, f"replicas {n} != -bootstrap-expect {be[0]}")
            if expect:
                need(n == expect["consul_servers"], f"{n} servers, want {expect['consul_servers']} for {overlay}")
            need(n % 2 == 1, f"{n} servers: use an odd number")
            return f"{n} servers, -bootstrap-expect={be[0]}"
        c(f"{cid}: replicas equals -bootstrap-expect", bootstrap)

        def retry_join():
            svc = consul["spec"]["serviceName"]
            n = consul["spec"]["replicas"]
            want = {f"{CONSUL_STS}-{i}.{svc}.{NAMESPACE}.svc" for i in range(n)}
            got = {j.split(":")[0].removesuffix(".cluster.local") for j in flag_values("retry-join")}
            need(got == want, f"-retry-join {sorted(got)}, want {sorted(want)}")
            return f"{len(got)} stable DNS names"
        c(f"{cid}: -retry-join names every server through the headless Service", retry_join)

        def advertise():
            need(flag_values("advertise") == ["$(POD_IP)"], f"-advertise is {flag_values('advertise')}")
            need(env_source(r, ct, "POD_IP") == ("fieldRef", "status.podIP"), "POD_IP is not status.podIP")
            need("-server" in args and "-ui" in args, "not started with -server -ui")
        c(f"{cid}: -server -ui, advertises the pod IP", advertise)

        def parallel():
            need(consul["spec"].get("podManagementPolicy") == "Parallel",
                 "OrderedReady deadlocks: pod 0 is never Ready without a leader")
        c(f"{cid}: podManagementPolicy Parallel", parallel)

        def headless():
            s = r.get("Service", consul["spec"]["serviceName"])
            need(s["spec"].get("clusterIP") == "None", "not headless")
            need(s["spec"].get("publishNotReadyAddresses") is True, "publishNotReadyAddresses is not true")
            need(service_selects(s, pod_labels(consul)), "does not select the servers")
            return s["metadata"]["name"]
        c(f"{cid}: headless governing Service with publishNotReadyAddresses", headless)

        def consul_pdb():
            pdbs = [p for p in r.all("PodDisruptionBudget") if selects(p["spec"]["selector"], pod_labels(consul))]
            need(pdbs, "no PodDisruptionBudget")
            need(pdbs[0]["spec"].get("maxUnavailable") == 1, "maxUnavailable is not 1")
            return pdbs[0]["metadata"]["name"]
        c(f"{cid}: PodDisruptionBudget maxUnavailable 1", consul_pdb)

        def anti_affinity():
            aa = (pod_spec(consul).get("affinity") or {}).get("podAntiAffinity") or {}
            terms = list(aa.get("requiredDuringSchedulingIgnoredDuringExecution", []) or []) + \
                [t["podAffinityTerm"] for t in aa.get("preferredDuringSchedulingIgnoredDuringExecution", []) or []]
            ok = [t for t in terms if t.get("topologyKey") == "kubernetes.io/hostname"
                  and selects(t.get("labelSelector"), pod_labels(consul))]
            need(ok, "no podAntiAffinity on kubernetes.io/hostname against its own pods")
        c(f"{cid}: podAntiAffinity on hostname", anti_affinity)

        def readiness():
            p = ct.get("readinessProbe") or {}
            need(p, "no readinessProbe")
            text = " ".join(p.get("exec", {}).get("command", [])) or str(p)
            need("/v1/status/leader" in text and "exec" in p, "does not wait for an elected leader")
            need(ct.get("livenessProbe"), "no livenessProbe")
        c(f"{cid}: readinessProbe passes only with an elected leader", readiness)

        def data_volume():
            vcts = {v["metadata"]["name"] for v in consul["spec"].get("volumeClaimTemplates", [])}
            mounts = {m["name"] for m in ct.get("volumeMounts", []) if m["mountPath"] == "/consul/data"}
            need(mounts and mounts <= vcts, "/consul/data is not on a volumeClaimTemplate")
            need(flag_values("data-dir") == ["/consul/data"], "-data-dir is not /consul/data")
        c(f"{cid}: /consul/data on a PersistentVolumeClaim", data_volume)

        def connect_and_intentions():
            files = flag_values("config-file")
            need(files, "no -config-file (Connect and the intentions)")
            mounts = {m["mountPath"]: m["name"] for m in ct.get("volumeMounts", [])}
            configs = {}
            for path in files:
                folder, name = path.rsplit("/", 1)
                vol = [v for v in pod_spec(consul)["volumes"] if v["name"] == mounts.get(folder)]
                if vol and "secret" in vol[0]:
                    continue  # the ACL tokens (checked below), not Connect's settings
                need(vol and "configMap" in vol[0], f"{folder} is not a ConfigMap volume")
                data = r.get("ConfigMap", vol[0]["configMap"]["name"]).get("data", {})
                need(name in data, f"{name} is not in the ConfigMap")
                configs.update(json.loads(data[name]))
            need((configs.get("connect") or {}).get("enabled") is True, "connect.enabled is not true")
            entries = [e for e in configs.get("config_entries", {}).get("bootstrap", [])
                       if e.get("kind") == "service-intentions"]
            allowed = {(src["name"], e["name"]) for e in entries for src in e.get("sources", [])
                       if src.get("action") == "allow"}
            denied = {(src["name"], e["name"]) for e in entries for src in e.get("sources", [])
                      if src.get("action") == "deny"}
            need(("*", "*") in denied, "no default-deny intention * -> *")
            for backend in BACKENDS:
                need(("orders", backend) in allowed, f"orders -> {backend} is not allowed")
                callers = {s for (s, d) in allowed if d in (backend, "*")}
                expected = {"orders", "operator"} | ({GATEWAY} if backend in GATEWAY_CALLS else set())
                need(callers <= expected, f"{backend} may be called by {sorted(callers)}")
            for target in GATEWAY_CALLS:
                need((GATEWAY, target) in allowed, f"{GATEWAY} -> {target} is not allowed")
            need((GATEWAY, "payments") in denied, f"no explicit deny of {GATEWAY} -> payments")
            return f"{len(allowed)} allow, {len(denied)} deny"
        c(f"{cid}: Connect on, default-deny intentions for the shop's call graph", connect_and_intentions)

        def ui_service():
            s = r.get("Service", "consul-ui")
            need(s["spec"].get("type", "ClusterIP") == "ClusterIP", "not ClusterIP")
            need(service_selects(s, pod_labels(consul)), "does not select the servers")
            p = [p for p in s["spec"]["ports"] if p["port"] == 443]
            need(p and container_port(ct, p[0]["targetPort"]) == CONSUL_API_PORT,
                 f"no port 443 -> {CONSUL_API_PORT}")
        c(f"Service/consul-ui: ClusterIP port 443 -> {CONSUL_API_PORT} (HTTPS)", ui_service)

    # -- Consul ACLs ---------------------------------------------------------------------
    if consul is not None:
        ct = main_container(consul)
        args = list(ct.get("args", []))

        def acl_deny():
            acl = [a for a in args if a.startswith("-hcl=acl")]
            need(acl, "no -hcl=acl { … } argument")
            text = acl[0].replace(" ", "")
            need("enabled=true" in text, f"ACLs not enabled: {acl[0]}")
            need('default_policy="deny"' in text, f"default_policy is not deny: {acl[0]}")
            files = [a.split("=", 1)[1] for a in args if a.startswith("-config-file=")]
            secret_files = [mounted_secret_file(consul, ct, f) for f in files]
            secret_files = [s for s in secret_files if s is not None and generated(s[0], "consul-acl-tokens")]
            need(secret_files, f"no -config-file from a Secret (the master and agent tokens) in {files}")
            src = secret_files[0]
            need(not any("master" in a and "tokens" in a for a in args), "a token on the command line")
            return f"tokens from Secret {src[0]}"
        c(f"StatefulSet/{CONSUL_STS}: ACLs on, default_policy deny, tokens from a Secret file", acl_deny)

    def policies_as_shipped():
        cm = find_generated(r, "ConfigMap", ACL_POLICIES_CM)
        data = cm.get("data", {}) or {}
        shipped = sorted(f for f in os.listdir(POLICY_DIR) if f.endswith(".hcl"))
        need(shipped, f"no policies in {POLICY_DIR}")
        need(sorted(data) == shipped, f"ConfigMap has {sorted(data)}, deploy/consul/acl has {shipped}")
        for name in shipped:
            with open(os.path.join(POLICY_DIR, name)) as f:
                need(data[name] == f.read(), f"{name} differs from deploy/consul/acl/{name}")
        return f"{len(shipped)} policies"
    c(f"ConfigMap/{ACL_POLICIES_CM}: the policies of deploy/consul/acl, unchanged", policies_as_shipped)

    def service_policies():
        data = find_generated(r, "ConfigMap", ACL_POLICIES_CM).get("data", {}) or {}
        for svc in GRPC_SERVICES:
            rules = data.get(f"{svc}.hcl", "")
            need(re.search(r'service "%s" \{\s*policy\s*=\s*"write"' % svc, rules),
                 f"{svc}.hcl lacks service:write on {svc}")
            writes = re.findall(r'(\w+) "([^"]*)" \{[^}]*policy\s*=\s*"write"', rules)
            need(writes == [("service", svc)], f"{svc}.hcl writes more than itself: {writes}")
            need(re.search(r'node_prefix "" \{\s*policy\s*=\s*"read"', rules), f"{svc}.hcl lacks node:read")
        for backend in BACKENDS:
            need(re.search(r'service "%s" \{\s*policy\s*=\s*"read"' % backend, data.get("orders.hcl", "")),
                 f"orders.hcl lacks service:read on {backend}")
        gateway = data.get(f"{GATEWAY}.hcl", "")
        writes = re.findall(r'(\w+) "([^"]*)" \{[^}]*policy\s*=\s*"write"', gateway)
        need(writes == [("service", GATEWAY)], f"{GATEWAY}.hcl writes {writes}, not only itself")
        reads = sorted(re.findall(r'service "([^"]*)" \{\s*policy\s*=\s*"read"', gateway))
        need(reads == sorted(GATEWAY_CALLS), f"{GATEWAY}.hcl reads {reads}, not exactly {sorted(GATEWAY_CALLS)}")
    c(f"ConfigMap/{ACL_POLICIES_CM}: each service writes only itself; orders and the gateway read their upstreams", service_policies)

    job = r.by_kind.get("Job", {}).get(ACL_JOB)
    c(f"Job/{ACL_JOB} exists", lambda: need(job is not None, "missing"))
    if job is not None:
        jct = main_container(job)

        def bootstrap_job():
            cmd = list(jct.get("command", [])) + list(jct.get("args", []))
            need(cmd[:3] == ["/usr/local/bin/mesh", "acl", "bootstrap"], f"runs {cmd}")
            def flag(name):
                need(name in cmd, f"no {name}")
                return cmd[cmd.index(name) + 1]
            policies = flag("--policies-dir")
            volumes = {v["name"]: v for v in pod_spec(job).get("volumes", []) or []}
            mount = [m for m in jct.get("volumeMounts", []) if m["mountPath"] == policies]
            need(mount and generated(volumes[mount[0]["name"]].get("configMap", {}).get("name"), ACL_POLICIES_CM),
                 f"{policies} is not the ConfigMap {ACL_POLICIES_CM}")
            tokens = flag("--tokens-dir")
            for svc in list(GRPC_SERVICES) + [GATEWAY] + EXTRA_TOKENS:
                src = mounted_secret_file(job, jct, f"{tokens}/{svc}.token")
                need(src and generated(src[0], f"consul-token-{svc}") and src[1] == "token",
                     f"{svc}.token is {src}")
            master = env_text(r, jct, "CONSUL_HTTP_TOKEN_FILE")
            src = mounted_secret_file(job, jct, master)
            need(src is not None, f"the management token {master} is not from a Secret")
            need(env_source(r, jct, "CONSUL_HTTP_TOKEN") is None, "CONSUL_HTTP_TOKEN in the environment")
            return f"master token from {src[0]}, service tokens from their Secrets"
        c(f"Job/{ACL_JOB}: mesh acl bootstrap with the shipped policies and the services' own tokens", bootstrap_job)

    check_traffic(c, r)

    if overlay == "dev":
        def dev_tokens_agree():
            import json

            def value(base, key):
                return secret_value(r, find_generated(r, "Secret", base)["metadata"]["name"], key)
            tokens = json.loads(value("consul-acl-tokens", "tokens.json"))["acl"]["tokens"]
            need(tokens["initial_management"] == value("consul-acl-tokens", "master.token"),
                 "tokens.json's initial_management differs from master.token")
            need(tokens["agent"] == value("consul-acl-tokens", "agent.token"),
                 "tokens.json's agent differs from agent.token")
            values = [value(f"consul-token-{n}", "token") for n in list(GRPC_SERVICES) + [GATEWAY] + EXTRA_TOKENS]
            need(None not in values and len(set(values) | {tokens["initial_management"], tokens["agent"]}) == len(values) + 2,
                 "token Secrets missing or shared")
        c("dev Secrets: Consul's tokens agree, every holder has its own token", dev_tokens_agree)

    # -- NetworkPolicies ---------------------------------------------------------------
    def default_deny():
        ok = [np for np in r.all("NetworkPolicy") if np["spec"].get("podSelector") == {}
              and set(policy_types(np)) == {"Ingress", "Egress"}
              and not np["spec"].get("ingress") and not np["spec"].get("egress")]
        need(ok, "no NetworkPolicy selecting every pod with no ingress and no egress rule")
        return ok[0]["metadata"]["name"]
    c("NetworkPolicy: default deny of ingress and egress", default_deny)

    pods = {w["metadata"]["name"]: workload_endpoint(w) for w in r.workloads()}
    kube_dns = Endpoint("kube-dns", "kube-system", {"k8s-app": "kube-dns"},
                        [{"name": "dns", "containerPort": 53, "protocol": "UDP"}])
    prometheus = Endpoint("prometheus", "monitoring", {NAME_LABEL: "prometheus"})
    debug = Endpoint("a client pod in mesh", NAMESPACE, {"run": "grpcurl", "app.kubernetes.io/component": "client"})
    stranger = Endpoint("an unlabelled pod in mesh", NAMESPACE, {"run": "grpcurl"})
    foreign = Endpoint("a pod in another namespace", "default", {"run": "grpcurl"})
    internet = Endpoint("203.0.113.10", ip="203.0.113.10")

    def flow(src: Endpoint | None, dst: Endpoint | None, port: int, proto: str, want: bool):
        def f():
            need(src is not None and dst is not None, "workload missing")
            got = flow_allowed(r, src, dst, port, proto)
            need(got == want, "allowed" if got else "denied")
        verb = "allowed" if want else "denied"
        sname = src.name if src else "?"
        dname = dst.name if dst else "?"
        c(f"NetworkPolicy: {sname} -> {dname}:{port}/{proto} {verb}", f)

    def one_side(src: Endpoint | None, dst: Endpoint | None, port: int, direction: str):
        """Defence in depth: DIRECTION alone (the other side's policy aside) denies the flow."""
        def f():
            need(src is not None and dst is not None, "workload missing")
            subject, other = (dst, src) if direction == "Ingress" else (src, dst)
            need(not direction_allowed(r, subject, other, dst, port, "TCP", direction),
                 f"{subject.name}'s {direction.lower()} rules allow it")
        sname = src.name if src else "?"
        dname = dst.name if dst else "?"
        side = dname if direction == "Ingress" else sname
        c(f"NetworkPolicy: {sname} -> {dname}:{port}/TCP denied by {side}'s {direction.lower()} alone", f)

    for name, ep in sorted(pods.items()):
        flow(ep, kube_dns, 53, "UDP", True)
        flow(ep, kube_dns, 53, "TCP", True)
    orders = pods.get("orders")
    consul_ep = pods.get(CONSUL_STS)
    pg = pods.get(POSTGRES_STS)
    for svc, (port, _) in GRPC_SERVICES.items():
        ep = pods.get(svc)
        if svc in BACKENDS:
            flow(orders, ep, port, "TCP", True)
            flow(debug, ep, port, "TCP", False)
            flow(ep, orders, GRPC_SERVICES["orders"][0], "TCP", False)
            for other in BACKENDS:
                if other != svc:
                    flow(ep, pods.get(other), GRPC_SERVICES[other][0], "TCP", False)
                    one_side(pods.get(other), ep, port, "Ingress")
                    one_side(ep, pods.get(other), GRPC_SERVICES[other][0], "Egress")
            one_side(pg, ep, port, "Ingress")
        flow(consul_ep, ep, HEALTH_PORT, "TCP", True)
        flow(consul_ep, ep, port, "TCP", False)
        flow(ep, consul_ep, CONSUL_API_PORT, "TCP", True)
        flow(ep, pg, 5432, "TCP", True)
        flow(prometheus, ep, METRICS_PORT, "TCP", True)
        flow(prometheus, ep, port, "TCP", False)
        flow(foreign, ep, port, "TCP", False)
        flow(ep, internet, 443, "TCP", False)
    flow(debug, orders, GRPC_SERVICES["orders"][0], "TCP", True)
    flow(stranger, orders, GRPC_SERVICES["orders"][0], "TCP", False)
    flow(stranger, consul_ep, CONSUL_API_PORT, "TCP", False)
    for port, proto in CONSUL_PEER_PORTS:
        flow(consul_ep, consul_ep, port, proto, True)
    flow(debug, consul_ep, CONSUL_API_PORT, "TCP", True)
    flow(prometheus, consul_ep, CONSUL_API_PORT, "TCP", True)
    flow(foreign, consul_ep, CONSUL_API_PORT, "TCP", False)
    flow(debug, pg, 5432, "TCP", False)
    flow(consul_ep, pg, 5432, "TCP", False)
    flow(pg, consul_ep, CONSUL_API_PORT, "TCP", False)
    flow(consul_ep, internet, 443, "TCP", False)
    acl_job = pods.get(ACL_JOB)
    flow(acl_job, consul_ep, CONSUL_API_PORT, "TCP", True)
    flow(acl_job, pg, 5432, "TCP", False)
    flow(acl_job, orders, GRPC_SERVICES["orders"][0], "TCP", False)
    flow(acl_job, internet, 443, "TCP", False)
    flow(orders, acl_job, CONSUL_API_PORT, "TCP", False)
    traffic_job = pods.get(TRAFFIC_JOB)
    flow(traffic_job, consul_ep, CONSUL_API_PORT, "TCP", True)
    flow(traffic_job, pg, 5432, "TCP", False)
    flow(traffic_job, orders, GRPC_SERVICES["orders"][0], "TCP", False)
    flow(traffic_job, internet, 443, "TCP", False)
    # The events' broker: orders publishes, shipping consumes, nobody else.
    broker = pods.get(BROKER_STS)
    for svc in SERVICES:
        flow(pods.get(svc), broker, BROKER_PORT, "TCP", svc in BROKER_CLIENTS)
    flow(debug, broker, BROKER_PORT, "TCP", False)
    flow(foreign, broker, BROKER_PORT, "TCP", False)
    flow(broker, internet, 443, "TCP", False)

    # The gateway: the one way in from outside the namespace, and what it may call.
    gateway = pods.get(GATEWAY)
    flow(internet, gateway, GATEWAY_PORT, "TCP", True)
    flow(foreign, gateway, GATEWAY_PORT, "TCP", True)
    for target in GATEWAY_CALLS:
        flow(gateway, pods.get(target), GRPC_SERVICES[target][0], "TCP", True)
    flow(gateway, pods.get("payments"), GRPC_SERVICES["payments"][0], "TCP", False)
    one_side(gateway, pods.get("payments"), GRPC_SERVICES["payments"][0], "Egress")
    one_side(gateway, pods.get("payments"), GRPC_SERVICES["payments"][0], "Ingress")
    flow(gateway, consul_ep, CONSUL_API_PORT, "TCP", True)
    flow(gateway, pg, 5432, "TCP", False)
    flow(gateway, internet, 443, "TCP", False)
    flow(consul_ep, gateway, HEALTH_PORT, "TCP", True)
    flow(prometheus, gateway, METRICS_PORT, "TCP", True)
    flow(foreign, gateway, HEALTH_PORT, "TCP", False)

    def only_the_gateway_from_outside():
        reachable = []
        for name, ep in sorted(pods.items()):
            for port in sorted({p["containerPort"] for p in ep.ports if p.get("protocol", "TCP") == "TCP"}):
                for outsider in (internet, foreign):
                    if flow_allowed(r, outsider, ep, port, "TCP"):
                        reachable.append(f"{name}:{port} from {outsider.name}")
        need(reachable == [f"{GATEWAY}:{GATEWAY_PORT} from {internet.name}",
                           f"{GATEWAY}:{GATEWAY_PORT} from {foreign.name}"],
             f"reachable from outside the namespace: {reachable}")
        return f"{GATEWAY}:{GATEWAY_PORT} only"
    c("NetworkPolicy: only the gateway's HTTPS port accepts traffic from outside the namespace",
      only_the_gateway_from_outside)


def check_traffic(c, r: Rendered):
    """Traffic management: the shipped config entries in a ConfigMap, written in order by a Job
    with the traffic token (never the master token)."""

    def entries():
        data = find_generated(r, "ConfigMap", TRAFFIC_CM).get("data", {}) or {}
        return {key: data[key] for key in sorted(data)}

    def as_shipped():
        data = entries()
        shipped = sorted(f for f in os.listdir(TRAFFIC_DIR) if f.endswith(".json"))
        names = sorted(re.sub(r"^\d+-", "", key) for key in data)
        need(names == shipped, f"ConfigMap has {names}, deploy/consul/config has {shipped}")
        for key, text in data.items():
            with open(os.path.join(TRAFFIC_DIR, re.sub(r"^\d+-", "", key))) as f:
                need(text == f.read(), f"{key} differs from deploy/consul/config")
        rank = {"service-defaults": 0, "service-resolver": 1, "service-splitter": 2, "service-router": 3}
        kinds = [json.loads(text)["Kind"] for text in data.values()]
        need([rank[k] for k in kinds] == sorted(rank[k] for k in kinds),
             f"written out of order (protocols, resolver, splitter, router): {kinds}")
        return f"{len(data)} entries, in order"
    c(f"ConfigMap/{TRAFFIC_CM}: the config entries of deploy/consul/config, unchanged", as_shipped)

    def protocols():
        found = {}
        for text in entries().values():
            entry = json.loads(text)
            if entry["Kind"] == "service-defaults":
                found[entry["Name"]] = entry.get("Protocol")
        need(found == {svc: "grpc" for svc in GRPC_SERVICES}, f"service-defaults protocols: {found}")
    c(f"ConfigMap/{TRAFFIC_CM}: service-defaults with protocol grpc for every service", protocols)

    def canary():
        by_kind = {}
        for text in entries().values():
            entry = json.loads(text)
            if entry["Name"] == "inventory":
                by_kind[entry["Kind"]] = entry
        subsets = by_kind["service-resolver"]["Subsets"]
        for version in ("v1", "v2"):
            need(subsets[version]["Filter"] == f'Service.Meta.version == "{version}"',
                 f"subset {version}: {subsets.get(version)}")
        need(by_kind["service-resolver"].get("DefaultSubset") == "v1", "the default subset is not v1")
        splits = {s["ServiceSubset"]: s["Weight"] for s in by_kind["service-splitter"]["Splits"]}
        need(sorted(splits) == ["v1", "v2"] and sum(splits.values()) == 100, f"splits {splits}")
        routes = by_kind["service-router"]["Routes"]
        need(any(r["Destination"].get("ServiceSubset") == "v2"
                 and {"Name": "x-canary", "Exact": "1"} in r["Match"]["HTTP"].get("Header", [])
                 for r in routes), f"no x-canary: 1 route to v2 in {routes}")
        return f"split v1 {splits['v1']} / v2 {splits['v2']}"
    c(f"ConfigMap/{TRAFFIC_CM}: inventory's subsets v1/v2, a split, x-canary: 1 to v2", canary)

    job = r.by_kind.get("Job", {}).get(TRAFFIC_JOB)
    c(f"Job/{TRAFFIC_JOB} exists", lambda: need(job is not None, "missing"))
    if job is None:
        return
    jct = main_container(job)

    def writes_with_the_traffic_token():
        script = " ".join(list(jct.get("command", [])) + list(jct.get("args", [])))
        need("consul config write" in script, f"runs {script!r}")
        volumes = {v["name"]: v for v in pod_spec(job).get("volumes", []) or []}
        mounts = [m for m in jct.get("volumeMounts", [])
                  if generated((volumes[m["name"]].get("configMap") or {}).get("name"), TRAFFIC_CM)]
        need(mounts and f"{mounts[0]['mountPath']}/*.json" in script,
             f"does not write every entry of ConfigMap {TRAFFIC_CM}")
        token = env_text(r, jct, "CONSUL_HTTP_TOKEN_FILE")
        src = mounted_secret_file(job, jct, token)
        need(src and generated(src[0], "consul-token-traffic") and src[1] == "token",
             f"the token {token} is {src}, not the traffic token")
        need(env_source(r, jct, "CONSUL_HTTP_TOKEN") is None, "CONSUL_HTTP_TOKEN in the environment")
        return f"token from {src[0]}"
    c(f"Job/{TRAFFIC_JOB}: consul config write of every entry, with the traffic token", writes_with_the_traffic_token)


def check_gateway(c, r: Rendered, expect: dict, overlay: str | None, images: dict):
    """The API gateway's Deployment: HTTPS only, tokens from the identity ConfigMap, its own
    Consul token and Connect identity, no database; its Service, HPA and PDB."""
    d = r.by_kind.get("Deployment", {}).get(GATEWAY)
    did = f"Deployment/{GATEWAY}"
    c(f"{did} exists", lambda: need(d is not None, "missing"))
    if d is None:
        return
    ct = main_container(d)
    images[GATEWAY] = ct.get("image")

    def command():
        need(ct.get("command") == [f"/usr/local/bin/{GATEWAY}"], f"command is {ct.get('command')}")
    c(f"{did}: runs /usr/local/bin/{GATEWAY} from the mesh image", command)

    def https():
        need(port_of(env_text(r, ct, "MESH_LISTEN")) == container_port(ct, "https") == GATEWAY_PORT,
             "MESH_LISTEN, the https port and 8443 differ")
        need(env_source(r, ct, "MESH_ALLOW_PLAINTEXT") is None, "MESH_ALLOW_PLAINTEXT is set")
        cert = mounted_secret_file(d, ct, env_text(r, ct, "MESH_TLS_CERT"))
        key = mounted_secret_file(d, ct, env_text(r, ct, "MESH_TLS_KEY"))
        need(cert and generated(cert[0], "gateway-tls") and cert[1] == "tls.crt", f"MESH_TLS_CERT is {cert}")
        need(key and generated(key[0], "gateway-tls") and key[1] == "tls.key", f"MESH_TLS_KEY is {key}")
        return "certificate and key from Secret gateway-tls"
    c(f"{did}: HTTPS on 8443 with the certificate of Secret gateway-tls, never plaintext", https)

    def tokens():
        path = env_text(r, ct, "MESH_JWT_KEYS")
        volumes = {v["name"]: v for v in pod_spec(d).get("volumes", []) or []}
        mounts = [m for m in ct.get("volumeMounts", []) if path.startswith(m["mountPath"].rstrip("/") + "/")]
        need(mounts, f"{path} is not mounted")
        cm = volumes[mounts[0]["name"]].get("configMap") or {}
        need(generated(cm.get("name"), "gateway-identity"), f"{path} is not from ConfigMap gateway-identity")
        # The ConfigMap itself comes from the overlay (dev) or the operator (prod).
        env = {e["name"]: e for e in ct.get("env", []) or []}
        for name, key in (("MESH_JWT_ISSUER", "issuer"), ("MESH_JWT_AUDIENCE", "audience")):
            ref = (env.get(name, {}).get("valueFrom") or {}).get("configMapKeyRef") or {}
            need(generated(ref.get("name"), "gateway-identity") and ref.get("key") == key,
                 f"{name} is not key {key} of ConfigMap gateway-identity: {env.get(name)}")
    c(f"{did}: token keys, issuer and audience from ConfigMap gateway-identity", tokens)

    def identity():
        need(env_text(r, ct, "MESH_MTLS") == "required", "MESH_MTLS is not required")
        src = mounted_secret_file(d, ct, env_text(r, ct, "CONSUL_HTTP_TOKEN_FILE"))
        need(src and generated(src[0], f"consul-token-{GATEWAY}"), f"its Consul token is {src}")
        need(env_source(r, ct, "DATABASE_URL") is None, "an edge has no database")
    c(f"{did}: Connect identity gateway (mTLS to the services), its own Consul token, no database", identity)

    def probes():
        for kind, service in (("startupProbe", GATEWAY), ("readinessProbe", GATEWAY), ("livenessProbe", "")):
            probe = ct.get(kind) or {}
            need(probe.get("grpc", {}).get("port") == HEALTH_PORT, f"{kind} is not grpc on {HEALTH_PORT}")
            need(probe["grpc"].get("service", "") == service, f"{kind} checks {probe['grpc'].get('service')!r}")
    c(f"{did}: gRPC health probes on the health port", probes)

    def service():
        s = r.get("Service", GATEWAY)
        need(s["spec"].get("type") == "LoadBalancer", "not a LoadBalancer")
        https = [p for p in s["spec"]["ports"] if p["port"] == 443]
        need(https and container_port(ct, https[0]["targetPort"]) == GATEWAY_PORT, "no 443 -> 8443")
    c(f"Service/{GATEWAY}: LoadBalancer, 443 -> the HTTPS port", service)

    def scaling():
        hpa = r.get("HorizontalPodAutoscaler", GATEWAY)
        need(hpa["spec"]["scaleTargetRef"]["name"] == GATEWAY, "scales something else")
        pdb = r.get("PodDisruptionBudget", GATEWAY)
        need(selects(pdb["spec"]["selector"], pod_labels(d)), "the PDB does not select the pods")
        low, _ = expect.get("replicas", (None, None))
        if low is not None:
            need(d["spec"]["replicas"] >= low and hpa["spec"]["minReplicas"] >= low,
                 f"fewer than {low} replicas for {overlay}")
    c(f"HorizontalPodAutoscaler/{GATEWAY} and PodDisruptionBudget/{GATEWAY}", scaling)


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    # The TLS properties live in their own module, which uses this one's helpers: one copy
    # of this module, also when it runs as a script.
    sys.modules.setdefault("k8s_properties", sys.modules[__name__])
    import k8s_broker_tls
    import k8s_consul_tls

    compose = None
    if "--compose" in argv:
        at = argv.index("--compose")
        compose = argv[at + 1]
        argv = argv[:at] + argv[at + 2:]
    rep = Report()
    for path in argv:
        stem = os.path.splitext(os.path.basename(path))[0]
        overlay = stem if stem in OVERLAYS else None
        rendered = Rendered(path)
        check_overlay(rep, rendered, overlay)
        k8s_consul_tls.check(rep, rendered, f"[{overlay or os.path.basename(path)}]")
        k8s_broker_tls.check(rep, rendered, f"[{overlay or os.path.basename(path)}]")
    if compose:
        k8s_consul_tls.check_compose(rep, compose)
        k8s_broker_tls.check_compose(rep, compose)
    print(f"k8s: {rep.passed} passed, {rep.failed} failed")
    return 1 if rep.failed else 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    sys.exit(main(sys.argv[1:]))
