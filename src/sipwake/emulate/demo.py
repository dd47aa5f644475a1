"""``sipwake demo``: a call to a sleeping phone, woken by a VoIP push, end to end on loopback.

One process, ephemeral ports on 127.0.0.1, nothing to configure:

- the APNs emulator (HTTP/2 over TLS with a throw-away CA, checking the ES256 JWT of a
  freshly generated .p8 key), forwarding each delivered push to the phone;
- the sipwake server (embedded defaults, SQLite in a temp dir, auth off) with one
  ``[[push.apns]]`` entry pointing at the emulator;
- a simulated phone that REGISTERs with RFC 8599 push parameters and goes to sleep;
- a caller that INVITEs the phone's AoR, gets 110 Push sent, then 180 and 200 once the
  phone woke and re-registered, ACKs, talks briefly and hangs up.

Each component reports its own steps in-process (the caller's and phone's event hooks, the
emulator's record of delivered pushes, the server's application and push dispatcher seen
through thin wrappers), so the timeline needs no log parsing. The exit code is 0 only when
every step happened and each came after the steps it depends on. A few transport checks
(OPTIONS over UDP and TCP, a garbage datagram, a malformed request) follow the call."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sipwake.app import events as ev
from sipwake.config import (
    ApiConfig,
    ApnsConfig,
    AuthConfig,
    Config,
    ListenConfig,
    PushConfig,
    StorageConfig,
)
from sipwake.emulate.apns import ApnsEmulator, ApnsEmulatorConfig, ApnsKey, generate_key
from sipwake.emulate.caller import Caller, CallerConfig, CallResult
from sipwake.emulate.client import SipClient, build_request
from sipwake.emulate.phone import Phone, PhoneConfig
from sipwake.emulate.tlsutil import make_test_certs
from sipwake.server import Server

BUNDLE_ID = "com.example.phone"
TEAM_ID = "ABCDE12345"  # the team in the phone's pn-param (TEAMID.bundle.voip)
KEY_ID = "DEMOKEY001"
CALLEE = "sip:bob@127.0.0.1"
HOLD_WINDOW = 5.0  # a phone that never wakes fails the demo in seconds, not 30
CALL_TIMEOUT = 15.0
WAKE_DELAY = 0.05  # the phone's simulated launch time between the push and its REGISTER

# The call's timeline: (key, what, who saw it, the steps it must follow). The order of the
# steps in this table is the order they are printed in when they tie.
TIMELINE: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("invite_sent", "caller sends INVITE", "caller", ()),
    ("invite_at_proxy", "sipwake receives INVITE", "sipwake", ("invite_sent",)),
    ("push_sent", "sipwake sends VoIP push to APNs", "sipwake", ("invite_at_proxy",)),
    ("got_110", "caller gets 110 Push sent", "caller", ("invite_at_proxy",)),
    ("push_at_apns", "APNs receives the push", "apns", ("push_sent",)),
    ("push_accepted", "sipwake gets 200 from APNs", "sipwake", ("push_at_apns",)),
    ("push_at_phone", "phone receives the push", "phone", ("push_at_apns",)),
    ("woke", "phone wakes up", "phone", ("push_at_phone",)),
    ("registered", "sipwake accepts the phone's new REGISTER", "sipwake", ("woke",)),
    ("invite_at_phone", "INVITE delivered to the phone", "phone", ("registered",)),
    ("got_180", "caller gets 180 Ringing", "caller", ("invite_at_phone",)),
    ("got_200", "caller gets 200 OK (answered)", "caller", ("got_180",)),
    ("ack_sent", "caller sends ACK", "caller", ("got_200",)),
    ("ack_at_phone", "phone receives ACK", "phone", ("ack_sent",)),
    ("bye_sent", "caller hangs up: BYE", "caller", ("ack_sent",)),
    ("bye_at_phone", "phone receives BYE", "phone", ("bye_sent",)),
    ("bye_ok", "caller gets 200 OK to BYE", "caller", ("bye_at_phone",)),
)
_CALLER_EVENTS = {
    "INVITE sent": "invite_sent",
    "110 received": "got_110",
    "180 received": "got_180",
    "200 received": "got_200",
    "ACK sent": "ack_sent",
    "BYE sent": "bye_sent",
    "BYE answered 200": "bye_ok",
}
_PHONE_EVENTS = {
    "woke": "woke",
    "INVITE received": "invite_at_phone",
    "ACK received": "ack_at_phone",
    "BYE received": "bye_at_phone",
}


@dataclass(slots=True)
class Step:
    key: str
    what: str
    by: str
    at_ms: float | None  # since the INVITE was sent; None: it never happened


@dataclass(slots=True)
class Check:
    what: str
    result: str
    ok: bool


@dataclass
class DemoReport:
    transport: str
    setup: list[str] = field(default_factory=list)
    timeline: list[Step] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    summary: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "summary": self.summary,
            "transport": self.transport,
            "setup": self.setup,
            "timeline": [asdict(s) for s in self.timeline],
            "checks": [asdict(c) for c in self.checks],
            "problems": self.problems,
        }


class Marks:
    """First time (``time.monotonic()``) each timeline step was seen."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}

    def mark(self, key: str, t: float | None = None) -> None:
        self.at.setdefault(key, time.monotonic() if t is None else t)


