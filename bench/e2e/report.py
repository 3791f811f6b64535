"""The end-to-end benchmark's table, one-line progress summaries and plot (pure but for plot())."""

from __future__ import annotations

import math
from pathlib import Path

from bench.e2e.stats import Sync, ratio

Row = tuple[str, str, str, str]
HEADER: Row = ("measure", "idsync", "reference", "idsync/ref")


def number(value: float | None) -> str:
    """Three significant figures or so; '-' for unknown."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, int) or abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def times(ours: float | None, reference: float | None) -> str:
    value = ratio(ours, reference)
    if math.isnan(value):
        return "-"
    if value < 0.01:
        return "<0.01x"
    return f"{value:.2f}x" if value < 10 else f"{value:.0f}x" if value <= 1000 else ">1000x"


def row(measure: str, ours: float | None, reference: float | None = None, *, with_ratio: bool = True) -> Row:
    return (measure, number(ours), number(reference), times(ours, reference) if with_ratio else "-")


def bin_seconds(sync: Sync) -> float:
    """A bin width that gives the throughput plot some 20-100 points."""
    span = sync.last_s if not math.isnan(sync.last_s) else 1.0
    return max(0.1, round(span / 50, 1))


def sync_line(sync: dict) -> str:
    return (f"{sync['objects']}/{sync['expected']} present; first after {number(sync['first_s'])}s, "
            f"last after {number(sync['last_s'])}s ({number(sync['per_second'])}/s)")


def steady_line(step: dict) -> str:
    parts = [f"{step['sent']} sent at {number(step['achieved_rate'])}/s"]
    for system in ("idsync", "reference"):
        figures = step[system]
        parts.append(f"{system} p50 {number(figures['p50_ms'])} p99 {number(figures['p99_ms'])} ms, "
                     f"{figures['missing']} missing")
    return "; ".join(parts)


def resync_line(resync: dict) -> str:
    healed, wipe = resync["healed"], resync["after_wipe"]
    return (f"no-op {number(resync['noop']['median_s'])}s; wiped {healed['wiped']} contacts, the worker put them "
            f"back in {number(healed['converged_s'])}s; worker stopped, wiped {wipe['wiped']}: resync command "
            f"{number(wipe['command_s'])}s, all present after {number(wipe['converged_s'])}s")


def rows(results: dict) -> list[Row | str]:
    """Section titles (str) and rows of the table."""
    load = results["load"]
    out: list[Row | str] = []
    sync = results.get("initial_sync")
    if sync:
        ours, ref = sync.get("idsync", {}), sync.get("reference", {})
        out.append(f"initial sync, {load['users']} users in {load['forests']} forests, cold start")
        out.append(row("time to the last object, s", ours.get("last_s"), ref.get("last_s")))
        out.append(row("objects/s, start to last", ours.get("per_second"), ref.get("per_second")))
        out.append(row("objects/s, first to last", ours.get("flowing_per_second"), ref.get("flowing_per_second")))
        out.append(row("time to the first object, s", ours.get("first_s"), ref.get("first_s")))
        out.append(row("objects present at the end", ours.get("objects"), ref.get("objects"), with_ratio=False))
    for rate, step in results.get("steady", {}).items():
        out.append(f"steady state {rate}/s displayName modifies ({step['sent']} sent, "
                   f"{number(step['achieved_rate'])}/s achieved): modify returned -> visible")
        ours, ref = step["idsync"], step["reference"]
        for key, title in (("p50_ms", "p50, ms"), ("p95_ms", "p95, ms"), ("p99_ms", "p99, ms"), ("max_ms", "max, ms")):
            out.append(row(title, ours[key], ref[key]))
        out.append(row("never arrived", ours["missing"], ref["missing"], with_ratio=False))
        out.append(row("visible before the modify returned (0 ms)", ours["early"], ref["early"], with_ratio=False))
        if "idsync_from_sent" in step:
            out.append(row("p50 from the modify sent, ms", step["idsync_from_sent"]["p50_ms"],
                           step["reference_from_sent"]["p50_ms"]))
        if step.get("cpu_seconds"):
            cpu = step["cpu_seconds"]
            out.append(row("CPU s in this phase: worker / replica slapd", cpu.get("idsync"), cpu.get("reference")))
    resync = results.get("resync")
    if resync:
        healed, wipe = resync["healed"], resync["after_wipe"]
        out.append(f"wiped central forest and resync (idsync only; no-op: median of {len(resync['noop']['seconds'])})")
        out.append(row("`idsync resync`, nothing to do, s", resync["noop"]["median_s"], with_ratio=False))
        out.append(row(f"worker running: {healed['wiped']} deleted -> all back, s", healed["converged_s"],
                       with_ratio=False))
        out.append(row(f"worker stopped: {wipe['wiped']} deleted, resync command, s", wipe["command_s"],
                       with_ratio=False))
        out.append(row("worker stopped: resync start -> all present, s", wipe["converged_s"], with_ratio=False))
    direct = results.get("direct")
    if direct and sync:
        out.append(f"floor: the same contacts added by ldap3 to the central forest (reference column), "
                   f"median of {load['repeats']}")
        for connections, figures in direct.items():
            out.append(row(f"objects/s first to last vs {connections} connection(s)",
                           sync["idsync"].get("flowing_per_second"), figures["per_second"]))
    resources = results.get("resources")
    if resources:
        out.append("processes: peak RSS (MB) and CPU seconds (children included)")
        worker, reference = resources["worker"], resources.get("reference-slapd") or {}
        out.append(row("worker peak RSS, MB (ref: replica slapd)", worker["peak_rss_mb"], reference.get("peak_rss_mb"),
                       with_ratio=False))
        out.append(row("worker CPU s, whole run (ref: replica slapd)", worker["cpu_seconds"],
                       reference.get("cpu_seconds"), with_ratio=False))
        out.append(row("worker CPU s, initial sync", worker["initial_sync_cpu_seconds"], with_ratio=False))
        for name, seconds in (resources.get("servers-initial-sync") or {}).get("cpu_seconds", {}).items():
            out.append(row(f"{name} CPU s, initial sync", seconds, with_ratio=False))
        for name in ("resync-noop", "resync-after-wipe"):
            out.append(row(f"{name} peak RSS, MB", resources[name]["peak_rss_mb"], with_ratio=False))
            out.append(row(f"{name} CPU s", resources[name]["cpu_seconds"], with_ratio=False))
    return out


def format_table(lines: list[Row | str]) -> str:
    """Rows aligned under HEADER (text left, figures right); a str is a section title line."""
    widths = [max(len(line[i]) for line in [HEADER, *lines] if not isinstance(line, str)) for i in range(4)]

    def render(line: Row) -> str:
        return "  ".join([line[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(line[1:], widths[1:])])

    rule = "-" * len(render(HEADER))
    text = [render(HEADER), rule]
    for line in lines:
        text.append(f"{line}:" if isinstance(line, str) else render(line))
    return "\n".join(text)


def table(results: dict) -> str:
    return format_table(rows(results))


def plot(results: dict, path: Path) -> Path | None:
    """Latency distributions per rate and the initial sync's throughput over time; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    steady = results.get("steady", {})
    figure, axes = plt.subplots(1, 2, figsize=(13, 5))
    latency_axis, sync_axis = axes
    for (rate, step), colour in zip(steady.items(), ("tab:blue", "tab:red", "tab:green", "tab:purple")):
        for system, style in (("idsync", "-"), ("reference", ":")):
            values = [max(v, 0.01) for v in step[f"{system}_latencies_ms"]]  # a log axis has no 0
            if values:
                fractions = [(n + 1) / step["sent"] for n in range(len(values))]
                latency_axis.step(values, fractions, style, color=colour, where="post", label=f"{system} {rate}/s")
    latency_axis.set(xscale="log", xlabel="modify returned -> visible, ms (log; 0 drawn at 0.01)", ylabel="fraction of modifies",
                     title="latency distribution (CDF) per rate", ylim=(0, 1.02))
    latency_axis.grid(True, which="both", alpha=0.3)
    latency_axis.legend(fontsize="small")
    for system, colour in (("idsync", "tab:blue"), ("reference", "tab:orange")):
        points = results.get("initial_sync", {}).get(system, {}).get("rate_over_time", [])
        if points:
            sync_axis.step([p[0] for p in points], [p[1] for p in points], color=colour, where="post", label=system)
    sync_axis.set(xlabel="seconds since cold start", ylabel="objects/s", yscale="log",
                  title=f"initial sync of {results['load']['users']} users: throughput over time")
    sync_axis.grid(True, alpha=0.3)
    sync_axis.legend()
    figure.suptitle(f"idsync vs syncrepl, {results['date']}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
