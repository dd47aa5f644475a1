"""compare.py's output: machine info, the Markdown table and the PNG chart."""

from __future__ import annotations

import math
import os
import platform
import re
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

RATE_SCENARIOS = ("register", "calls", "push")
UNITS = {"register": "REGISTER/s", "calls": "calls/s", "push": "push-woken calls/s"}
KINDS = (
    ("register", "REGISTER -> 200"),
    ("invite", "INVITE -> 200"),
    ("push", "push INVITE -> 200, minus the wake delay"),
)
GROUPS = ("server", "redis", "sipp", "apns emulator", "wake relay")


def _first_line(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "not installed"
    text = (out.stdout + out.stderr).strip()
    return text.splitlines()[0].strip() if text else "?"


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine_info() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"(?m)^model name\s*:\s*(.+)$", cpuinfo)
    mem = re.search(r"(?m)^MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text())
    commit = _first_line(["git", "-C", str(Path(__file__).parent), "rev-parse", "--short", "HEAD"])
    return {
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "nproc": os.cpu_count(),
        "cpu_model": model.group(1).strip() if model else "?",
        "mem_gib": round(int(mem.group(1)) / 2**20, 1) if mem else None,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sipp": _first_line(["sipp", "-v"]),
        "kamailio": _first_line(["kamailio", "-v"]),
        "git_commit": commit,
        "loadavg_start": loadavg(),
    }


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def best_step(run: dict[str, Any]) -> dict[str, Any] | None:
    """The step at the round's clean rate (its highest clean step), if any."""
    return next((s for s in run.get("steps", []) if s["rate"] == run["best"] and run["best"]), None)


def group_cpu(step: dict[str, Any], key: str) -> dict[str, float]:
    """A step's CPU by display group: the SIPp client and UAS together as "sipp"."""
    raw = step[key]
    out = {g: raw.get(g) or 0.0 for g in GROUPS if g != "sipp"}
    out["sipp"] = (raw.get("sipp client") or 0.0) + (raw.get("sipp uas") or 0.0)
    return out


def rate_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    rates = [r["best"] for r in runs if "best" in r]
    best_run = max((r for r in runs if "best" in r), key=lambda r: r["best"], default=None)
    return {
        "rounds": [r.get("best") for r in runs],
        "best": max(rates) if rates else None,
        "median": statistics.median(rates) if rates else None,
        "step": best_step(best_run) if best_run else None,
    }


def latency_summary(runs: list[dict[str, Any]], kind: str) -> dict[str, Any] | None:
    """p50/p99 in µs over every round's samples; the push kind minus the wake delay."""
    ns = [v for r in runs for v in r.get("latency_ns", {}).get(kind, [])]
    if not ns:
        return None
    shift = runs[0]["wake_delay_s"] * 1e9 if kind == "push" else 0.0
    us = [(v - shift) / 1000 for v in ns]
    lost = sum(r["lost"][kind] for r in runs if "lost" in r)
    errors = sum(n for r in runs if "errors" in r for n in r["errors"][kind].values())
    return {
        "n": len(us),
        "p50": percentile(us, 50),
        "p99": percentile(us, 99),
        "lost": lost,
        "errors": errors,
    }


def _num(x: float | None) -> str:
    return "—" if x is None else f"{x:,.0f}".replace(",", " ")


def _error(run: dict[str, Any]) -> str:
    """A failed run's error for a table cell (a '|' would end the cell)."""
    return "error: " + str(run["error"]).replace("|", "\\|")


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a is not None and b else "—"


def markdown(results: dict[str, Any]) -> str:
    m, st = results["machine"], results["settings"]
    kam = "kamailio" if "kamailio" in results["systems"] else None
    lines = [
        f"## sipwake and Kamailio side by side ({'quick' if st['quick'] else 'full'} run)",
        "",
        f"{m['date_utc']}; {m['nproc']} x {m['cpu_model']}, {m['mem_gib']} GiB; Linux "
        f"{m['kernel']}; Python {m['python']}; {m['sipp']}; {m['kamailio']}; commit "
        f"{m['git_commit']}; load average {m['loadavg_start'][0]} at the start, "
        f"{m.get('loadavg_end', ['?'])[0]} at the end. {st['rounds']} round(s) A B A B, "
        f"{st['seconds']:g} s steps, ladder factor {st['factor']}, {st['users']} callees; SIPp, "
        f"the APNs emulator and the wake relay share the cores with the server. "
        f"Run took {results['wall_s']:.0f} s.",
        "",
        "| scenario | system | clean rate/s by round | best | median | ratio to Kamailio "
        "(best; by round) | p50 / p99 µs | server CPU µs/call | CPU % of a core at that "
        "step: server / Redis / SIPp / emulator / relay |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    scen = results["scenarios"]
    for scenario in (s for s in RATE_SCENARIOS if s in scen):
        sums = {name: rate_summary(runs) for name, runs in scen[scenario].items()}
        for name, runs in scen[scenario].items():
            s = sums[name]
            rounds = ", ".join(_num(r["best"]) if "best" in r else _error(r) for r in runs)
            ratio = "—"
            if kam and kam in sums and name != kam:
                k = sums[kam]
                per = ", ".join(
                    _ratio(a, b) for a, b in zip(s["rounds"], k["rounds"], strict=False)
                )
                ratio = f"{_ratio(s['best'], k['best'])} ({per})"
            us = pct = "—"
            if s["step"]:
                u, p = group_cpu(s["step"], "cpu_us_per_call"), group_cpu(s["step"], "cpu_pct_core")
                us = _num(u["server"])
                pct = " / ".join(f"{p[g]:.0f}" if p[g] else "—" for g in GROUPS)
            lines.append(
                f"| {scenario} ({UNITS[scenario]}) | {name} | {rounds} | {_num(s['best'])} | "
                f"{_num(s['median'])} | {ratio} | | {us} | {pct} |"
            )
    if "latency" in scen:
        for kind, label in KINDS:
            sums_l = {name: latency_summary(runs, kind) for name, runs in scen["latency"].items()}
            for name, runs in scen["latency"].items():
                s_l = sums_l[name]
                errs = "; ".join(_error(r) for r in runs if "error" in r)
                cell = errs or "—"
                ratio = "—"
                if s_l:
                    cell = f"{_num(s_l['p50'])} / {_num(s_l['p99'])}"
                    if s_l["lost"] or s_l["errors"]:
                        cell += f" ({s_l['lost']} lost, {s_l['errors']} errors)"
                    k_l = sums_l.get(kam) if kam else None
                    if k_l and name != kam:
                        ratio = f"p99 ratio {s_l['p99'] / k_l['p99']:.2f}"
                lines.append(f"| latency: {label} | {name} | | | | {ratio} | {cell} | | |")
    lines += ["", *notes(results)]
    if "scale" in results:
        lines += ["", *scale_table(results["scale"])]
    return "\n".join(lines)


def notes(results: dict[str, Any]) -> list[str]:
    st = results["settings"]
    out = [
        "Clean rate: the highest offered rate with zero failed calls, zero retransmissions "
        "and >= 85 % of it achieved, climbing the ladder from the bottom; the ratio divides "
        "sipwake's by Kamailio's (per round: the same round, back to back). Server CPU: "
        "utime+stime of all its processes per successful call at the clean step.",
    ]
    out += saturated(results)
    lat = results["scenarios"].get("latency")
    if lat:
        floors = [v / 1000 for runs in lat.values() for r in runs for v in r.get("floor_ns", [])]
        floor = (
            f" The probe's own floor (a datagram to its own socket): p50 "
            f"{percentile(floors, 50):.0f} µs, p99 {percentile(floors, 99):.0f} µs."
            if floors
            else ""
        )
        out.append(
            f"Latency: bench/probe.py, {st['probe_rate']:g}/s of each kind for "
            f"{st['probe_seconds']:g} s per round, perf_counter_ns() before sendto() and "
            f"after recv() in one asyncio process; the push row subtracts the relay's "
            f"{st['wake_delay_s'] * 1000:.0f} ms wake delay (its timer jitter stays in)." + floor
        )
    return out


def saturated(results: dict[str, Any]) -> list[str]:
    """Where each ladder ended: the process groups at >= 90 % of a core in the first
    step that was not clean (the best round's), i.e. what ran out first."""
    out = []
    for scenario in (s for s in RATE_SCENARIOS if s in results["scenarios"]):
        for name, runs in results["scenarios"][scenario].items():
            ran = [r for r in runs if r.get("steps")]
            if not ran:
                continue
            run = max(ran, key=lambda r: r["best"])
            failed = next((s for s in run["steps"] if not s["clean"]), None)
            if failed is None:
                out.append(f"{scenario}, {name}: clean up to the top of the ladder.")
                continue
            pct = {**failed["cpu_pct_core"]}
            busy = [f"{g} {p:.0f} %" for g, p in sorted(pct.items()) if p and p >= 90]
            total = sum(p or 0 for p in pct.values())
            why = (
                f"{failed['failed']} failed, {failed['retransmissions']} retransmissions, "
                f"{100 * failed['achieved'] / failed['rate']:.0f} % achieved"
            )
            out.append(
                f"{scenario}, {name}: first unclean step {_num(failed['rate'])}/s ({why}); "
                f"CPU of all groups {total:.0f} % of one core"
                + (f", at >= 90 %: {', '.join(busy)}." if busy else ".")
            )
    return (
        ["", "Where each ladder ended (best round):", "", *(f"- {o}" for o in out), ""]
        if out
        else []
    )


def scale_table(scale: dict[str, Any]) -> list[str]:
    reg = scale.get("bench_register.py", {})
    mem = scale.get("bench_bindings_memory.py", {})
    held = scale.get("bench_held_memory.py", {})
    rows = ["| sipwake at scale (1 process, SQLite) | value |", "|---|---|"]
    if "best" in reg:
        rows.append(
            f"| REGISTER/s, new AoRs, {_num(reg['preload'])} bindings stored | {_num(reg['best'])} "
            f"(store loaded in {reg['startup_s']} s) |"
        )
    if mem.get("rows"):
        r = mem["rows"][-1]
        rows.append(
            f"| RSS / disk per stored binding ({_num(r['bindings'])}) | "
            f"{_num(r['rss_bytes_per_binding'])} B / {_num(r['file_bytes_per_binding'])} B |"
        )
    if held.get("sizes"):
        h = held["sizes"][-1]
        rows.append(
            f"| RSS per held call ({_num(h['held'])} held) | {_num(h['bytes_per_held_call'])} B |"
        )
    rows += [f"| {name} | {_error(v)} |" for name, v in scale.items() if "error" in v]
    return rows


def chart(results: dict[str, Any], path: Path) -> None:
    """Offered vs achieved per rate scenario, latency p50/p99, CPU µs per call by
    process group, and the rate ratio: six panels, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems: list[str] = results["systems"]
    colors = {name: f"C{i}" for i, name in enumerate(systems)}
    fig, axes = plt.subplots(2, 3, figsize=(18, 10.5))
    scen = results["scenarios"]
    for ax, scenario in zip(axes[0], RATE_SCENARIOS, strict=True):
        _offered_vs_achieved(ax, scenario, scen.get(scenario), colors)
    _latency_bars(axes[1][0], scen.get("latency"), colors)
    _cpu_bars(axes[1][1], scen, systems)
    _ratio_bars(axes[1][2], scen, systems, colors)
    st, m = results["settings"], results["machine"]
    fig.suptitle(
        f"sipwake vs Kamailio, same run, {m['date_utc']}, {m['nproc']} cores "
        f"({'quick' if st['quick'] else 'full'}: {st['rounds']} round(s), {st['seconds']:g} s "
        "steps); SIPp, emulator and relay share the cores",
        fontsize=12,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _offered_vs_achieved(
    ax: Any, scenario: str, per_system: dict[str, Any] | None, colors: dict[str, str]
) -> None:
    ax.set_title(f"{scenario}: offered vs achieved {UNITS[scenario]}")
    if not per_system:
        ax.text(0.5, 0.5, "not run", ha="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    top = 1.0
    for name, runs in per_system.items():
        for i, run in enumerate(r for r in runs if r.get("steps")):
            xs = [s["rate"] for s in run["steps"]]
            ys = [s["achieved"] for s in run["steps"]]
            top = max(top, *xs)
            style = ("-", "--", ":", "-.")[i % 4]
            ax.plot(xs, ys, style, color=colors[name], lw=1.2, label=f"{name}, round {i + 1}")
            clean = [s for s in run["steps"] if s["clean"]]
            dirty = [s for s in run["steps"] if not s["clean"]]
            ax.plot(
                [s["rate"] for s in clean],
                [s["achieved"] for s in clean],
                "o",
                ms=4,
                color=colors[name],
            )
            ax.plot(
                [s["rate"] for s in dirty],
                [s["achieved"] for s in dirty],
                "x",
                ms=9,
                mew=2,
                color=colors[name],
            )
        best = rate_summary(runs)["best"]
        if best:
            ax.axvline(best, color=colors[name], ls=":", lw=2, label=f"{name} clean ≤ {best}/s")
    ax.plot([0, top], [0, top], color="0.7", lw=0.8, zorder=0)
    ax.set_xlabel("offered rate/s (o clean step, x first failed step)")
    ax.set_ylabel("achieved rate/s")
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)


def _latency_bars(ax: Any, per_system: dict[str, Any] | None, colors: dict[str, str]) -> None:
    import matplotlib.ticker

    ax.set_title("latency, p99 bar, p50 dark (µs, log scale)")
    if not per_system:
        ax.text(0.5, 0.5, "not run", ha="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    names = list(per_system)
    width = 0.8 / max(1, len(names))
    for j, name in enumerate(names):
        for i, (kind, _) in enumerate(KINDS):
            s = latency_summary(per_system[name], kind)
            if not s:
                continue
            x = i + (j - (len(names) - 1) / 2) * width
            ax.bar(
                x,
                s["p99"],
                width * 0.9,
                color=colors[name],
                alpha=0.45,
                label=name if i == 0 else None,
            )
            ax.bar(x, s["p50"], width * 0.9, color=colors[name])
            ax.text(x, s["p99"], f"{s['p99']:.0f}", ha="center", va="bottom", fontsize=7)
            ax.text(
                x, s["p50"], f"{s['p50']:.0f}", ha="center", va="top", fontsize=7, color="white"
            )
    ax.set_xticks(
        range(len(KINDS)), ["REGISTER\n-> 200", "INVITE\n-> 200", "push INVITE\n-> 200 - 50 ms"]
    )
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1, 2, 5)))
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)


def _cpu_bars(ax: Any, scen: dict[str, Any], systems: list[str]) -> None:
    ax.set_title("CPU µs per call at the clean rate, by process group")
    xs: list[float] = []
    labels: list[str] = []
    x = 0.0
    for scenario in (s for s in RATE_SCENARIOS if s in scen):
        for name in systems:
            step = rate_summary(scen[scenario].get(name, []))["step"]
            if step:
                us = group_cpu(step, "cpu_us_per_call")
                bottom = 0.0
                for k, g in enumerate(GROUPS):
                    ax.bar(
                        x,
                        us[g],
                        0.8,
                        bottom=bottom,
                        color=f"C{k + 5}",
                        label=g if not labels else None,
                    )
                    bottom += us[g]
            xs.append(x)
            labels.append(f"{scenario}\n{name}")
            x += 1
        x += 0.6
    if not xs:
        ax.text(0.5, 0.5, "no clean step", ha="center", transform=ax.transAxes)
        return
    ax.set_xticks(xs, labels, fontsize=7, rotation=30, ha="right")
    ax.set_ylabel("CPU µs per successful call")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)


def _ratio_bars(ax: Any, scen: dict[str, Any], systems: list[str], colors: dict[str, str]) -> None:
    ax.set_title("clean rate relative to Kamailio (best of the rounds)")
    if "kamailio" not in systems:
        ax.text(0.5, 0.5, "no Kamailio in this run", ha="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    ours = [s for s in systems if s != "kamailio"]
    present = [s for s in RATE_SCENARIOS if s in scen]
    width = 0.8 / max(1, len(ours))
    for j, name in enumerate(ours):
        for i, scenario in enumerate(present):
            mine = rate_summary(scen[scenario].get(name, []))["best"]
            theirs = rate_summary(scen[scenario].get("kamailio", []))["best"]
            if mine is None or not theirs:
                continue
            x = i + (j - (len(ours) - 1) / 2) * width
            ax.bar(
                x, mine / theirs, width * 0.9, color=colors[name], label=name if i == 0 else None
            )
            ax.text(x, mine / theirs, f"{mine / theirs:.2f}", ha="center", va="bottom", fontsize=8)
    ax.axhline(1.0, color="0.3", lw=1)
    ax.axhline(0.5, color="0.5", lw=1, ls="--", label="half of Kamailio (the issue's aim)")
    ax.set_xticks(range(len(present)), present)
    ax.set_ylabel("sipwake clean rate / Kamailio clean rate")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
