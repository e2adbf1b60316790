"""The report of one scripts/bench run: Markdown tables with the aims marked
met or not, the p99.9 check lines, and SVG charts (matplotlib)."""

from pathlib import Path

RPCS = {
    "health": "Health/Check (no storage: the transport alone)",
    "get-item": "GetItem (one SQLite read)",
    "place-order": "PlaceOrder (the saga: users, inventory, payments; SQLite writes)",
}
LOADS = {"c1": "concurrency 1", "rate": "fixed rate", "sat": "saturation"}
CPU_GROUPS = ["mesh-bench (client)", "inventory", "orders+users+payments", "nginx",
              "haproxy outbound", "haproxy inbound"]
TAIL_RATIO = 5
AIM_RPS_VS_DIRECT = 0.90
AIM_RPS_VS_SIDECAR = 3.0
AIM_ADDED_P50_US = 10
AIM_ADDED_CPU_US = 5
AIM_CLIENT_DISCOVERY_MS = 5
# Like for like: each mesh variant against the direct channel to the same
# instances with the same transport security.
DIRECT_OF = {"mesh": "direct", "mesh-mtls": "direct-tls"}
AIM_DISCOVERY_MS = 10
AIM_RSS_MIB = 20
AIM_GATEWAY_ADDED_P50_US = 150
AIM_GATEWAY_RPS_VS_GRPC = 0.6
AIM_GATEWAY_RSS_MIB = 30


def variants_of(results, rpc, load):
    prefix = f"{rpc}.{load}."
    return [key[len(prefix):] for key in results["runs"] if key.startswith(prefix)]


def run(results, rpc, load, variant):
    return results["runs"].get(f"{rpc}.{load}.{variant}")


def verdict(ok):
    return "**met**" if ok else "**not met**"


def tail_checks(results):
    """One pass/fail line per variant: p99.9 <= 5 x p50 at the fixed rate, health."""
    lines = []
    for variant in variants_of(results, "health", "rate"):
        lat = run(results, "health", "rate", variant)["latency_us"]
        ratio = lat["p999"] / max(lat["p50"], 1)
        status = "PASS" if ratio <= TAIL_RATIO else "FAIL"
        lines.append(f"tail check (health at {rate_of(results)}/s) {variant}: p99.9 {lat['p999']} µs = "
                     f"{ratio:.1f}× p50 {lat['p50']} µs (limit {TAIL_RATIO}×): {status}")
    return lines


def rate_of(results):
    return results["fixed_rate"]


def cpu_per_request_us(report, groups=("mesh-bench (client)", "inventory", "orders+users+payments")):
    """CPU µs per request of the client and the servers (no proxies)."""
    return sum(report["cpu_s"].get(group, 0) for group in groups) * 1e6 / max(report["requests"], 1)


