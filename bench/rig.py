"""Shared set-up for the SIPp benchmarks (bench_register, bench_calls, bench_push_calls and
the side-by-side runner compare.py): sipwake's config and process, the store it uses, the
SIPp callee, registering users, the wake relay and the per-step SIPp runs.

Everything that starts a process is a context manager that stops it on the way out,
whatever happened inside."""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.harness import (
    Child,
    RunningServer,
    SippResult,
    Uas,
    free_port,
    keys,
    run_sipp,
    spawn,
    start_uas,
    write_config,
)

from bench import cpu
from bench.sipp_rate import Step

SCENARIOS = Path(__file__).parent / "scenarios"
RESULTS = Path(__file__).parent / "results"
RELAY = Path(__file__).parent / "wake_relay.py"
DOMAIN = "127.0.0.1"
REGISTER_RATE = 1000  # set-up registrations: well under any clean REGISTER rate
BUNDLE_ID = "com.example.app"  # pn-param ABCDE12345.com.example.app.voip in the scenarios

CONFIG = """
[server]
domains = ["{domain}"]
log_level = "warning"
[[listen]]
transport = "udp"
host = "127.0.0.1"
port = {port}
[storage]
url = "{url}"
[auth]
enabled = false
"""

PUSH_CONFIG = """
[api]
port = {api_port}
[push]
hold_window = 30.0
# One SIPp caller address places every call: the push budget (a guard against spam) off.
max_per_device = 0.0
max_per_source = 0.0
"""


def sipwake_config(url: str, *, workers: int = 1, push: str = "") -> str:
    """One UDP listener, digest auth off (the benchmarks measure the registrar, the proxy
    and the push path, not the challenge round trip), log level warning. ``push`` is a
    [[push.apns]] entry (ApnsEmulator.config) or a [[push.webhook]] one (webhook_push): it
    also turns the API on, since push payloads carry a signed decline link as in
    production.

    Ports: 0 (the kernel picks) for one process; N workers sharing ports with
    SO_REUSEPORT must be told the same ones (sipwake refuses port 0 then), so free ones
    are chosen here."""
    text = CONFIG.format(domain=DOMAIN, url=url, port=free_port() if workers > 1 else 0)
    if not push:
        return text
    api_port = free_port(socket.SOCK_STREAM) if workers > 1 else 0
    return text + PUSH_CONFIG.format(api_port=api_port) + push


# The like-for-like of Kamailio's push (bench/kamailio/push.cfg: http_client POSTs JSON to
# the wake relay): sipwake's webhook provider POSTing to the same relay. Devices register
# with pn-provider=WEBHOOK_PROVIDER for it.
WEBHOOK_PROVIDER = "relay"
WEBHOOK_CONFIG = """
[[push.webhook]]
provider = "{provider}"
url = "{url}"
secret = "bench-webhook-secret"
"""


def webhook_push(url: str) -> str:
    """A [[push.webhook]] entry (for ``sipwake_config``'s ``push``) POSTing to ``url``."""
    return WEBHOOK_CONFIG.format(provider=WEBHOOK_PROVIDER, url=url)


def storage_label(spec: str) -> str:
    """``sqlite``, ``memory`` or the URL's scheme (``redis``): for result names."""
    return spec.split(":", 1)[0] if ":" in spec else spec


@contextlib.contextmanager
def storage(spec: str, db: Path) -> Iterator[str]:
    """The storage URL for ``spec``: ``sqlite`` (a file at ``db``), ``memory``, or a
    ``redis://`` URL. A Redis store gets a fresh key prefix under the URL's own (every
    run starts empty, so each REGISTER is a new AoR) and its keys are deleted afterwards."""
    if spec == "sqlite":
        yield f"sqlite:///{db}"
        return
    if spec == "memory":
        yield "memory://"
        return
    if not spec.startswith(("redis://", "rediss://")):
        raise ValueError(f"storage {spec!r}: expected sqlite, memory or a redis:// URL")
    base, _, query = spec.partition("?")
    options = dict(parse_qsl(query))
    prefix = options.get("prefix", "sipwake:") + f"bench-{secrets.token_hex(4)}:"
    try:
        yield f"{base}?{urlencode({**options, 'prefix': prefix})}"
    finally:
        delete_prefix(base, options, prefix)


def delete_prefix(base: str, options: dict[str, str], prefix: str) -> None:
    """SCAN + DEL every key under ``prefix``."""
    import redis

    passthrough = {k: v for k, v in options.items() if k not in ("prefix", "timeout")}
    url = base + ("?" + urlencode(passthrough) if passthrough else "")
    client = redis.Redis.from_url(url)
    pattern = re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + "*"  # SCAN MATCH is a glob
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                client.delete(*batch)
                batch.clear()
        if batch:
            client.delete(*batch)
    finally:
        client.close()


