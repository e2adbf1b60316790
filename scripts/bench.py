"""One benchmark run of the mesh against what users would pick instead.

Started by scripts/bench (which installs the tools and builds the binaries).
Everything runs on loopback and is stopped on exit. See docs/BENCHMARKS.md.

Phases, in a fixed order:
  1. start Consul (`mesh env`), 3 inventory + users + payments + orders, nginx (one hop)
     and HAProxy sidecars (one outbound, one inbound per instance; plain and
     TLS frontends), record every process's idle RSS;
  2. h2load (nghttp2) on one instance's health Check: the server alone;
  3. the matrix: RPC x variant x load (concurrency 1, a fixed rate,
     saturation), with CPU per request by process;
  4. RSS under the highest load reached (mesh, health, 10k/s asked);
  5. failover: mesh GetItem at saturation, one instance SIGKILLed;
  6. mesh with mTLS (when the binaries have --mtls): instances restarted
     with mTLS required, the same loads;
  7. discovery at scale: `mesh-bench discovery` with 1,000 endpoints;
  8. the report (Markdown into docs/BENCHMARKS.md between markers, JSON in
     OUT) and SVG charts into docs/bench/.
The API gateway's phase (after 3, plaintext mesh): REST GetItem and
PlaceOrder through the gateway beside the same RPCs over gRPC through the
mesh, gateway RSS under load; its report goes between its own markers.
MESH_BENCH_ONLY=gateway runs Consul, the services and that phase alone.
"""

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

VARIANTS = ["direct", "mesh", "nginx", "sidecar", "sidecar-tls"]
LABELS = {
    "direct": "direct (one channel per instance, in turn)",
    "direct-tls": "direct with Connect mTLS (one channel per instance)",
    "mesh": "mesh (Consul, p2c, retries)",
    "nginx": "nginx, one grpc_pass hop",
    "sidecar": "HAProxy sidecar pair",
    "sidecar-tls": "HAProxy sidecar pair, TLS between proxies",
    "mesh-mtls": "mesh with mTLS",
    "gateway": "REST/JSON through the API gateway",
    "gateway-grpc": "gRPC through the API gateway",
}
# (rpc, load) pairs of the matrix; loads: c1 = one request at a time,
# rate = a fixed rate with enough workers, sat = as fast as 32 workers go.
MATRIX = [
    ("health", "c1"), ("health", "rate"), ("health", "sat"),
    ("get-item", "c1"), ("get-item", "rate"), ("get-item", "sat"),
    ("place-order", "c1"), ("place-order", "sat"),
]
SATURATION_CONCURRENCY = 32
FIXED_RATE = 2000
RSS_RATE = 10000
ORDERS_PREFIX = "/mesh.orders.v1.Orders/"
# `mesh env` prints its variables, then this line.
READY_MARKER = "# ready"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
GATEWAY_BEGIN, GATEWAY_END = "<!-- bench-gateway:begin -->", "<!-- bench-gateway:end -->"
# The gateway phase: (rpc, load) pairs, each through the mesh (gRPC) and the gateway (REST).
GATEWAY_MATRIX = [("get-item", "c1"), ("get-item", "sat"), ("place-order", "c1"), ("place-order", "sat")]
# The DEV-ONLY token keys the bench's gateway trusts (and `mesh bench` signs with).
GATEWAY_KEYS = Path(__file__).resolve().parent.parent / "k8s" / "overlays" / "dev" / "gateway"