def aims(results):
    rows = []
    for mesh_variant, direct_variant in DIRECT_OF.items():
        security = "plaintext" if mesh_variant == "mesh" else "mTLS vs TLS direct"
        for rpc in ["health", "get-item"]:
            mesh, direct = run(results, rpc, "sat", mesh_variant), run(results, rpc, "sat", direct_variant)
            if mesh and direct:
                ratio = mesh["rps"] / direct["rps"]
                rows.append((f"mesh ≥ {AIM_RPS_VS_DIRECT}× direct RPS ({rpc}, saturation, {security})",
                             f"{ratio:.2f}×", verdict(ratio >= AIM_RPS_VS_DIRECT)))
        for rpc in ["health", "get-item"]:
            mesh, direct = run(results, rpc, "c1", mesh_variant), run(results, rpc, "c1", direct_variant)
            if mesh and direct:
                added = mesh["latency_us"]["p50"] - direct["latency_us"]["p50"]
                rows.append((f"added p50 over direct ≤ {AIM_ADDED_P50_US} µs at concurrency 1 ({rpc}, {security})",
                             f"{added:+d} µs ({direct['latency_us']['p50']} → {mesh['latency_us']['p50']})",
                             verdict(added <= AIM_ADDED_P50_US)))
        for rpc in ["health", "get-item"]:
            mesh, direct = run(results, rpc, "sat", mesh_variant), run(results, rpc, "sat", direct_variant)
            if mesh and direct and mesh.get("cpu_s") and direct.get("cpu_s"):
                m, d = cpu_per_request_us(mesh), cpu_per_request_us(direct)
                rows.append((f"CPU per call ≤ direct + {AIM_ADDED_CPU_US} µs (client + servers, {rpc}, saturation, "
                             f"{security})", f"{m - d:+.1f} µs ({d:.1f} → {m:.1f})",
                             verdict(m - d <= AIM_ADDED_CPU_US)))
    for rpc in ["health", "get-item"]:
        pairs = [("mesh", "sidecar", "plaintext")]
        if run(results, rpc, "sat", "mesh-mtls"):
            pairs.append(("mesh-mtls", "sidecar-tls", "TLS on both"))
        else:
            pairs.append(("mesh", "sidecar-tls", "TLS pair vs plaintext mesh: no --mtls in these binaries"))
        for mesh_variant, pair_variant, note in pairs:
            mesh, pair = run(results, rpc, "sat", mesh_variant), run(results, rpc, "sat", pair_variant)
            if mesh and pair:
                ratio = mesh["rps"] / pair["rps"]
                rows.append((f"mesh ≥ {AIM_RPS_VS_SIDECAR:g}× the sidecar pair's RPS ({rpc}, {note})",
                             f"{ratio:.2f}×", verdict(ratio >= AIM_RPS_VS_SIDECAR)))
    for variant in ["mesh", "direct", "mesh-mtls"]:
        report = run(results, "health", "rate", variant)
        if report:
            lat = report["latency_us"]
            ratio = lat["p999"] / max(lat["p50"], 1)
            rows.append((f"p99.9 ≤ {TAIL_RATIO}× p50 at the fixed rate (health, {variant})",
                         f"{ratio:.1f}× ({lat['p50']} / {lat['p999']} µs)", verdict(ratio <= TAIL_RATIO)))
    discovery = results.get("discovery")
    if discovery and "client_ms" in discovery:
        c = discovery["client_ms"]
        rows.append((f"1,000-endpoint service: the client's share of one change ≤ {AIM_CLIENT_DISCOVERY_MS} ms "
                     "(parse, diff, balancer; median)", f"p50 {c['p50']:.2f} ms, max {c['max']:.2f} ms "
                     f"(Consul's answer p50 {discovery['consul_ms']['p50']:.2f} ms)",
                     verdict(c["p50"] <= AIM_CLIENT_DISCOVERY_MS)))
    if discovery:
        b = discovery["balancer_ms"]
        rows.append((f"1,000-endpoint service: one change reaches the balancer ≤ {AIM_DISCOVERY_MS} ms (median)",
                     f"p50 {b['p50']:.2f} ms, max {b['max']:.2f} ms", verdict(b["p50"] <= AIM_DISCOVERY_MS)))
    rss = results["runs"].get("rss.mesh")
    if rss:
        peak = max((kib for name, kib in rss["peak_rss_kib"].items() if name.startswith("inventory")), default=0)
        rows.append((f"≤ {AIM_RSS_MIB} MB RSS per service instance under load",
                     f"{peak / 1024:.1f} MiB at {rss['rps']:.0f} RPS (10k/s asked)",
                     verdict(peak / 1024 <= AIM_RSS_MIB)))
    return rows


def load_after(machine):
    """The load average the runs left behind, when the results have it."""
    after = machine.get("load_after")
    return "" if after is None else f" (after it {after:.2f}: the runs' own load)"


