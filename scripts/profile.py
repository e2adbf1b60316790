"""CPU flame graphs of the mesh's hot paths, with perf and inferno.

Started by scripts/profile (which builds the release binaries and installs
inferno). Starts a small lab on loopback (a Consul dev agent from `mesh env`,
ONE inventory instance, users, payments, orders; plaintext), then for each
case runs `mesh-bench load` at saturation (32 in flight) and records, for a
few seconds in its middle, the client and every server process of the case
with perf's software clock (`cpu-clock`: works in VMs without hardware
counters) and DWARF call graphs. Each case becomes one SVG flame graph whose
first frame is the process (`mesh-bench` is the client) and a text file of
the heaviest frames (self time and total time, share of all samples).

Cases:
  health-direct   Health/Check over one plain tonic channel to the instance
  health-mesh     Health/Check through the mesh client (Consul, p2c, retries)
                  to the same single instance: the difference is the client
  place-order     PlaceOrder through the mesh client: client + the 4 services
"""

import argparse
import collections
import os
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import bench  # noqa: E402  (the lab: processes, Consul, services)

CASES = {
    "health-direct": ("health", "direct", ["inventory"]),
    "health-mesh": ("health", "mesh", ["inventory"]),
    "place-order": ("place-order", "mesh", ["inventory", "users", "payments", "orders"]),
}
CONCURRENCY = 32
# Sampling rate and stack copied per sample: enough for Rust's deep async
# stacks, small enough for a few seconds of 5 processes.
FREQUENCY = 499
STACK_BYTES = 16384


