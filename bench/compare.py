"""sipwake and Kamailio side by side: the same SIPp scenarios against each, in one run,
alternating the systems (A B A B), one table of both and their ratio.

    bench/run [--quick] [--rounds N] [--systems sipwake,kamailio] [--sipwake-workers 1,2]
              [--sipwake-build pure,compiled] [--sipwake-push apns,webhook]
              [--scenarios register,calls,push,latency,scale]

(bench/run installs what is missing, then runs this file with .venv's Python.)

``--sipwake-build`` runs each sipwake system once per build: ``pure`` is .venv (editable,
pure Python), ``compiled`` is .venv-compiled (sip/, policy/, app/ and setup.py's storage/
modules compiled by mypyc, scripts/setup-compiled). The scale scenario always runs the pure build.

Figures from separate runs on a shared machine are not comparable; ratios from one run
are: every system runs each scenario in every round, in the same order, back to back.
Per scenario, round and system a fresh server (and SIPp UAS, wake relay, APNs emulator as
the scenario needs) is started, set up, measured and stopped:

* register: REGISTER for new AoRs (rig.register_steps), stepped rates;
* calls: INVITE/100/180/200/ACK/BYE to ``users`` registered users answered by one SIPp UAS;
* push: the same to users with push bindings only: sipwake pushes to the APNs emulator
  (HTTP/2), which forwards to the wake relay; Kamailio's http_client posts to the same
  relay; 50 ms later the relay sends the wake REGISTER. ``--sipwake-push apns,webhook``
  adds sipwake with its webhook provider POSTing straight to the relay: the same hop as
  Kamailio's, without the emulator (a Python HTTP/2 server on the same two cores) in the
  path (push and latency scenarios only; the others do not push);
* latency: probe.py at 20 transactions/s of each kind: REGISTER -> 200, INVITE -> 200,
  push-woken INVITE -> 200, p50/p99 in µs;
* scale (sipwake alone, full mode only): bench_register --preload 1000000,
  bench_bindings_memory, bench_held_memory as subprocesses, read from bench/results.

A rate scenario climbs a geometric ladder and stops at the first step that is not clean:
a failed or unfinished call, a retransmission (SIPp resends after 500 ms, RFC 3261
§17.1.1.2 / §17.1.2.2: the server was half a second behind), or less than 85 % of the
offered rate achieved (rig.sustained_best); the clean rate is the step below. CPU per
process group and
step comes from /proc (cpu.py). Results: a Markdown table on stdout (progress on stderr),
bench/results/compare-<UTC>.json and compare-latest.json, bench/results/compare.png."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.harness import SippResult, apns_emulator, free_port

from bench import cpu, report, rig
from bench.sipp_rate import Step

Mode = Literal["registrar", "push"]
SCENARIOS = ("register", "calls", "push", "latency", "scale")
WAKE_DELAY = 0.05  # s, push -> wake REGISTER (the relay's stand-in for a waking phone)
REDIS_URL = "redis://127.0.0.1:6379/0"
# The reorder-tolerant variants of bench_calls' scenarios (see their headers): Kamailio's
# UDP workers can relay a 180 after the 200, or an ACK after the BYE, which RFC 3261 allows
# over UDP; the same files run against every system.
UAS_XML = "uas_answer_fast_reorder.xml"
UAC_XML = {"calls": "uac_call_reorder_inf.xml", "push": "uac_push_call_reorder_inf.xml"}
# Ladders (first, last offered rate/s): low enough for >= 2 clean steps of the slower
# system, high enough to pass Kamailio's limit (~2 000+ calls/s here, sipwake ~1 100).
LADDERS = {"register": (2000, 40000), "calls": (400, 8000), "push": (200, 6000)}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def ladder(first: int, last: int, factor: float) -> list[int]:
    """Geometric rates first, first*factor, ... <= last, rounded to 2-3 digits."""
    rates: list[int] = []
    r = float(first)
    while r <= last * 1.001:
        step = 10 if r < 10_000 else 100
        rates.append(int(round(r / step) * step))
        r *= factor
    return rates


@dataclass
class Sut:
    """A running system under test: where to send, its CPU groups, a liveness check."""

    target: tuple[str, int]
    groups: dict[str, cpu.Group]
    alive: Callable[[], bool]


class System(Protocol):
    name: str
    # pn-provider its push users register with (and the wake relay's REGISTER carries).
    provider: str
    # Processes taking the SIP port: several (SO_REUSEPORT) need many client sockets
    # (rig.sipp_transport, rig.relay_sockets). Kamailio's children share one socket: 1.
    workers: int

    def start(
        self, mode: Mode, tmp: Path, relay_port: int
    ) -> contextlib.AbstractContextManager[Sut]:
        """Start it in ``mode``; in push mode its pushes go to the relay on ``relay_port``."""
        ...


ROOT = Path(__file__).resolve().parents[1]
# The interpreter (hence venv) of each build; bench/run installs both when asked for.
BUILDS = {
    "pure": ROOT / ".venv" / "bin" / "python",
    "compiled": ROOT / ".venv-compiled" / "bin" / "python",
}


def check_build(build: str) -> str:
    """The Python of ``build``'s venv, after checking it really runs that build."""
    python = str(BUILDS[build])
    out = subprocess.run(
        [python, "-c", "from sipwake.buildinfo import build; print(build())"],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.stdout.strip() != build:
        raise SystemExit(f"compare.py: {python} is not the {build} build: {out.stdout}{out.stderr}")
    return python


class Sipwake:
    """`sipwake serve`: one process on SQLite (the default), or N workers on Redis; run by
    the Python of one build (pure or compiled). ``label`` names the build in the table
    when a run compares builds."""

    def __init__(
        self,
        workers: int,
        redis: bool = False,
        python: str = sys.executable,
        label: str = "",
        push: str = "apns",
    ) -> None:
        self.workers = workers
        self.python = python
        self.push = push  # "apns" (through the emulator) or "webhook" (to the relay)
        self.provider = rig.WEBHOOK_PROVIDER if push == "webhook" else "apns"
        redis = redis or workers > 1  # workers share state only through Redis
        self.name = f"sipwake x{workers} (redis)" if redis else "sipwake"
        if label:
            self.name += f" {label}"
        if push == "webhook":
            self.name += " webhook"
        self.storage = REDIS_URL if redis else "sqlite"

    @contextlib.contextmanager
    def start(self, mode: Mode, tmp: Path, relay_port: int) -> Iterator[Sut]:
        with contextlib.ExitStack() as stack:
            url = stack.enter_context(rig.storage(self.storage, tmp / "sipwake.db"))
            groups: dict[str, cpu.Group] = {}
            push = ""
            if mode == "push" and self.push == "webhook":
                push = rig.webhook_push(f"http://127.0.0.1:{relay_port}/")
            elif mode == "push":
                emu = stack.enter_context(
                    apns_emulator("--forward-url", f"http://127.0.0.1:{relay_port}/")
                )
                push = emu.config(rig.BUNDLE_ID)
                groups["apns emulator"] = lambda: cpu.tree(emu.child.proc.pid)
            text = rig.sipwake_config(url, workers=self.workers, push=push)
            server = stack.enter_context(
                rig.sipwake(tmp, text, workers=self.workers, python=self.python)
            )
            groups["server"] = lambda: cpu.tree(server.proc.pid)
            if self.workers > 1:
                # The shared store is part of what N workers cost. The Redis on 127.0.0.1
                # may also serve others at the time: its CPU is shown apart, not added.
                redis_pid = redis_process_id()
                groups["redis"] = lambda: [redis_pid]
            yield Sut(server.addr("udp"), groups, server.alive)


def redis_process_id() -> int:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        return int(client.info("server")["process_id"])
    finally:
        client.close()


class Kamailio:
    """Kamailio 5.6 with bench/kamailio/<mode>.cfg (bench/kamailio_sut.py)."""

    name = "kamailio"
    provider = "apns"  # push.cfg reads pn-prid, whatever the provider
    workers = 1  # its children share one UDP socket: any client socket reaches all of them
    # One UDP child per core, as deployed: the same two cores sipwake x2 gets. The bench's
    # reorder-tolerant scenarios (see UAC_XML) keep the out-of-order relaying that several
    # children produce from counting as failures (kamailio_sut.CHILDREN explains it).
    children = 2

    @contextlib.contextmanager
    def start(self, mode: Mode, tmp: Path, relay_port: int) -> Iterator[Sut]:
        from bench import kamailio_sut

        push_url = f"http://127.0.0.1:{relay_port}/" if mode == "push" else ""
        with kamailio_sut.kamailio(
            mode, port=free_port(), push_url=push_url, children=self.children
        ) as k:
            yield Sut(("127.0.0.1", k.port), {"server": k.pids}, k.alive)


@dataclass
class Settings:
    quick: bool
    seconds: float  # per step
    factor: float  # ladder ratio
    users: int  # registered callees for calls and push
    probe_rate: float
    probe_seconds: float


def measured(
    run: Callable[[int, int], SippResult], groups: dict[str, cpu.Group], steps: list[dict[str, Any]]
) -> Callable[[int, int], SippResult]:
    """``run`` with the CPU of every group read around it (cpu.py): the SIPp client is a
    child this process waits for, so it is counted from getrusage; the rest from /proc."""

    def wrapped(rate: int, calls: int) -> SippResult:
        before, kids, t0 = cpu.snapshot(groups), cpu.children_cpu(), time.monotonic()
        res = run(rate, calls)
        used = cpu.delta(before, cpu.snapshot(groups))
        used["sipp client"] = cpu.children_cpu() - kids
        steps.append(cpu_record(used, time.monotonic() - t0, res.successful))
        return res

    return wrapped


def cpu_record(used: dict[str, float], wall: float, done: int) -> dict[str, Any]:
    return {
        "wall_s": round(wall, 3),
        "cpu_s": {k: round(v, 3) for k, v in used.items()},
        "cpu_pct_core": {k: round(100 * v / wall, 1) if wall else None for k, v in used.items()},
        "cpu_us_per_call": {k: round(1e6 * v / done) if done else None for k, v in used.items()},
    }


def climb(run: Callable[[int, int], SippResult], rates: list[int], seconds: float) -> list[Step]:
    """sipp_rate.step_search with compare's stricter stop: the first step that is not
    clean in rig.sustained_best's sense (a failed call, a retransmission, or less than
    85 % of the rate achieved) ends the ladder; the steps above it would only load the
    machine."""
    steps: list[Step] = []
    for rate in rates:
        calls = int(rate * seconds)
        res = run(rate, calls)
        achieved = res.successful / res.elapsed if res.elapsed else 0.0
        step = Step(rate, calls, res.successful, res.failed, res.retransmissions, achieved)
        steps.append(step)
        clean = rig.sustained_best([step], allow_retrans=False) == rate
        log(
            f"  rate {rate:>6}/s  ok {step.successful:>6}/{calls:<6}  failed {step.failed:>5}"
            f"  retrans {step.retransmissions:>5}  achieved {achieved:7.0f}/s  "
            f"{'clean' if clean else 'NOT CLEAN'}"
        )
        if not clean:
            break
    return steps


def rate_run(scenario: str, system: System, st: Settings, tmp: Path) -> dict[str, Any]:
    """One system, one round of one rate scenario: set up, climb the ladder, stop."""
    relay_port = free_port()
    with contextlib.ExitStack() as stack:
        callee = None if scenario == "register" else stack.enter_context(rig.uas(tmp, UAS_XML))
        mode: Mode = "push" if scenario == "push" else "registrar"
        sut = stack.enter_context(system.start(mode, tmp, relay_port))
        groups = dict(sut.groups)
        if scenario == "register":
            run = rig.register_steps(
                sut.target,
                tmp,
                st.seconds,
                push=False,
                transport=rig.sipp_transport(system.workers),
            )
        else:
            assert callee is not None
            uas_pid = callee.proc.pid
            groups["sipp uas"] = lambda: [uas_pid]
            if scenario == "push":
                relay = stack.enter_context(
                    rig.relay(
                        sut.target,
                        st.users,
                        callee.port,
                        delay=WAKE_DELAY,
                        port=relay_port,
                        sockets=rig.relay_sockets(system.workers),
                        provider=system.provider,
                    )
                )
                groups["wake relay"] = lambda: [relay.proc.pid]
            rig.register_users(
                tmp,
                sut.target,
                start=0,
                count=st.users,
                contact_port=callee.port,
                push=scenario == "push",
                provider=system.provider,
            )
            rig.write_callees(tmp / "callees.csv", 0, st.users)
            xml = UAC_XML[scenario]
            run = rig.call_steps(
                xml,
                sut.target,
                tmp / "callees.csv",
                st.seconds,
                tmp,
                transport=rig.sipp_transport(system.workers),
            )
        cpus: list[dict[str, Any]] = []
        rates = ladder(*LADDERS[scenario], st.factor)
        steps = climb(measured(run, groups, cpus), rates, st.seconds)
        alive = sut.alive()
    best = rig.sustained_best(steps, allow_retrans=False)
    return {
        "best": best,
        "server_alive_after": alive,
        "uas_failed": rig.uas_failures(tmp) if callee else None,
        "steps": [
            {**s.__dict__, "clean": rig.sustained_best([s], allow_retrans=False) == s.rate, **c}
            for s, c in zip(steps, cpus, strict=True)
        ],
    }


def latency_run(system: System, st: Settings, tmp: Path) -> dict[str, Any]:
    """probe.py against one system in push mode: push users user0..n-1 (one call each),
    100 plain users after them for the INVITE probe, new AoRs for the REGISTER probe;
    every Contact (and the wake REGISTER's) at the probe's own callee socket."""
    n = int(st.probe_rate * st.probe_seconds)
    relay_port, uas_port = free_port(), free_port()
    with contextlib.ExitStack() as stack:
        sut = stack.enter_context(system.start("push", tmp, relay_port))
        relay = stack.enter_context(
            rig.relay(
                sut.target,
                n,
                uas_port,
                delay=WAKE_DELAY,
                port=relay_port,
                provider=system.provider,
            )
        )
        rig.register_users(
            tmp,
            sut.target,
            start=0,
            count=n,
            contact_port=uas_port,
            push=True,
            provider=system.provider,
        )
        rig.register_users(tmp, sut.target, start=n, count=100, contact_port=uas_port, push=False)
        groups = {**sut.groups, "wake relay": lambda: [relay.proc.pid]}
        cmd = [
            sys.executable,
            str(Path(__file__).parent / "probe.py"),
            f"--server={sut.target[0]}:{sut.target[1]}",
            f"--uas-port={uas_port}",
            f"--rate={st.probe_rate}",
            f"--seconds={st.probe_seconds}",
            f"--call-users={n}:100",
            f"--push-users=0:{n}",
        ]
        before, kids, t0 = cpu.snapshot(groups), cpu.children_cpu(), time.monotonic()
        out = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)
        used = cpu.delta(before, cpu.snapshot(groups))
        used["probe"] = cpu.children_cpu() - kids
        wall = time.monotonic() - t0
        if out.returncode != 0:
            raise RuntimeError(f"probe.py exited {out.returncode}:\n{out.stderr[-2000:]}")
        probe = json.loads(out.stdout)
        alive = sut.alive()
    transactions = sum(len(v) for v in probe["latency_ns"].values())
    return {
        **probe,
        "wake_delay_s": WAKE_DELAY,
        "server_alive_after": alive,
        **cpu_record(used, wall, transactions),
    }