# -- seeing inside the components, without logs -------------------------------------------


class _Observer:
    """Notes the server's call events (app/events.py) on the timeline: the demo watches
    the server, it does not patch it."""

    def __init__(self, marks: Marks) -> None:
        self.marks = marks
        self.outcomes: list[str] = []

    def __call__(self, event: ev.CallEvent) -> None:
        marks = self.marks
        if isinstance(event, ev.CallStarted):
            marks.mark("invite_at_proxy", event.received_at)
        elif isinstance(event, ev.PushSent):
            marks.mark("push_sent", event.at)
        elif isinstance(event, ev.PushAnswered):
            self.outcomes.append(event.outcome)
            if event.outcome == "delivered":
                marks.mark("push_accepted", event.at)
        elif isinstance(event, ev.WakeRegister):
            # The woken phone's REGISTER as the registrar accepts it: the 200 is on its way
            # and the held INVITE follows it over the same flow. (The phone's own
            # "registered" event is noted a loop turn after the 200 arrives, so it can
            # trail the INVITE.)
            marks.mark("registered", event.at)


class _ObservedApns(ApnsEmulator):
    """The emulator calls ``forward`` for each push it accepted (answered 200)."""

    def __init__(self, config: ApnsEmulatorConfig, marks: Marks) -> None:
        super().__init__(config)
        self.marks = marks

    def forward(self, record: dict[str, Any]) -> None:
        self.marks.mark("push_at_apns")
        super().forward(record)


# -- the run --------------------------------------------------------------------------------


def demo_config(
    work: Path, emulator_port: int, ca_file: str, key_file: str, hold_window: float = HOLD_WINDOW
) -> Config:
    return Config(
        listen=(
            ListenConfig(transport="udp", host="127.0.0.1", port=0),
            ListenConfig(transport="tcp", host="127.0.0.1", port=0),
        ),
        storage=StorageConfig(url=f"sqlite://{work / 'sipwake.db'}"),
        auth=AuthConfig(enabled=False),
        api=ApiConfig(port=0),
        push=PushConfig(
            hold_window=hold_window,
            apns=(
                ApnsConfig(
                    name="apns-emulator",
                    bundle_id=BUNDLE_ID,
                    team_id=TEAM_ID,
                    key_id=KEY_ID,
                    key_file=key_file,
                    base_url=f"https://127.0.0.1:{emulator_port}",
                    ca_file=ca_file,
                ),
            ),
        ),
    )


async def run_demo(
    transport: str = "udp", *, phone_action: str = "answer", hold_window: float = HOLD_WINDOW
) -> DemoReport:
    """Run everything once and report. ``phone_action`` and ``hold_window`` let tests
    make it fail (a phone that ignores the push, a short hold)."""
    report = DemoReport(transport)
    t_start = time.monotonic()

    def setup(line: str) -> None:
        report.setup.append(f"{(time.monotonic() - t_start) * 1000:7.1f} ms  {line}")

    with tempfile.TemporaryDirectory(prefix="sipwake-demo-") as tmp:
        work = Path(tmp)
        certs = make_test_certs(work / "certs")
        key_file, public_key = generate_key(work)
        marks = Marks()
        emulator = _ObservedApns(
            ApnsEmulatorConfig(
                cert_file=str(certs.cert_file),
                key_file=str(certs.key_file),
                keys={KEY_ID: ApnsKey(TEAM_ID, public_key)},
                topics={BUNDLE_ID},
            ),
            marks,
        )
        await emulator.start()
        try:
            setup(f"APNs emulator on https://127.0.0.1:{emulator.port} (HTTP/2, TLS, JWT checked)")
            config = demo_config(
                work, emulator.port, str(certs.ca_file), str(key_file), hold_window
            )
            server = Server(config)
            try:
                await server.start()
                await _with_server(
                    server,
                    emulator,
                    transport=transport,
                    phone_action=phone_action,
                    marks=marks,
                    report=report,
                    setup=setup,
                )
            finally:
                await server.stop()
        finally:
            await emulator.close()
    return report