@contextlib.contextmanager
def sipwake(
    tmp: Path,
    config_text: str,
    *,
    workers: int = 1,
    ready_timeout: float = 15.0,
    python: str = sys.executable,
) -> Iterator[RunningServer]:
    """``sipwake serve -c`` (with ``--workers N`` when N > 1) until its ready line, run by
    ``python`` (another venv's, for another build: compare.py --sipwake-build).

    harness.serve takes no extra arguments, hence this variant. On the way out the
    server gets SIGTERM (harness.Child.stop) and any worker still alive after its
    parent has exited gets SIGKILL."""
    cmd = [python, "-m", "sipwake", "serve", "--config", str(tmp / "sipwake.toml")]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    write_config(tmp / "sipwake.toml", config_text)
    child = spawn(cmd, lambda line: line.startswith("sipwake ready:"), timeout=ready_timeout)
    addresses: dict[str, tuple[str, int]] = {}
    for line in child.output:
        if line.startswith("sipwake ready:"):  # "sipwake ready: udp:127.0.0.1:5060 api:..."
            for m in re.finditer(r"(\w+):\[?([0-9a-fA-F.:]+?)\]?:(\d+)(?:\s|$)", line[14:]):
                addresses[m.group(1)] = (m.group(2), int(m.group(3)))
    try:
        yield RunningServer(child.proc, addresses, tmp / "sipwake.toml", child.output)
    finally:
        procs = [(pid, cpu.start_time(pid)) for pid in cpu.descendants(child.proc.pid)]
        child.stop()
        cpu.kill_leftovers(procs)


@contextlib.contextmanager
def uas(tmp: Path, scenario: str = "uas_answer_fast.xml") -> Iterator[Uas]:
    """One SIPp UAS (``scenario``: answers at once) for every registered user, its
    statistics in ``tmp/uas.csv`` (uas_failures). -m and -timeout: it outlives any run
    and is stopped on the way out."""
    callee = start_uas(
        SCENARIOS / scenario,
        calls=100_000_000,
        timeout=3600,
        extra=["-trace_stat", "-stf", str(tmp / "uas.csv"), "-fd", "1"],
    )
    try:
        yield callee
    finally:
        if callee.proc.poll() is None:
            callee.proc.terminate()
        try:
            callee.proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            callee.proc.kill()
            callee.proc.communicate()


def uas_failures(tmp: Path) -> int | None:
    """FailedCall(C) from the UAS's last statistics row (-trace_stat -fd 1), if any."""
    stat_file = tmp / "uas.csv"
    if not stat_file.exists():
        return None
    rows = stat_file.read_text().splitlines()
    if len(rows) < 2:
        return None
    col = dict(zip(rows[0].split(";"), rows[-1].split(";"), strict=False))
    return int(col.get("FailedCall(C)", 0) or 0)


def write_users(path: Path, start: int, count: int, *, push: bool) -> None:
    """SIPp injection file: users ``user{start}`` .. ``user{start+count-1}``, in order.
    With ``push``, each line also carries a 64-hex APNs token and an instance UUID (the
    ones wake_relay.py's token_of/instance_of compute for the same index)."""
    lines = ["SEQUENTIAL"]
    for i in range(start, start + count):
        if push:
            lines.append(f"user{i};{i:064x};{i:08x}-7dec-11d0-a765-00a0c91e6bf6;")
        else:
            lines.append(f"user{i};")
    path.write_text("\n".join(lines) + "\n")


def write_callees(path: Path, start: int, count: int) -> None:
    """SIPp injection file: each call picks one of ``user{start}``.. at random."""
    path.write_text("RANDOM\n" + "".join(f"user{i};\n" for i in range(start, start + count)))


def register_users(
    tmp: Path,
    target: tuple[str, int],
    *,
    start: int,
    count: int,
    contact_port: int,
    push: bool,
    provider: str = "apns",
) -> float:
    """Register ``user{start}``.. through the server with SIPp at REGISTER_RATE, their
    Contacts at ``contact_port``; with ``push`` as sleeping iOS apps register
    (scenarios/register_push_inf.xml: RFC 8599 parameters, +sip.instance, reg-id), with
    ``pn-provider=<provider>``.
    Returns the seconds taken; raises if any REGISTER failed (a set-up problem)."""
    csv = tmp / f"register-{start}.csv"
    write_users(csv, start, count, push=push)
    scen = "register_push_inf.xml" if push else "register_inf.xml"
    res = run_sipp(
        SCENARIOS / scen,
        target,
        calls=count,
        rate=REGISTER_RATE,
        limit=REGISTER_RATE,
        timeout=count / REGISTER_RATE * 3 + 10,
        workdir=tmp,
        extra=[
            "-inf",
            str(csv),
            *keys(domain=DOMAIN, contact_port=contact_port, pn_provider=provider),
        ],
    )
    if res.successful != count:
        raise RuntimeError(
            f"set-up: {res.successful}/{count} {scen} REGISTERs succeeded:\n{res.output[-2000:]}"
        )
    return res.elapsed