SCALE_RUNS = [
    # (script, arguments, result file): sipwake alone, at the sizes the issue names
    (
        "bench_register.py",
        ["--preload", "1000000", "--warmup", "2000"],
        "register_sqlite_plain_pre1000000.json",
    ),
    ("bench_bindings_memory.py", ["--sizes", "1000000"], "bindings_memory.json"),
    ("bench_held_memory.py", ["--sizes", "100000"], "held_memory.json"),
]


def scale_run() -> dict[str, Any]:
    """The existing scale scripts as subprocesses (their output on stderr), their JSON."""
    out: dict[str, Any] = {}
    for script, args, result in SCALE_RUNS:
        log(f"== scale: {script} {' '.join(args)}")
        path = rig.RESULTS / result
        path.unlink(missing_ok=True)  # a stale file must not pass for this run's
        cmd = [sys.executable, str(Path(__file__).parent / script), *args]
        proc = subprocess.run(cmd, stdout=sys.stderr, stderr=sys.stderr, check=False)
        if proc.returncode != 0 or not path.exists():
            out[script] = {"error": f"exit {proc.returncode}, {result} missing or stale"}
        else:
            out[script] = json.loads(path.read_text())
    return out


def error_text(exc: Exception) -> str:
    """The exception's first line and, for a child that did not start, its last line
    (e.g. sipwake's own usage error)."""
    lines = [line for line in str(exc).splitlines() if line.strip()] or [""]
    text = f"{type(exc).__name__}: {lines[0]}"
    return text + (f" ... {lines[-1].strip()}" if len(lines) > 1 else "")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke check: 1 round, 1 s steps")
    ap.add_argument("--rounds", type=int, help="A B A B rounds (default 2, quick 1)")
    ap.add_argument("--systems", default="sipwake,kamailio")
    ap.add_argument(
        "--sipwake-workers",
        default="1",
        help="one sipwake system per entry: N workers (1 = SQLite, more = Redis); "
        "'1r' is one process on Redis",
    )
    ap.add_argument(
        "--sipwake-build",
        default="pure",
        help="one sipwake system per entry and worker count: pure, compiled (mypyc)",
    )
    ap.add_argument(
        "--sipwake-push",
        default="apns",
        help="one sipwake system per entry (push and latency scenarios): apns (through the "
        "APNs emulator), webhook (POSTs to the wake relay, as Kamailio's http_client)",
    )
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    args = ap.parse_args(argv)
    args.sipwake_push = args.sipwake_push.split(",")
    for push in args.sipwake_push:
        if push not in ("apns", "webhook"):
            ap.error(f"--sipwake-push: expected apns and/or webhook, got {push!r}")
    args.sipwake_build = args.sipwake_build.split(",")
    for build in args.sipwake_build:
        if build not in BUILDS:
            ap.error(f"--sipwake-build: expected pure and/or compiled, got {build!r}")
    args.systems = args.systems.split(",")
    args.scenarios = args.scenarios.split(",")
    try:
        args.sipwake_workers = [
            (int(w.rstrip("r")), w.endswith("r")) for w in args.sipwake_workers.split(",")
        ]
    except ValueError:
        ap.error(f"--sipwake-workers: expected counts like 1,2 or 1r, got {args.sipwake_workers!r}")
    for name in args.systems:
        if name not in ("sipwake", "kamailio"):
            ap.error(f"unknown system {name!r}")
    for name in args.scenarios:
        if name not in SCENARIOS:
            ap.error(f"unknown scenario {name!r}")
    if args.rounds is None:
        args.rounds = 1 if args.quick else 2
    return args