async def _with_server(
    server: Server,
    emulator: ApnsEmulator,
    *,
    transport: str,
    phone_action: str,
    marks: Marks,
    report: DemoReport,
    setup: Callable[[str], None],
) -> None:
    setup("sipwake on " + " ".join(str(b) for b in server.bound) + ", push: apns -> emulator")
    assert server.calls is not None
    observer = _Observer(marks)
    server.calls.observers.add(observer)

    phone = Phone(
        PhoneConfig(
            server=server.address(transport),
            transport=transport,
            param=f"{TEAM_ID}.{BUNDLE_ID}.voip",
            wake_delay=WAKE_DELAY,
            action=phone_action,
        )
    )
    caller = Caller(CallerConfig(server=server.address("udp"), target=CALLEE))
    try:
        await phone.start()
        # Stands in for Apple delivering to the device: the emulator POSTs each push here.
        emulator.config.forward_url = phone.push_url
        status = await phone.register()
        if not 200 <= status < 300:
            report.problems.append(f"the phone could not register: {status}")
            return
        setup(f"phone registered over {transport.upper()} with pn-prid {phone.config.token[:12]}…")
        await phone.sleep()
        setup("phone asleep: socket closed, reachable by push only")

        phone.on_event = lambda t, what: _phone_event(marks, t, what)
        caller.on_event = lambda t, what: _caller_event(marks, t, what)
        await caller.open()
        try:
            async with asyncio.timeout(CALL_TIMEOUT):
                result = await caller.call()
                if result.status < 300:
                    # The phone's own view of the BYE may trail the caller's 200 by a hair.
                    await phone.wait_for("BYE received", 2.0)
        except TimeoutError:
            result = CallResult(408, "demo timed out", None)
        _judge(report, marks, result, observer.outcomes)
    finally:
        await caller.close()
        await phone.close()
    await _checks(server, report)


def _phone_event(marks: Marks, t: float, what: str) -> None:
    if what.startswith("push received"):
        marks.mark("push_at_phone", t)
    elif what in _PHONE_EVENTS:
        marks.mark(_PHONE_EVENTS[what], t)


def _caller_event(marks: Marks, t: float, what: str) -> None:
    if what in _CALLER_EVENTS:
        marks.mark(_CALLER_EVENTS[what], t)


def _judge(report: DemoReport, marks: Marks, result: CallResult, outcomes: list[str]) -> None:
    """Fill the timeline and say what went wrong, if anything."""
    at = marks.at
    t0 = at.get("invite_sent")
    for key, what, by, _ in TIMELINE:
        t = at.get(key)
        ms = round((t - t0) * 1000, 1) if t is not None and t0 is not None else None
        report.timeline.append(Step(key, what, by, ms))
    if not 200 <= result.status < 300:
        report.problems.append(f"the call failed: {result.status} {result.reason}")
    elif result.bye_status != 200:
        report.problems.append(f"the BYE was answered {result.bye_status}, not 200")
    for outcome in outcomes:
        if outcome != "delivered":
            report.problems.append(f"a push was not delivered: {outcome}")
    labels = {key: what for key, what, _, _ in TIMELINE}
    missing = [what for key, what, _, _ in TIMELINE if key not in at]
    if missing:
        # The first gap explains the rest: everything after it depends on it.
        more = f" (nor {len(missing) - 1} later steps)" if len(missing) > 1 else ""
        report.problems.append(f"never happened: {missing[0]}{more}")
    for key, what, _, after in TIMELINE:
        if key not in at:
            continue
        for before in after:
            if before in at and at[before] > at[key]:
                report.problems.append(f"out of order: {what!r} came before {labels[before]!r}")
    if report.ok:
        assert t0 is not None
        setup_ms = (at["got_200"] - t0) * 1000
        push_ms = (at["push_accepted"] - at["push_sent"]) * 1000
        wake_ms = (at["registered"] - at["push_at_phone"]) * 1000
        report.summary = (
            f"push-woken call set up in {setup_ms:.0f} ms (INVITE to 200 OK): "
            f"push round trip {push_ms:.0f} ms, phone wake-up and re-REGISTER {wake_ms:.0f} ms"
            f" (of which {WAKE_DELAY * 1000:.0f} ms simulated app launch)"
        )
    # Tied steps keep the table's order; those that never happened go last.
    report.timeline.sort(key=lambda s: (s.at_ms is None, s.at_ms or 0.0))