def call_steps(
    scenario: str,
    target: tuple[str, int],
    callees: Path,
    seconds: float,
    tmp: Path,
    *,
    transport: str = "udp",
) -> Callable[[int, int], SippResult]:
    """A step_search ``run(rate, calls)`` for a SIPp caller scenario (uac_call_inf.xml,
    uac_push_call_inf.xml) calling RANDOM users of ``callees``. -l at 2 s worth of calls:
    a call takes milliseconds (plus the wake delay) when the server keeps up, so the cap
    only bites -- and the achieved rate drops -- when it does not."""

    def run(rate: int, calls: int) -> SippResult:
        return run_sipp(
            SCENARIOS / scenario,
            target,
            calls=calls,
            rate=rate,
            limit=rate * 2,
            timeout=seconds * 4 + 20,
            workdir=tmp,
            transport=transport,
            extra=["-inf", str(callees), *keys(domain=DOMAIN)],
        )

    return run


def register_steps(
    target: tuple[str, int],
    tmp: Path,
    seconds: float,
    *,
    push: bool,
    first_user: int = 0,
    transport: str = "udp",
) -> Callable[[int, int], SippResult]:
    """A step_search ``run(rate, calls)`` for REGISTER/s: each step registers a fresh
    range of users (so every REGISTER creates a binding, RFC 3261 §10.3 step 8, never a
    refresh), Contacts at a port nobody listens on (nothing is called)."""
    scen = SCENARIOS / ("register_push_inf.xml" if push else "register_inf.xml")
    next_user = first_user

    def run(rate: int, calls: int) -> SippResult:
        nonlocal next_user
        csv = tmp / f"users-{next_user}.csv"
        write_users(csv, next_user, calls, push=push)
        next_user += calls
        return run_sipp(
            scen,
            target,
            calls=calls,
            rate=rate,
            limit=rate,
            timeout=seconds * 4 + 10,
            workdir=tmp,
            transport=transport,
            extra=["-inf", str(csv), *keys(domain=DOMAIN, contact_port=5999, pn_provider="apns")],
        )

    return run


@contextlib.contextmanager
def relay(
    target: tuple[str, int],
    users: int,
    contact_port: int,
    *,
    delay: float,
    port: int,
    sockets: int = 1,
    provider: str = "apns",
) -> Iterator[Child]:
    """bench/wake_relay.py on HTTP ``port``: ``delay`` after each push it receives, the
    device's wake REGISTER goes to ``target`` with its Contact at ``contact_port`` (and
    ``pn-provider=<provider>``, as the device registered)."""
    child = spawn(
        [
            sys.executable,
            str(RELAY),
            "--server",
            f"{target[0]}:{target[1]}",
            "--users",
            str(users),
            "--contact-port",
            str(contact_port),
            "--delay",
            str(delay),
            "--port",
            str(port),
            "--sockets",
            str(sockets),
            "--provider",
            provider,
        ],
        lambda line: line.startswith("wake relay on"),
        timeout=60,
    )
    try:
        yield child
    finally:
        child.stop()


def sipp_transport(workers: int) -> str:
    """SIPp's UDP mode for a server with ``workers`` processes: one socket for the whole
    run ("udp", SIPp -t u1) for one process, a socket per call ("udp-per-call", -t un)
    for several. SO_REUSEPORT spreads clients by source address, so a single socket
    would load one worker only: many sockets stand for many phones."""
    return "udp" if workers <= 1 else "udp-per-call"


def relay_sockets(workers: int) -> int:
    """Wake relay sockets for a server with ``workers`` processes (see sipp_transport)."""
    return 1 if workers <= 1 else 64


def write_result(name: str, record: dict[str, Any], *, workers: int = 1) -> Path:
    """``bench/results/<name>[_x<workers>].json``: ``record`` with the date first."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / (f"{name}_x{workers}.json" if workers > 1 else f"{name}.json")
    path.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), **record}, indent=2))
    return path


def sustained_best(steps: list[Step], *, allow_retrans: bool, ratio: float = 0.85) -> int:
    """The highest rate, climbing from the lowest step, that was clean AND actually
    achieved: step_search's "clean" only means nothing failed, and a server that falls
    behind can still finish every call late (SIPp's -l cap then throttles the senders),
    which is not that rate. The 15 % slack covers SIPp's start-up and last responses,
    counted in the elapsed time."""
    best = 0
    for st in steps:
        if not st.clean or (st.retransmissions and not allow_retrans):
            break
        if st.achieved < ratio * st.rate:
            break
        best = st.rate
    return best