def gateway_markdown(results, labels):
    """The API gateway's section: REST through the gateway vs gRPC through the mesh, same run."""
    machine = results.get("machine", {})
    head = (f"Run of {machine.get('date', '?')} on {machine.get('cores', '?')} cores, {results['profile']} build, "
            f"{results['seconds']:g} s per run; load average before the run {machine.get('load_before', 0):.2f}"
            f"{load_after(machine)}. "
            "Only 2xx answers count as successes; the gateway's rate limits are off for the run, its "
            "access log on.")
    rows = []
    for rpc in ["get-item", "place-order"]:
        for load in ["c1", "sat"]:
            for variant in ["mesh", "gateway"]:
                report = run(results, rpc, load, variant)
                if not report:
                    continue
                lat = report["latency_us"]
                errors = ", ".join(f"{code} {n}" for code, n in (report.get("errors") or {}).items()) or "0"
                rows.append((rpc, LOADS[load], labels.get(variant, variant), f"{report['rps']:.0f}",
                             lat["p50"], lat["p99"], lat["p999"], errors))
    grpc_via_gateway = run(results, "get-item", "sat", "gateway-grpc")
    if grpc_via_gateway:
        lat = grpc_via_gateway["latency_us"]
        rows.append(("get-item", LOADS["sat"], labels.get("gateway-grpc"), f"{grpc_via_gateway['rps']:.0f}",
                     lat["p50"], lat["p99"], lat["p999"], "0" if not grpc_via_gateway.get("errors") else
                     ", ".join(f"{c} {n}" for c, n in grpc_via_gateway["errors"].items())))
    verdicts = []
    mesh, gateway = run(results, "get-item", "c1", "mesh"), run(results, "get-item", "c1", "gateway")
    if mesh and gateway:
        added = gateway["latency_us"]["p50"] - mesh["latency_us"]["p50"]
        verdicts.append((f"the gateway adds ≤ {AIM_GATEWAY_ADDED_P50_US} µs p50 to GetItem at concurrency 1",
                         f"{added:+d} µs ({mesh['latency_us']['p50']} → {gateway['latency_us']['p50']})",
                         verdict(added <= AIM_GATEWAY_ADDED_P50_US)))
    for rpc in ["get-item", "place-order"]:
        mesh, gateway = run(results, rpc, "sat", "mesh"), run(results, rpc, "sat", "gateway")
        if mesh and gateway:
            ratio = gateway["rps"] / max(mesh["rps"], 1e-9)
            verdicts.append((f"REST via the gateway ≥ {AIM_GATEWAY_RPS_VS_GRPC}× the gRPC path's RPS ({rpc}, saturation)",
                             f"{ratio:.2f}× ({mesh['rps']:.0f} → {gateway['rps']:.0f}/s)",
                             verdict(ratio >= AIM_GATEWAY_RPS_VS_GRPC)))
    peaks = [kib for key, report in results["runs"].items() if key.endswith(".gateway")
             for name, kib in report.get("peak_rss_kib", {}).items() if name.startswith("gateway ")]
    if peaks:
        peak = max(peaks) / 1024
        verdicts.append((f"gateway RSS ≤ {AIM_GATEWAY_RSS_MIB} MB under load", f"{peak:.1f} MiB (peak of its runs)",
                         verdict(peak <= AIM_GATEWAY_RSS_MIB)))
    cpu = []
    for rpc in ["get-item", "place-order"]:
        report = run(results, rpc, "sat", "gateway")
        if report and report.get("cpu_s") and report.get("ok"):
            gw = report["cpu_s"].get("gateway", 0.0)
            cpu.append(f"{rpc}: the gateway used {gw * 1e6 / report['ok']:.0f} µs of CPU per request at saturation")
    parts = [head, "### Aims", table(("aim", "measured", "verdict"), verdicts),
             "### Runs", table(("RPC", "load", "path", "RPS", "p50 µs", "p99 µs", "p99.9 µs", "errors"), rows)]
    if cpu:
        parts.append("\n".join(f"- {line}" for line in cpu))
    return "\n\n".join(parts) + "\n"


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def rpc_tables(results, labels):
    out = []
    for rpc, title in RPCS.items():
        variants = variants_of(results, rpc, "sat")
        if not variants:
            continue
        direct = run(results, rpc, "sat", "direct")
        rows = []
        for variant in variants:
            sat = run(results, rpc, "sat", variant)
            row = [labels.get(variant, variant), f"{sat['rps']:.0f}",
                   f"{sat['rps'] / direct['rps']:.2f}×" if direct else "",
                   sum(sat["errors"].values())]
            for load in ["c1", "rate", "sat"]:
                report = run(results, rpc, load, variant)
                lat = report["latency_us"] if report else None
                row += [f"{lat['p50']} / {lat['p99']} / {lat['p999']}" if lat else "–"]
            rows.append(row)
        out.append(f"#### {title}\n\n" + table(
            ["variant", "RPS (sat.)", "vs direct", "errors (sat.)", "c=1 p50 / p99 / p99.9 µs",
             f"{rate_of(results)}/s p50 / p99 / p99.9 µs", "sat. p50 / p99 / p99.9 µs"], rows))
        cpu_rows = []
        for variant in variants:
            sat = run(results, rpc, "sat", variant)
            per = lambda group: sat["cpu_s"].get(group, 0) * 1e6 / max(sat["requests"], 1)
            cells = [f"{per(group):.0f}" for group in CPU_GROUPS]
            cpu_rows.append([labels.get(variant, variant), *cells,
                             f"{sum(per(group) for group in CPU_GROUPS):.0f}"])
        out.append(f"CPU µs per request at saturation, by process ({title.split(' ')[0]}):\n\n"
                   + table(["variant", *CPU_GROUPS, "total"], cpu_rows))
    return "\n\n".join(out)