def log(message):
    print(f"bench: {message}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"bench: {what} within {timeout} s")


def listening(port):
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def clock_ticks(pid):
    """utime + stime of pid, in clock ticks (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError):
        return 0


def rss_kib(pid):
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid):
    """pid and its direct children (nginx workers, haproxy's worker)."""
    found = [pid]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid:
                found.append(int(entry))
    return found


class Processes:
    """Every process the bench starts, by role; all stopped on exit."""

    def __init__(self, state):
        self.state = state
        self.roles = {}  # role -> list of Popen

    def start(self, role, argv, env=None, name=None):
        log_path = self.state / f"{name or role}.log"
        process = subprocess.Popen(
            argv, stdout=open(log_path, "ab"), stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})}, start_new_session=True)
        self.roles.setdefault(role, []).append(process)
        return process

    def pids(self, role):
        return [pid for p in self.roles.get(role, []) if p.poll() is None for pid in children(p.pid)]

    def stop(self, process, grace=5):
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for processes in self.roles.values():
            if process in processes:
                processes.remove(process)

    def stop_all(self):
        for processes in list(self.roles.values()):
            for process in list(processes):
                # `mesh env` stops its Consul agent (up to 10 s) before it exits.
                self.stop(process, grace=20)


class Bench:
    def __init__(self, args):
        self.args = args
        self.bin = Path(args.bin)
        self.tools = Path(args.tools)
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.state = Path(tempfile.mkdtemp(prefix="mesh-bench-"))
        self.procs = Processes(self.state)
        self.seconds = args.seconds
        self.results = {"seconds": self.seconds, "profile": args.profile, "fixed_rate": FIXED_RATE,
                        "runs": {}, "rss_kib": {}}
        self.mtls = "--mtls" in subprocess.run(
            [self.bin / "mesh-bench", "load", "--help"], capture_output=True, text=True).stdout

    # ---- start-up ----------------------------------------------------

    def consul(self):
        """Consul from the project's one local-environment engine, `mesh env`, until the run
        ends. Plain HTTP and no ACLs (`--insecure-consul`): the benchmark compares data paths
        on loopback, and the plaintext variants need no Connect certificates."""
        exports = self.state / "env.sh"
        process = subprocess.Popen(
            [self.bin / "mesh", "env", "--insecure-consul", "--state-dir", str(self.state / "env")],
            stdout=open(exports, "wb"), stderr=open(self.state / "mesh-env.log", "ab"), start_new_session=True)
        self.procs.roles.setdefault("mesh-env", []).append(process)
        wait_until(lambda: process.poll() is None and READY_MARKER in exports.read_text().splitlines(), 60,
                   "mesh env did not start Consul (see mesh-env.log)")
        variables = dict(shlex.split(line)[1].split("=", 1)
                         for line in exports.read_text().splitlines() if line.startswith("export "))
        self.consul_addr = variables["CONSUL_HTTP_ADDR"].removeprefix("http://")
        os.environ["CONSUL_HTTP_ADDR"] = self.consul_addr
        description = json.loads((self.state / "env" / "env.json").read_text())
        self.consul_pid = description["consul"]["pid"]

    def http(self, path):
        with urllib.request.urlopen(f"http://{self.consul_addr}{path}", timeout=3) as answer:
            return answer.read().decode()

    def passing(self, service):
        return len(json.loads(self.http(f"/v1/health/service/{service}?passing")))

    def service(self, name, instance, env=None):
        port = free_port()
        argv = [self.bin / name, "--listen", f"127.0.0.1:{port}", "--data-dir", str(self.state / "data"),
                "--instance-id", instance, "--check-interval", "1000", "--drain", "200"]
        process = self.procs.start(name, argv, env=env, name=instance)
        return port, process

    def services(self, env=None):
        self.inventory = [self.service("inventory", f"inventory-{n}", env) for n in (1, 2, 3)]
        self.users = self.service("users", "users-1", env)
        self.payments = self.service("payments", "payments-1", env)
        self.orders = self.service("orders", "orders-1", env)
        for name, count in [("inventory", 3), ("users", 1), ("payments", 1), ("orders", 1)]:
            wait_until(lambda: self.passing(name) == count, 60, f"{name} did not pass its checks")

    def certificates(self):
        """A CA, a server and a client certificate for the TLS sidecar pair."""
        tls = self.state / "tls"
        tls.mkdir()
        run = lambda *argv: subprocess.run(["openssl", *argv], cwd=tls, check=True, capture_output=True)
        run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=bench CA")
        for name in ["server", "client"]:
            run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
            (tls / f"{name}.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
            run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext")
            (tls / f"{name}.pem").write_text((tls / f"{name}.crt").read_text() + (tls / f"{name}.key").read_text())
        return tls

    def nginx(self):
        port = free_port()
        root = self.state / "nginx"
        (root / "logs").mkdir(parents=True)
        upstream = lambda name, ports: (
            f"  upstream {name} {{\n" + "".join(f"    server 127.0.0.1:{p};\n" for p in ports)
            + "    keepalive 64;\n    keepalive_requests 1000000;\n  }\n")
        (root / "nginx.conf").write_text(f"""worker_processes auto;
error_log {root}/logs/error.log warn;
pid {root}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {root}/body;
{upstream("inventory", [p for p, _ in self.inventory])}{upstream("orders", [self.orders[0]])}
  server {{
    listen 127.0.0.1:{port} http2;
    # nginx's default (1000 requests per connection) sends GOAWAY mid-load.
    keepalive_requests 1000000;
    location {ORDERS_PREFIX} {{ grpc_pass grpc://orders; }}
    location / {{ grpc_pass grpc://inventory; }}
  }}
}}
""")
        self.procs.start("nginx", [self.args.nginx, "-p", str(root), "-c", str(root / "nginx.conf"),
                                   "-g", "daemon off;"])
        wait_until(lambda: listening(port), 10, "nginx did not listen")
        self.nginx_port = port

    def haproxy(self, role, name, body):
        path = self.state / f"{name}.cfg"
        path.write_text(f"""global
  maxconn 4000
defaults
  mode http
  timeout connect 3s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 60s
{body}""")
        self.procs.start(role, [self.args.haproxy, "-db", "-f", str(path)], name=name)

    def sidecars(self, tls):
        """An inbound HAProxy in front of each instance (plain and mutual-TLS
        frontends), one outbound HAProxy next to the client routing to them."""
        verify = f"ssl crt {tls}/server.pem ca-file {tls}/ca.pem verify required alpn h2"
        present = f"ssl crt {tls}/client.pem ca-file {tls}/ca.pem verify required alpn h2"
        inbound = {}
        for name, port in [(f"inventory-{n}", p) for n, (p, _) in enumerate(self.inventory, 1)] + \
                [("orders-1", self.orders[0])]:
            plain, secure = free_port(), free_port()
            inbound[name] = (plain, secure)
            self.haproxy("haproxy-inbound", f"inbound-{name}", f"""frontend plain
  bind 127.0.0.1:{plain} proto h2
  default_backend app
frontend mtls
  bind 127.0.0.1:{secure} {verify}
  default_backend app
backend app
  server app 127.0.0.1:{port} proto h2
""")
        self.sidecar_ports = {"sidecar": free_port(), "sidecar-tls": free_port()}
        sections = []
        for variant, index, options in [("sidecar", 0, "proto h2"), ("sidecar-tls", 1, present)]:
            sections.append(f"""frontend {variant}
  bind 127.0.0.1:{self.sidecar_ports[variant]} proto h2
  use_backend {variant}-orders if {{ path_beg {ORDERS_PREFIX} }}
  default_backend {variant}-inventory
backend {variant}-inventory
  balance roundrobin
""" + "".join(f"  server {n} 127.0.0.1:{ports[index]} {options}\n"
              for n, ports in inbound.items() if n.startswith("inventory"))
                + f"""backend {variant}-orders
  server orders-1 127.0.0.1:{inbound["orders-1"][index]} {options}
""")
        self.haproxy("haproxy-outbound", "outbound", "".join(sections))
        for plain, secure in [*inbound.values(), tuple(self.sidecar_ports.values())]:
            wait_until(lambda: listening(plain) and listening(secure), 10, "HAProxy did not listen")

    # ---- measuring -----------------------------------------------------

    def via(self, variant, rpc):
        """The lab's flags for `variant`; only its own proxy need be running
        (the gateway-only run starts no nginx or sidecars)."""
        # The same instances as the mesh: every instance of the RPC's service.
        ports = [self.orders[0]] if rpc == "place-order" else [port for port, _ in self.inventory]
        direct = ",".join(f"127.0.0.1:{port}" for port in ports)
        return {
            "direct": lambda: ["--direct", direct],
            "direct-tls": lambda: ["--direct", direct],
            "mesh": lambda: [],
            "mesh-mtls": lambda: [],
            "nginx": lambda: ["--proxy", f"127.0.0.1:{self.nginx_port}"],
            "sidecar": lambda: ["--proxy", f"127.0.0.1:{self.sidecar_ports['sidecar']}"],
            "sidecar-tls": lambda: ["--proxy", f"127.0.0.1:{self.sidecar_ports['sidecar-tls']}"],
            "gateway": lambda: ["--gateway", f"http://127.0.0.1:{self.gateway_port}"],
            "gateway-grpc": lambda: ["--proxy", f"127.0.0.1:{self.gateway_port}"],
        }[variant]()

    def groups(self):
        """Processes whose CPU and memory are reported, by group."""
        return {
            "inventory": self.procs.pids("inventory"),
            "orders+users+payments": self.procs.pids("orders") + self.procs.pids("users") + self.procs.pids("payments"),
            "nginx": self.procs.pids("nginx"),
            "haproxy outbound": self.procs.pids("haproxy-outbound"),
            "haproxy inbound": self.procs.pids("haproxy-inbound"),
            "consul": [self.consul_pid],
            "gateway": self.procs.pids("gateway"),
        }

    def mesh_bench(self, key, variant, rpc, load, seconds=None, extra=(), env=None, during=None):
        seconds = seconds or self.seconds
        argv = [str(self.bin / "mesh-bench"), "load", "--rpc", rpc, "--duration", f"{seconds}s", "--json",
                *self.via(variant, rpc)]
        if load == "c1":
            argv += ["--concurrency", "1"]
        elif load == "rate":
            argv += ["--concurrency", str(SATURATION_CONCURRENCY), "--rate", str(FIXED_RATE)]
        elif load == "rss":
            argv += ["--concurrency", str(SATURATION_CONCURRENCY), "--rate", str(RSS_RATE)]
        else:
            argv += ["--concurrency", str(SATURATION_CONCURRENCY)]
        argv += list(extra)
        groups = self.groups()
        before = {group: sum(clock_ticks(pid) for pid in pids) for group, pids in groups.items()}
        peak = {}
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   env={**os.environ, **(env or {})})
        sampling = threading.Event()

        def sample():
            while not sampling.wait(0.2):
                for name, pids in [("mesh-bench (client)", [process.pid]), *groups.items()]:
                    for pid in pids:
                        peak[(name, pid)] = max(peak.get((name, pid), 0), rss_kib(pid))
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        if during:
            during()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        sampling.set()
        sampler.join()
        stdout, stderr = process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"bench: {key} failed ({process.returncode}): {stderr.strip()}")
        report = json.loads(stdout)
        ticks = os.sysconf("SC_CLK_TCK")
        cpu = {"mesh-bench (client)": usage.ru_utime + usage.ru_stime}
        for group, pids in groups.items():
            cpu[group] = (sum(clock_ticks(pid) for pid in pids) - before[group]) / ticks
        report["cpu_s"] = cpu
        report["variant"], report["load"] = variant, load
        report["peak_rss_kib"] = {f"{name} {pid}": kib for (name, pid), kib in peak.items()}
        self.results["runs"][key] = report
        (self.out / f"{key}.json").write_text(json.dumps(report, indent=1))
        lat = report["latency_us"]
        log(f"{key}: {report['rps']:.0f}/s p50 {lat['p50']} p99.9 {lat['p999']} µs, errors {report['errors'] or 0}")
        return report

    def idle_rss(self, label):
        rows = {}
        for group, pids in self.groups().items():
            for pid in pids:
                rows[f"{group} {pid}"] = rss_kib(pid)
        self.results["rss_kib"][label] = rows

    def h2load(self, key, port):
        """The server alone: h2load over one connection, 32 streams."""
        body = self.state / "health-check.bin"
        body.write_bytes(b"\x00\x00\x00\x00\x00")  # gRPC frame of an empty HealthCheckRequest
        argv = [self.args.h2load, "-c", "1", "-m", "32", "-D", str(max(1, round(self.seconds))), "-d", str(body),
                "-H", "content-type: application/grpc", "-H", "te: trailers",
                f"http://127.0.0.1:{port}/grpc.health.v1.Health/Check"]
        text = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        parsed = {"raw": text}
        match = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", text)
        parsed["rps"] = float(match.group(1)) if match else 0.0
        match = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)", text)
        if match:
            parsed["min"], parsed["max"], parsed["mean"] = match.groups()
        match = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", text)
        if match:
            parsed["requests"], parsed["failed"] = int(match.group(2)), int(match.group(4))
        self.results[key] = parsed
        log(f"{key}: {parsed['rps']:.0f}/s, max {parsed.get('max')}")

    def discovery(self):
        argv = [str(self.bin / "mesh-bench"), "discovery", "--endpoints", "1000", "--changes", "20",
                "--target", f"127.0.0.1:{self.users[0]}", "--json"]
        result = subprocess.run(argv, capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"bench: mesh-bench discovery failed: {result.stderr.strip()}")
        self.results["discovery"] = json.loads(result.stdout)
        d = self.results["discovery"]
        log(f"discovery: balancer p50 {d['balancer_ms']['p50']:.2f} ms, {d['bytes_per_endpoint']:.0f} B/endpoint")

    # ---- the run -------------------------------------------------------

    def run(self):
        self.consul()
        self.services()
        tls = self.certificates()
        self.nginx()
        self.sidecars(tls)
        time.sleep(1)
        self.idle_rss("idle")
        self.h2load("h2load", self.inventory[0][0])
        for rpc, load in MATRIX:
            for variant in VARIANTS:
                self.mesh_bench(f"{rpc}.{load}.{variant}", variant, rpc, load)
        self.mesh_bench("rss.mesh", "mesh", "health", "rss")
        victim = self.inventory[0][1]
        kill_at = self.seconds * 2 / 3

        def kill():
            time.sleep(kill_at)
            victim.kill()
        self.results["failover_kill_s"] = kill_at
        self.mesh_bench("failover", "mesh", "get-item", "sat", seconds=self.seconds * 2,
                        extra=["--timeline", "100ms"], during=kill)
        self.procs.stop(victim)
        self.gateway_phase(with_mesh_runs=False)
        if self.mtls:
            self.mtls_phase()
        self.discovery()

    def run_gateway_only(self):
        self.consul()
        self.services()
        time.sleep(1)
        self.gateway_phase(with_mesh_runs=True)

    def gateway(self, env=None):
        """The API gateway in front of the services, its limits off for the run."""
        port, health = free_port(), free_port()
        argv = [self.bin / "gateway", "--listen", f"127.0.0.1:{port}", "--health-listen", f"127.0.0.1:{health}",
                "--instance-id", "gateway-1", "--check-interval", "1000", "--drain", "200",
                "--jwt-keys", str(GATEWAY_KEYS / "jwks.json"), "--jwt-issuer", "mesh-dev", "--jwt-audience", "mesh",
                "--rate-limit", "0", "--anonymous-rate-limit", "0"]
        self.procs.start("gateway", argv, env=env, name="gateway-1")
        self.gateway_port = port
        wait_until(lambda: self.passing("gateway") == 1, 60, "the gateway did not pass its check")

    def gateway_phase(self, with_mesh_runs):
        """REST through the gateway beside gRPC through the mesh, same instances, same run."""
        log("gateway phase: REST through the API gateway vs gRPC through the mesh")
        self.gateway()
        keys = ["--gateway-keys", str(GATEWAY_KEYS)]
        for rpc, load in GATEWAY_MATRIX:
            if with_mesh_runs:
                self.mesh_bench(f"{rpc}.{load}.mesh", "mesh", rpc, load)
            self.mesh_bench(f"{rpc}.{load}.gateway", "gateway", rpc, load, extra=keys)
        self.mesh_bench("get-item.sat.gateway-grpc", "gateway-grpc", "get-item", "sat")
        for process in list(self.procs.roles.get("gateway", [])):
            self.procs.stop(process)

    def mtls_phase(self):
        """The instances again, with mTLS required, and the mesh client with it."""
        log("mTLS phase: restarting the services with --mtls=required")
        for role in ["inventory", "users", "payments", "orders"]:
            for process in list(self.procs.roles.get(role, [])):
                self.procs.stop(process)
        wait_until(lambda: self.passing("inventory") == 0, 30, "old instances did not leave Consul")
        self.services(env={"MESH_MTLS": "required"})
        for rpc, load in MATRIX:
            for variant in ["direct-tls", "mesh-mtls"]:
                self.mesh_bench(f"{rpc}.{load}.{variant}", variant, rpc, load, env={"MESH_MTLS": "required"})


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("--tools", required=True)
    parser.add_argument("--nginx", required=True)
    parser.add_argument("--haproxy", required=True)
    parser.add_argument("--h2load", required=True)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--profile", default="release")
    parser.add_argument("--out", default="target/bench")
    parser.add_argument("--docs", default="docs")
    parser.add_argument("--busy-ok", action="store_true",
                        help="run although the 1-minute load average is above 1 (the report says so)")
    args = parser.parse_args()
    quiet = quiet_machine(Path(args.bin), args.busy_ok)
    # The machine as the runs start (the load read after them is the runs' own).
    before = machine()
    plaintext = {"MESH_MTLS": "off"}
    os.environ.update(plaintext)
    bench = Bench(args)
    only_gateway = os.environ.get("MESH_BENCH_ONLY") == "gateway"
    started = time.monotonic()
    try:
        if only_gateway:
            bench.run_gateway_only()
        else:
            bench.run()
    finally:
        bench.procs.stop_all()
        shutil.rmtree(bench.state, ignore_errors=True)
    bench.results["wall_s"] = time.monotonic() - started
    bench.results["machine"] = {**before, "load_after": os.getloadavg()[0],
                                "quiet_check": quiet, "busy_ok": quiet["busy"]}
    import bench_report
    doc = Path(args.docs) / "BENCHMARKS.md"
    gateway_markdown = bench_report.gateway_markdown(bench.results, LABELS)
    print(gateway_markdown)
    bench_report.into_doc(doc, gateway_markdown, GATEWAY_BEGIN, GATEWAY_END)
    if only_gateway:
        (bench.out / "results-gateway.json").write_text(json.dumps(bench.results, indent=1))
        return
    (bench.out / "results.json").write_text(json.dumps(bench.results, indent=1))
    markdown = bench_report.markdown(bench.results, LABELS)
    print(markdown)
    bench_report.charts(bench.results, LABELS, Path(args.docs) / "bench")
    bench_report.into_doc(doc, markdown, BEGIN, END)


def quiet_machine(bin_dir, busy_ok):
    """`mesh-bench quiet`: refuses a busy machine (1-minute load average above 1)
    unless busy_ok; its answer goes into the report."""
    # --settle: the release build just before leaves a load of 2-4 behind on
    # an otherwise idle machine; it falls below 1 within about two minutes.
    argv = [str(bin_dir / "mesh-bench"), "quiet", "--settle", "180s", *(["--busy-ok"] if busy_ok else [])]
    answer = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if answer.stderr and answer.returncode == 0:
        log(answer.stderr.strip())
    if answer.returncode != 0:
        raise SystemExit(f"bench: {answer.stderr.strip()} (scripts/bench: MESH_BENCH_BUSY_OK=1)")
    quiet = json.loads(answer.stdout)
    if quiet["busy"]:
        log(f"the machine is busy (load average {quiet['load_average_1m']:.2f}): running anyway (--busy-ok)")
    return quiet


def machine():
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")
    return {"cpu": cpu, "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "load_before": os.getloadavg()[0]}


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main()