def record(lab, case, seconds, perf, out):
    rpc, variant, roles = CASES[case]
    argv = [str(lab.bin / "mesh-bench"), "load", "--rpc", rpc, "--duration", f"{seconds + 3}s", "--json",
            "--concurrency", str(CONCURRENCY), *lab.via(variant, rpc)]
    client = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)  # past the fixtures and the warm-up
    pids = [client.pid] + [pid for role in roles for pid in lab.procs.pids(role)]
    data = out / f"{case}.perf.data"
    subprocess.run([perf, "record", "-q", "-e", "cpu-clock", "-F", str(FREQUENCY),
                    "--call-graph", f"dwarf,{STACK_BYTES}", "-o", str(data),
                    "-p", ",".join(map(str, pids)), "--", "sleep", str(seconds)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stdout, stderr = client.communicate()
    if client.returncode != 0:
        raise SystemExit(f"profile: {case}: mesh-bench load failed: {stderr.strip()}")
    bench.log(f"{case}: recorded {data.stat().st_size // 1024} KiB; {stdout.strip()[:200]}")
    return data


def collapse(data, perf, inferno):
    script = subprocess.run([perf, "script", "-i", str(data), "-F", "comm,pid,tid,time,event,ip,sym,dso"],
                            capture_output=True, check=True).stdout
    collapsed = subprocess.run([str(inferno / "inferno-collapse-perf"), "--pid"], input=script,
                               capture_output=True, check=True).stdout
    return collapsed.decode().splitlines()


def by_process(lines, lab):
    """Replaces the first frame (thread name-pid/tid) with the process's role."""
    roles = {pid: role for role in lab.procs.roles for pid in lab.procs.pids(role)}
    out = []
    for line in lines:
        frames, _, count = line.rpartition(" ")
        first, _, rest = frames.partition(";")
        pid = first.rsplit("-", 1)[-1].split("/")[0]
        role = roles.get(int(pid), "mesh-bench (client)") if pid.isdigit() else first
        out.append((f"{role};{rest}", int(count)))
    return out


# Where the time goes, by what a frame belongs to: a sample counts for a
# group when a frame of its stack is a function of it (matched at the start
# of the frame, so a type parameter such as `Instrumented<…>` or
# `poll<mesh::…>` does not count); groups overlap.
def starts(*prefixes):
    return re.compile(r"^<?(" + "|".join(re.escape(p) for p in prefixes) + ")")


GROUPS = [
    ("tower Buffer worker (queue hop)", starts("tower::buffer::")),
    ("mesh client layers (mesh::client)", starts("mesh::client::")),
    ("tower balance / p2c / ready cache", starts("tower::balance::", "tower::ready_cache::")),
    ("tonic (codec, transport)", starts("tonic::")),
    ("hyper", starts("hyper::", "hyper_util::")),
    ("h2 (HTTP/2 framing, streams)", starts("h2::")),
    ("tracing (spans, events, subscriber)", re.compile(
        r"^<?(tracing_core::|tracing_subscriber::|tracing::span::|tracing::event|tracing::dispatcher)")),
    ("metrics (prometheus-client)", starts("prometheus_client::")),
    ("sqlx / SQLite", re.compile(r"^<?sqlx|^sqlite3")),
    ("allocator (malloc, free)", re.compile(r"malloc|_int_free|cfree|realloc|unlink_chunk")),
    ("kernel: socket send/receive", re.compile(
        r"tcp_sendmsg|tcp_recvmsg|sock_(read|write)_iter|__sys_(sendto|recvfrom)|sock_sendmsg|sock_recvmsg")),
    ("kernel: wake-ups, futex, epoll, task switch", re.compile(
        r"futex|epoll|finish_task_switch|try_to_wake_up|schedule")),
    ("kernel: fsync, file system", re.compile(r"fsync|fdatasync|ext4_|jbd2")),
]


def crate_of(frame):
    """The crate a (demangled) frame belongs to, or `[native]` for C/kernel."""
    name = frame.lstrip("<&")
    return name.split("::", 1)[0] if "::" in name else "[native: libc, kernel]"


def top_frames(stacks, limit=20):
    """Per process: its share of samples; self time by crate; the groups above."""
    total = sum(count for _, count in stacks) or 1
    per_process = collections.Counter()
    by_crate = collections.defaultdict(collections.Counter)
    by_group = collections.defaultdict(collections.Counter)
    self_frames = collections.defaultdict(collections.Counter)
    for frames, count in stacks:
        parts = frames.split(";")
        process = parts[0]
        per_process[process] += count
        by_crate[process][crate_of(parts[-1])] += count
        self_frames[process][parts[-1]] += count
        for label, pattern in GROUPS:
            if any(pattern.search(frame) for frame in parts[1:]):
                by_group[process][label] += count
    lines = [f"{total} samples (share of all samples of the case)"]
    for process, n in per_process.most_common():
        lines += ["", f"== {process}: {100 * n / total:.1f} % of samples", "  self time by crate:"]
        lines += [f"  {100 * c / total:5.1f}  {crate}" for crate, c in by_crate[process].most_common(12)]
        lines += ["  stacks through (groups overlap):"]
        lines += [f"  {100 * by_group[process][label] / total:5.1f}  {label}" for label, _ in GROUPS
                  if by_group[process][label]]
        lines += ["  heaviest leaf frames:"]
        lines += [f"  {100 * c / total:5.1f}  {frame[:150]}" for frame, c in self_frames[process].most_common(limit)]
    return "\n".join(lines) + "\n"


def flame_graph(stacks, case, inferno, svg):
    title = f"{case}: {CASES[case][0]} via {CASES[case][1]}, {CONCURRENCY} in flight (cpu-clock, {FREQUENCY} Hz)"
    folded = "\n".join(f"{frames} {count}" for frames, count in stacks)
    graph = subprocess.run([str(inferno / "inferno-flamegraph"), "--title", title, "--hash",
                            "--minwidth", "0.2", "--width", "1600"],
                           input=folded.encode(), capture_output=True, check=True).stdout
    svg.write_bytes(graph)
    bench.log(f"{case}: {svg}")


def main():
    if sys.argv[1:2] == ["--summarize"]:
        # Re-derive a case's summary from its saved folded stacks.
        for folded in sys.argv[2:]:
            stacks = [(line.rpartition(" ")[0], int(line.rpartition(" ")[2]))
                      for line in Path(folded).read_text().splitlines() if line]
            Path(folded).with_suffix(".top.txt").write_text(top_frames(stacks))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("--tools", required=True)
    parser.add_argument("--perf", required=True)
    parser.add_argument("--inferno", required=True, help="folder with inferno-collapse-perf")
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--out", default="target/profile")
    parser.add_argument("--docs", default="docs")
    parser.add_argument("cases", nargs="*", default=list(CASES))
    args = parser.parse_args()
    os.environ["MESH_MTLS"] = "off"
    lab = bench.Bench(argparse.Namespace(bin=args.bin, tools=args.tools, out=args.out, seconds=args.seconds,
                                         profile="release", nginx="", haproxy="", h2load=""))
    out, docs = Path(args.out), Path(args.docs) / "bench"
    out.mkdir(parents=True, exist_ok=True)
    docs.mkdir(parents=True, exist_ok=True)
    bench.log(f"load average before: {os.getloadavg()[0]:.2f}")
    try:
        lab.consul()
        lab.inventory = [lab.service("inventory", "inventory-1")]
        lab.users = lab.service("users", "users-1")
        lab.payments = lab.service("payments", "payments-1")
        lab.orders = lab.service("orders", "orders-1")
        for name in ["inventory", "users", "payments", "orders"]:
            bench.wait_until(lambda: lab.passing(name) == 1, 60, f"{name} did not pass its checks")
        for case in args.cases:
            data = record(lab, case, args.seconds, args.perf, out)
            stacks = by_process(collapse(data, args.perf, Path(args.inferno)), lab)
            (out / f"{case}.top.txt").write_text(top_frames(stacks))
            (out / f"{case}.folded").write_text("".join(f"{frames} {count}\n" for frames, count in stacks))
            flame_graph(stacks, case, Path(args.inferno), docs / f"profile-{case}.svg")
    finally:
        lab.procs.stop_all()


if __name__ == "__main__":
    main()