def rss_table(results):
    idle = results["rss_kib"].get("idle", {})
    load = results["runs"].get("rss.mesh", {}).get("peak_rss_kib", {})
    names = sorted(set(idle) | set(load), key=lambda name: (name.rsplit(" ", 1)[0], name))
    rows = [[name.rsplit(" ", 1)[0], f"{idle[name] / 1024:.1f}" if name in idle else "–",
             f"{load[name] / 1024:.1f}" if name in load else "–"] for name in names]
    return table(["process", "idle MiB", "peak MiB under load"], rows)


def markdown(results, labels):
    m = results["machine"]
    rss = results["runs"].get("rss.mesh", {})
    h2 = results.get("h2load", {})
    discovery = results.get("discovery")
    failover = results["runs"].get("failover")
    parts = [
        f"Run of {m['date']} on {m['cores']} cores ({m['cpu']}), {results['profile']} build, "
        f"{results['seconds']:g} s per run, "
        f"{results['wall_s'] / 60:.1f} min in all; load average before the run {m['load_before']:.2f}"
        + load_after(m)
        + (" — **the machine was busy (run with --busy-ok): read ratios, not absolute numbers**"
           if m["load_before"] > 1 or m.get("busy_ok") else "")
        + ". Direct channels go to the same instances as the mesh (three inventory instances, called in "
        "turn) with the same transport security.",
        "```\n" + "\n".join(tail_checks(results)) + "\n```",
        "### Aims\n\n" + table(["aim", "measured", "verdict"], aims(results)),
        "### By RPC\n\nRPS at saturation (32 in flight), latency at concurrency 1, at a fixed rate "
        "(32 workers) and at saturation.\n\n" + rpc_tables(results, labels),
    ]
    if h2:
        parts.append(f"### The server alone\n\nh2load, one connection, 32 concurrent streams, health Check on "
                     f"one inventory instance: {h2.get('rps', 0):.0f} req/s, request time min {h2.get('min')}, "
                     f"mean {h2.get('mean')}, max {h2.get('max')}, {h2.get('failed', '?')} failed.")
    parts.append(f"### Memory\n\nRSS of every process idle and at its peak during the mesh health run asked "
                 f"for {rss.get('concurrency', 32)} workers at 10k/s (reached {rss.get('rps', 0):.0f}/s):\n\n"
                 + rss_table(results))
    if failover:
        parts.append(f"### Failover\n\nmesh GetItem at saturation, one of three inventory instances SIGKILLed "
                     f"at {results['failover_kill_s']:.1f} s: {failover['requests']} requests, errors "
                     f"{failover['errors'] or 'none'}, p99.9 {failover['latency_us']['p999']} µs, "
                     f"max {failover['latency_us']['max']} µs.")
    if discovery:
        d = discovery
        parts.append("### Discovery at scale\n\n" + table(
            ["figure", "value"],
            [["catalog entries (passing checks) of one service", d["endpoints"]],
             ["client start → balancer holds all", f"{d['cold_start_ms']:.1f} ms"],
             ["one change: Consul ack → resolver's new set (p50 / max)",
              f"{d['resolver_ms']['p50']:.2f} / {d['resolver_ms']['max']:.2f} ms"],
             ["one change: Consul ack → balancer's new set (p50 / max)",
              f"{d['balancer_ms']['p50']:.2f} / {d['balancer_ms']['max']:.2f} ms"],
             *([["of which Consul: its answer of the whole list (p50 / max)",
                 f"{d['consul_ms']['p50']:.2f} / {d['consul_ms']['max']:.2f} ms"],
                ["of which the client: parse + diff + balancer update (p50 / max)",
                 f"{d['client_ms']['p50']:.2f} / {d['client_ms']['max']:.2f} ms "
                 f"(parse p50 {d['parse_ms']['p50']:.2f} ms)"]] if "client_ms" in d else []),
             ["client memory per endpoint held (not yet connected)", f"{d['bytes_per_endpoint'] / 1024:.1f} KiB"],
             ["client memory per open connection", f"{d['bytes_per_connection'] / 1024:.1f} KiB "
              f"({d['connections']} open)"]]))
    parts.append("### Charts\n\n![latency percentiles per variant](bench/latency.svg)\n\n"
                 "![RPS per variant](bench/rps.svg)\n\n![failover: latency over time](bench/failover.svg)")
    return "\n\n".join(parts) + "\n"