# -- checks after the call: the transport foundations ------------------------------------------


async def _checks(server: Server, report: DemoReport) -> None:
    def check(what: str, result: str, ok: bool) -> None:
        report.checks.append(Check(what, result, ok))
        if not ok:
            report.problems.append(f"check failed: {what}: {result}")

    try:
        for transport in ("UDP", "TCP"):
            host, port = server.address(transport)
            client = await SipClient(transport, (host, port)).open()
            try:
                resp = await client.exchange(_options(transport, client.local, host, port))
                check(
                    f"OPTIONS over {transport}", f"{resp.status} {resp.reason}", resp.status == 200
                )
            finally:
                await client.close()

        host, port = server.address("UDP")
        dropped_before = server.engine.stats.dropped
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
            raw.sendto(b"\x00\xffgarbage that is not SIP\r\n\r\n", (host, port))
        dropped = 0
        for _ in range(50):  # the datagram is handled within a loop turn or two
            await asyncio.sleep(0.002)
            dropped = server.engine.stats.dropped - dropped_before
            if dropped:
                break
        check("garbage datagram", f"dropped and counted ({dropped})", dropped == 1)

        client = await SipClient("UDP", (host, port)).open()
        try:
            bad = _options("UDP", client.local, host, port).replace(
                b"CSeq: 1 OPTIONS", b"CSeq: one OPTIONS"
            )
            resp = await client.exchange(bad)
            check(
                "malformed request (bad CSeq)", f"{resp.status} {resp.reason}", resp.status == 400
            )
        finally:
            await client.close()
    except (OSError, TimeoutError) as exc:
        check("transport checks", f"no answer: {exc!r}", False)


def _options(transport: str, local: tuple[str, int], host: str, port: int) -> bytes:
    return build_request(
        "OPTIONS",
        f"sip:{host}:{port}",
        transport=transport,
        local=local,
        from_uri=f"sip:demo@{local[0]}",
        to_uri=f"sip:{host}:{port}",
    )


# -- output -----------------------------------------------------------------------------------


def render(report: DemoReport) -> str:
    out = [f"sipwake demo: a call to a sleeping phone ({report.transport.upper()}), woken by push"]
    out += ["", "setup"] + [f"  {line}" for line in report.setup]
    out += ["", "the call (ms since the INVITE)"]
    for s in report.timeline:
        at = f"{s.at_ms:7.1f} ms" if s.at_ms is not None else "   missing"
        out.append(f"  {at}  {s.by:<8} {s.what}")
    if report.checks:
        out += ["", "checks"]
        for c in report.checks:
            out.append(f"  {'ok  ' if c.ok else 'FAIL'}  {c.what:<30} {c.result}")
    out.append("")
    if report.ok:
        out.append(report.summary)
    else:
        out.append("demo FAILED:")
        out += [f"  - {p}" for p in report.problems]
    return "\n".join(out)


def main(json_output: bool = False, transport: str = "udp") -> int:
    try:
        report = asyncio.run(run_demo(transport.lower()))
    except (OSError, ValueError) as exc:
        # Start-up failed (no free port, unreadable key...): say so without a traceback.
        print(f"sipwake demo failed: {exc}", file=sys.stderr)
        return 1
    if json_output:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(render(report))
    if not report.ok:
        print("sipwake demo failed: " + "; ".join(report.problems), file=sys.stderr)
    return 0 if report.ok else 1