def measure_all(
    args: argparse.Namespace, st: Settings, systems: list[System], results: dict[str, Any]
) -> None:
    """Every scenario, round and system, A B A B, into results["scenarios"]; then scale."""
    for scenario in (s for s in SCENARIOS if s in args.scenarios and s != "scale"):
        # A webhook variant pushes differently, and nothing else: only where calls push.
        runs_here = [
            s
            for s in systems
            if scenario in ("push", "latency") or getattr(s, "push", "apns") == "apns"
        ]
        per_system: dict[str, list[dict[str, Any]]] = {s.name: [] for s in runs_here}
        results["scenarios"][scenario] = per_system
        for rnd in range(args.rounds):
            for system in runs_here:
                log(f"== {scenario}, round {rnd + 1}/{args.rounds}: {system.name}")
                with tempfile.TemporaryDirectory(prefix="sipwake-compare-") as tmpdir:
                    try:
                        if scenario == "latency":
                            res = latency_run(system, st, Path(tmpdir))
                        else:
                            res = rate_run(scenario, system, st, Path(tmpdir))
                    except Exception as exc:  # one failed system must not end the run
                        log(traceback.format_exc())
                        res = {"error": error_text(exc)}
                per_system[system.name].append(res)
    if "scale" in args.scenarios:
        if args.quick or not any(isinstance(s, Sipwake) for s in systems):
            log("== scale: skipped (full mode with sipwake only)")
        else:
            results["scale"] = scale_run()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def on_sigterm(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)  # unwinds every context manager: children stopped

    signal.signal(signal.SIGTERM, on_sigterm)
    st = Settings(
        quick=args.quick,
        seconds=1.0 if args.quick else 4.0,
        factor=1.4 if args.quick else 1.15,
        users=1000 if args.quick else 10_000,
        probe_rate=20.0,
        probe_seconds=5.0 if args.quick else 10.0,
    )
    systems: list[System] = []
    if "sipwake" in args.systems:
        label = args.sipwake_build != ["pure"]  # the default build keeps the old names
        systems += [
            Sipwake(w, r, check_build(b), b if label else "", push)
            for b in args.sipwake_build
            for w, r in args.sipwake_workers
            for push in args.sipwake_push
        ]
    if "kamailio" in args.systems:
        systems.append(Kamailio())
    started = time.time()
    results: dict[str, Any] = {
        "machine": report.machine_info(),
        "settings": {**st.__dict__, "rounds": args.rounds, "wake_delay_s": WAKE_DELAY},
        "systems": [s.name for s in systems],
        "ladders": {k: ladder(*v, st.factor) for k, v in LADDERS.items()},
        "scenarios": {},
    }
    # Only the table goes to stdout: anything a helper prints while measuring (e.g.
    # kamailio_sut's log tail after an unexpected exit) goes with the progress.
    with contextlib.redirect_stdout(sys.stderr):
        measure_all(args, st, systems, results)
    results["wall_s"] = round(time.time() - started, 1)
    results["machine"]["loadavg_end"] = report.loadavg()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started))
    rig.RESULTS.mkdir(exist_ok=True)
    text = json.dumps(results, indent=1)
    (rig.RESULTS / f"compare-{stamp}.json").write_text(text)
    (rig.RESULTS / "compare-latest.json").write_text(text)
    print(report.markdown(results))
    report.chart(results, rig.RESULTS / "compare.png")
    log(f"wrote bench/results/compare-{stamp}.json, compare-latest.json, compare.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