def into_doc(path, markdown, begin, end):
    """Replaces what is between the markers in path with markdown."""
    text = path.read_text()
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{begin}\n\n{markdown}\n{end}{tail}")


def charts(results, labels, folder):
    import matplotlib
    matplotlib.use("svg")
    import matplotlib.pyplot as plt
    plt.rcParams["svg.hashsalt"] = "mesh-bench"  # stable ids: diffs show data changes only
    plt.rcParams["font.size"] = 9
    folder.mkdir(parents=True, exist_ok=True)
    save = lambda figure, name: (figure.savefig(folder / name, metadata={"Date": None}, bbox_inches="tight"),
                                 plt.close(figure))

    figure, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for axis, load in zip(axes, ["c1", "rate"]):
        variants = variants_of(results, "health", load)
        quantiles = [("p50", "p50"), ("p99", "p99"), ("p999", "p99.9")]
        width = 0.8 / len(quantiles)
        for n, (field, name) in enumerate(quantiles):
            values = [run(results, "health", load, v)["latency_us"][field] for v in variants]
            axis.bar([i + n * width for i in range(len(variants))], values, width, label=name)
        axis.set_xticks([i + width for i in range(len(variants))], variants, rotation=20)
        axis.set_yscale("log")
        axis.set_title(f"Health/Check, {LOADS[load]}" + (f" ({rate_of(results)}/s)" if load == "rate" else ""))
        axis.grid(axis="y", which="both", alpha=0.3)
    axes[0].set_ylabel("latency, µs (log)")
    axes[0].legend()
    save(figure, "latency.svg")

    figure, axis = plt.subplots(figsize=(9, 4))
    rpcs = [rpc for rpc in RPCS if variants_of(results, rpc, "sat")]
    variants = variants_of(results, "health", "sat")
    width = 0.8 / max(len(variants), 1)
    for n, variant in enumerate(variants):
        values = [(run(results, rpc, "sat", variant) or {"rps": 0})["rps"] for rpc in rpcs]
        axis.bar([i + n * width for i in range(len(rpcs))], values, width, label=labels.get(variant, variant))
    axis.set_xticks([i + width * (len(variants) - 1) / 2 for i in range(len(rpcs))], rpcs)
    axis.set_ylabel("requests/s at saturation (32 in flight)")
    axis.legend(fontsize=8)
    axis.grid(axis="y", alpha=0.3)
    save(figure, "rps.svg")

    failover = results["runs"].get("failover")
    if failover and failover.get("timeline"):
        windows = failover["timeline"]
        seconds = [w["t_ms"] / 1000 for w in windows]
        figure, (top, bottom) = plt.subplots(2, 1, figsize=(9, 5), sharex=True,
                                             gridspec_kw={"height_ratios": [3, 1]})
        for field, name in [("p50_us", "p50"), ("p99_us", "p99"), ("max_us", "max")]:
            top.plot(seconds, [max(w[field], 1) for w in windows], label=name)
        top.set_yscale("log")
        top.set_ylabel("latency, µs (log)")
        bottom.bar(seconds, [w["requests"] for w in windows], width=0.09, label="requests")
        bottom.bar(seconds, [w["errors"] for w in windows], width=0.09, color="red", label="errors")
        bottom.set_ylabel("per 100 ms")
        bottom.set_xlabel("seconds into the run")
        for axis in (top, bottom):
            axis.axvline(results["failover_kill_s"], color="black", linestyle="--")
            axis.grid(alpha=0.3)
        top.annotate("SIGKILL", (results["failover_kill_s"], top.get_ylim()[1]), ha="left", va="top")
        top.legend()
        bottom.legend(fontsize=8)
        top.set_title("mesh GetItem at saturation, one of three instances killed")
        save(figure, "failover.svg")
