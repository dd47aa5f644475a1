"""End to end, push wake-up: SIPp caller -> sipwake -> APNs emulator (TLS, HTTP/2, real
ES256 JWT checks) -> forwarded push -> `sipwake phone` wakes, registers from a new port,
and the held call is delivered over that connection."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sipwake.emulate.tlsutil import make_test_certs
from tests.e2e.harness import (
    PHONE_PARAM,
    ApnsEmulator,
    Child,
    RunningServer,
    apns_emulator,
    free_port,
    keys,
    loopback_config,
    run_sipp,
    scenario,
    serve,
    start_phone,
    start_uas,
    wait_output,
)
from tests.e2e.probe import Prober

pytestmark = pytest.mark.e2e

DOMAIN = "127.0.0.1"
TOKEN_A = "a1" * 32
TOKEN_B = "b2" * 32


NO_AUTH = "[auth]\nenabled = false"


def push_config(
    emu: ApnsEmulator,
    tls: tuple[str, str] | None = None,
    auth: str = "",
    storage: str = "memory://",
    drain_timeout: float | None = None,
    *,
    extra: str = "",
    **push: object,
) -> str:
    settings = "\n".join(f"{k} = {json.dumps(v)}" for k, v in push.items())
    tls_part = (
        f'[tls]\ncert_file = "{tls[0]}"\nkey_file = "{tls[1]}"\n'
        '[[listen]]\ntransport = "tls"\nhost = "127.0.0.1"\nport = 0\n'
        if tls
        else ""
    )
    return loopback_config(
        storage=storage,
        extra=f"{tls_part}{auth or NO_AUTH}\n{extra}\n[push]\n{settings}\n{emu.config()}",
        server="" if drain_timeout is None else f"drain_timeout = {drain_timeout}",
    )


class Relay:
    """Stands in for APNs' delivery to devices: the emulator forwards every push here,
    and the relay passes it on to the phone whose token it is addressed to."""

    def __init__(self) -> None:
        self.routes: dict[str, int] = {}
        relay = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                token = str(json.loads(body).get("token", "")).lower()
                port = relay.routes.get(token)
                self.send_response(200 if port else 404)
                self.end_headers()
                if port:
                    req = urllib.request.Request(
                        f"http://127.0.0.1:{port}/push",
                        body,
                        {"content-type": "application/json"},
                    )
                    with contextlib.suppress(OSError):
                        urllib.request.urlopen(req, timeout=5).close()

            def log_message(self, *args: object) -> None:
                return None

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.http.server_address[1]
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@dataclass
class Rig:
    server: RunningServer
    emu: ApnsEmulator
    relay: Relay
    tmp: Path
    children: list[Child] = field(default_factory=list)
    stopped: bool = False  # the test stopped the server itself

    def phone(self, token: str, *args: str, transport: str = "udp", ready: str = "slept") -> Child:
        port = free_port(socket.SOCK_STREAM)
        self.relay.routes[token] = port
        return self.keep(
            start_phone(
                self.server.addr(transport),
                port,
                "--token",
                token,
                *args,
                transport=transport,
                ready=ready,
            )
        )

    def call(
        self,
        scen: str | Path = "uac_call.xml",
        transport: str = "udp",
        user: str = "bob",
        delay_ms: int = 100,
        **kw: object,
    ):  # type: ignore[no-untyped-def]
        return run_sipp(
            scen,
            self.server.addr(transport),
            transport=transport,
            extra=["-s", user, "-d", str(delay_ms), *keys(domain=DOMAIN)],
            **kw,
        )

    def keep(self, child: Child) -> Child:
        """Stopped with the rig, even when the test fails first."""
        self.children.append(child)
        return child

    def pushes(self) -> list[dict[str, object]]:
        return self.emu.pushes()


@contextmanager
def rig(
    tmp: Path,
    *emu_args: str,
    tls: tuple[str, str] | None = None,
    auth: str = "",
    storage: str = "memory://",
    extra: str = "",
    **push: object,
) -> Iterator[Rig]:
    relay = Relay()
    try:
        forward = f"http://127.0.0.1:{relay.port}/"
        with (
            apns_emulator("--forward-url", forward, *emu_args) as emu,
            serve(push_config(emu, tls, auth, storage, extra=extra, **push), tmp) as server,
        ):
            r = Rig(server, emu, relay, tmp)
            try:
                yield r
                assert r.stopped or server.alive()
            finally:
                for child in r.children:
                    child.stop()
    finally:
        relay.close()


def events(phone: Child) -> str:
    phone.stop()
    return phone.text()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_sleeping_phone_is_woken_and_takes_the_call(tmp_path: Path, transport: str) -> None:
    with rig(tmp_path) as r:
        phone = r.phone(TOKEN_A, transport=transport)
        res = r.call(scenario("uac_call.xml", tmp_path), transport=transport)
        log = events(phone)
        assert res.returncode == 0 and res.successful == 1, res.output + log
        # The INVITE leaves once the wake REGISTER is decided, ahead of its 200 (RFC 8599
        # §5.6.2), so the phone may log either first; everything else is strictly ordered.
        order = ["slept", "push received", "woke", "INVITE received", "200 sent",
                 "ACK received", "BYE received"]  # fmt: skip
        positions = [log.find(e) for e in order]
        assert all(p >= 0 for p in positions) and positions == sorted(positions), log
        assert log.find("woke") < log.find("registered (wake)"), log
        pushes = r.pushes()
        assert len(pushes) == 1
        push = pushes[0]
        headers = {k.lower(): v for k, v in dict(push["headers"]).items()}  # type: ignore[call-overload]
        assert headers["apns-push-type"] == "voip"
        assert headers["apns-topic"] == "com.example.phone.voip"
        assert headers["apns-priority"] == "10"
        payload = push["payload"]
        assert isinstance(payload, dict)
        # Stale-push guard: the expiry the app checks is the one APNs enforces.
        assert int(headers["apns-expiration"]) == int(payload["expires_at"])
        assert 25 <= payload["expires_at"] - payload["sent_at"] <= 31
        assert payload["callee"] == "sip:bob@127.0.0.1"
        assert payload["caller"]["uri"].startswith("sip:caller@")
        assert payload["decline_url"].startswith("http://127.0.0.1:")


def test_wake_register_is_served_while_overloaded(tmp_path: Path) -> None:
    """Issue 15 follow-up: the held call alone puts the server at its bound
    (``max_held_calls = 1``), so it sheds new requests; the woken phone's REGISTER
    completes that call and is served (before: 503, and the call ended 480 when the hold
    window was over), while another user's REGISTER gets 503."""
    overload = "[overload]\nmax_held_calls = 1\nretry_after = 9"
    with rig(tmp_path, extra=overload, hold_window=5.0, cancel_grace=60.0) as r:
        phone = r.phone(TOKEN_A)
        # A second device that never wakes: it stays owed the INVITE + CANCEL, so the call
        # stays held through its cancel grace (a call nobody is owed is forgotten at once).
        r.phone(TOKEN_B, "--action", "ignore")
        res = r.call(scenario("uac_call.xml", tmp_path))
        log = events(phone)
        assert res.returncode == 0 and res.successful == 1, res.output + log
        assert "registered (wake)" in log, log
        # Still overloaded: the call stays held through its cancel grace.
        with Prober(r.server.addr("udp"), "127.0.0.60") as other:
            contact = f"<sip:alice@127.0.0.60:{other.port}>"
            answer = other.register("alice", DOMAIN, contact=contact)
        assert (answer.status, answer.header("Retry-After")) == (503, "9")


def test_caller_gets_110_push_sent(tmp_path: Path) -> None:
    strict = scenario("uac_call.xml", tmp_path)
    strict.write_text(
        strict.read_text().replace(
            '<recv response="110" optional="true" />', '<recv response="110" />'
        )
    )
    with rig(tmp_path) as r:
        phone = r.phone(TOKEN_A)
        res = r.call(strict)
        log = events(phone)
        assert res.returncode == 0, res.output + log


def test_nobody_wakes_gives_480_after_the_hold_window(tmp_path: Path) -> None:
    with rig(tmp_path, hold_window=1.0) as r:
        phone = r.phone(TOKEN_A, "--action", "ignore")
        t0 = time.monotonic()
        res = r.call(scenario("uac_reject.xml", tmp_path, expect="480"))
        elapsed = time.monotonic() - t0
        log = events(phone)
        assert res.returncode == 0, res.output + log
        assert 0.9 <= elapsed < 5, elapsed
        assert "push received" in log and "INVITE received" not in log


@pytest.mark.parametrize(("reason", "status"), [("busy", "486"), ("decline", "603")])
def test_decline_link_in_the_push_ends_the_call(tmp_path: Path, reason: str, status: str) -> None:
    with rig(tmp_path) as r:
        phone = r.phone(TOKEN_A, "--action", "decline-url", "--decline-reason", reason)
        res = r.call(scenario("uac_reject.xml", tmp_path, expect=status))
        assert wait_output(phone, "decline posted")
        log = events(phone)
        assert res.returncode == 0, res.output + log
        assert "decline posted 200" in log, log
        assert "registered (wake)" not in log


def test_caller_cancel_while_held_then_late_wake_gets_invite_and_cancel(tmp_path: Path) -> None:
    with rig(tmp_path, send_180=True) as r:
        phone = r.phone(TOKEN_A, "--wake-delay", "0.6")
        res = r.call("uac_cancel.xml", delay_ms=300)
        assert res.returncode == 0, res.output
        # The woken phone registers after the caller left: INVITE, then CANCEL at once.
        assert wait_output(phone, "CANCEL received", 10), phone.text()
        # Either the CANCEL beat the phone's 200 (487), or the 200 crossed it and sipwake
        # ACKs and BYEs it: the call ends on the phone either way, well before 32 s.
        assert wait_output(phone, "call ended", 5), phone.text()
        log = events(phone)
        assert log.find("INVITE received") < log.find("CANCEL received")


@pytest.mark.parametrize(
    ("args", "expect", "cause"),
    [
        ((), "480", 'cause=480;text="No answer"'),  # the hold window ended (issue 10.4)
        (("--action", "busy"), "486", "cause=486"),  # the other phone was busy
    ],
)
def test_late_wake_after_the_call_ended_gets_invite_then_cancel_with_reason(
    tmp_path: Path, args: tuple[str, ...], expect: str, cause: str
) -> None:
    """A phone woken for a call that ended before it registered gets the INVITE and a
    CANCEL naming why, whatever ended it (docs/app-developers.md, CallKit)."""
    with rig(tmp_path, hold_window=1.0) as r:
        late = r.phone(TOKEN_A, "--wake-delay", "2.0")
        if args:
            r.phone(TOKEN_B, *args)  # wakes at once and ends the call its way
        res = r.call(scenario("uac_reject.xml", tmp_path, expect=expect))
        assert res.returncode == 0, res.output + late.text()
        assert wait_output(late, "CANCEL received", 10), late.text()
        log = events(late)
        assert log.find("INVITE received") < log.find("CANCEL received"), log
        assert cause in log, log


def test_open_but_silent_connection_is_pushed_and_the_woken_phone_answers(tmp_path: Path) -> None:
    """Issue 10.7: a phone whose TCP connection stays open but answers nothing (an app
    frozen) is pushed after push.live_timeout, not left to Timer C; woken, it registers
    over a new connection and takes the call."""
    with rig(tmp_path) as r:  # push.live_timeout: 2 s by default
        phone = r.phone(TOKEN_A, "--stay-awake", "--frozen", transport="tcp", ready="registered")
        t0 = time.monotonic()
        res = r.call(scenario("uac_call.xml", tmp_path), transport="udp")
        elapsed = time.monotonic() - t0
        log = events(phone)
        assert res.returncode == 0 and res.successful == 1, res.output + log
        assert elapsed < 10, elapsed  # not Timer C's 180 s
        order = ["request ignored (frozen)", "push received", "woke", "INVITE received", "200 sent"]
        positions = [log.find(e) for e in order]
        assert all(p >= 0 for p in positions) and positions == sorted(positions), log
        assert len(r.pushes()) == 1


def test_sigterm_drains_refuses_new_calls_then_answers_every_caller(tmp_path: Path) -> None:
    """SIGTERM with a call held for a phone that does not wake: a new INVITE gets 503 at
    once, the held caller gets 503 + Retry-After when server.drain_timeout is over, and
    the server exits cleanly (issue 11)."""
    with rig(tmp_path, drain_timeout=2.0) as r:
        r.phone(TOKEN_A, "--action", "ignore")
        refused: list[object] = []

        def terminate_then_call() -> None:
            time.sleep(1.0)
            r.server.proc.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            refused.append(r.call(scenario("uac_reject.xml", tmp_path, expect="503")))

        thread = threading.Thread(target=terminate_then_call)
        t0 = time.monotonic()
        thread.start()
        held = r.call(scenario("uac_reject.xml", tmp_path, expect="503"))
        elapsed = time.monotonic() - t0
        thread.join()
        assert held.returncode == 0, held.output
        assert 2.5 <= elapsed < 10, elapsed  # SIGTERM at 1 s + the 2 s drain
        [late] = refused
        assert late.returncode == 0, late.output  # type: ignore[attr-defined]
        r.stopped = True
        assert r.server.proc.wait(10) == 0
        assert any("drained: 1 callers answered 503" in line for line in r.server.output)


def test_sigterm_lets_a_held_call_finish(tmp_path: Path) -> None:
    with rig(tmp_path, drain_timeout=10.0) as r:
        phone = r.phone(TOKEN_A, "--wake-delay", "1.5")
        timer = threading.Timer(0.5, r.server.proc.send_signal, (signal.SIGTERM,))
        timer.start()
        res = r.call(scenario("uac_call.xml", tmp_path))
        timer.join()
        log = events(phone)
        assert res.returncode == 0 and res.successful == 1, res.output + log
        r.stopped = True
        assert r.server.proc.wait(10) == 0


def test_dead_token_is_removed_and_caller_answered_at_once(tmp_path: Path) -> None:
    with rig(tmp_path, "--token-error", f"{TOKEN_A}=410:Unregistered", hold_window=20.0) as r:
        phone = r.phone(TOKEN_A)
        t0 = time.monotonic()
        res = r.call(scenario("uac_reject.xml", tmp_path, expect="480"))
        assert res.returncode == 0, res.output
        assert time.monotonic() - t0 < 5  # not the 20 s hold window
        # The push target is gone: the next call is not held at all.
        t1 = time.monotonic()
        res = r.call(scenario("uac_reject.xml", tmp_path, expect="480"))
        assert res.returncode == 0, res.output
        assert time.monotonic() - t1 < 2
        assert len(r.pushes()) == 0  # the emulator only records delivered pushes
        events(phone)


def test_push_service_failing_ends_the_call_cleanly(tmp_path: Path) -> None:
    with rig(tmp_path, "--fail-rate", "1.0", hold_window=2.0) as r:
        phone = r.phone(TOKEN_A)
        t0 = time.monotonic()
        res = r.call(scenario("uac_reject.xml", tmp_path, expect="480"))
        elapsed = time.monotonic() - t0
        log = events(phone)
        assert res.returncode == 0, res.output + log
        assert elapsed < 6, elapsed  # retried within the hold window, then a clean 480
        assert "push received" not in log


def test_live_phone_and_two_sleeping_phones_one_answers(tmp_path: Path) -> None:
    with rig(tmp_path) as r:
        live = start_uas(
            scenario(
                "uas_ring.xml",
                tmp_path,
                cancel_reason='Reason: SIP;cause=200;text="Call completed elsewhere"',
            ),
            extra=keys(user="bob"),
        )
        res = run_sipp(
            "register.xml",
            r.server.addr("udp"),
            extra=keys(
                user="bob", domain=DOMAIN, contact_port=live.port, ctransport="udp", expires=3600
            ),
        )
        assert res.returncode == 0, res.output
        answering = r.phone(TOKEN_A, "--answer-after", "0.3")
        ringing = r.phone(TOKEN_B, "--action", "ring")
        res = r.call()
        log_a = events(answering)
        rc, out = live.wait()
        assert res.returncode == 0 and res.successful == 1, res.output + log_a
        assert rc == 0, out  # the live phone got CANCEL with "Call completed elsewhere"
        assert wait_output(ringing, "CANCEL received"), ringing.text()
        log_b = events(ringing)
        assert "200 sent" in log_a
        assert "INVITE received" in log_b and "200 sent" not in log_b


@pytest.mark.parametrize("asleep", [False, True])
def test_tls_phone_live_rings_at_once_or_woken_over_new_tls_connection(
    tmp_path: Path, asleep: bool
) -> None:
    certs = make_test_certs(tmp_path / "certs")
    with rig(tmp_path, tls=(certs.cert_file, certs.key_file)) as r:
        extra = ["--ca-file", certs.ca_file, "--tls-name", "localhost"]
        if not asleep:
            extra.append("--stay-awake")
        phone = r.phone(TOKEN_A, *extra, transport="tls", ready="slept" if asleep else "registered")
        res = r.call()
        log = events(phone)
        assert res.returncode == 0 and res.successful == 1, res.output + log
        assert "INVITE received" in log and "BYE received" in log
        assert ("push received" in log) is asleep  # a live TLS connection needs no push


def test_challenged_wake_register_still_gives_exactly_one_branch(tmp_path: Path) -> None:
    """The woken phone's REGISTER gets 401, then its authenticated retry 200: two REGISTERs
    from one device during the call, exactly one INVITE to it."""
    db = tmp_path / "auth.db"
    cfg = tmp_path / "users.toml"
    cfg.write_text(f'[server]\ndomains = ["127.0.0.1"]\n[storage]\nurl = "sqlite:///{db}"\n')
    add = subprocess.run(
        [sys.executable, "-m", "sipwake", "user", "add", "bob", "-c", str(cfg),
         "--password", "pw"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert add.returncode == 0, add.stderr
    auth = '[auth]\nenabled = true\nalgorithms = ["MD5"]'
    # A caller from another domain is not challenged; the phone, a user of ours, is.
    caller = scenario("uac_call.xml", tmp_path)
    caller.write_text(caller.read_text().replace("sip:caller@[domain]", "sip:caller@example.net"))
    with rig(tmp_path, auth=auth, storage=f"sqlite:///{db}") as r:
        phone = r.phone(TOKEN_A, "--password", "pw")
        res = r.call(caller)
        log = events(phone)
        assert res.returncode == 0 and res.successful == 1, res.output + log
        assert log.count("auth challenge 401") >= 2, log  # first REGISTER and the wake one
        assert log.count("INVITE received") == 1, log


def test_woken_phone_busy_over_sip_reaches_the_caller(tmp_path: Path) -> None:
    with rig(tmp_path) as r:
        phone = r.phone(TOKEN_A, "--action", "busy")
        res = r.call(scenario("uac_reject.xml", tmp_path, expect="486"))
        log = events(phone)
        assert res.returncode == 0, res.output + log
        assert "486 sent" in log


def test_missed_call_alert_goes_to_the_non_voip_token(tmp_path: Path) -> None:
    with rig(tmp_path, hold_window=1.0, missed_call_alert=True) as r:
        # liblinphone-style typed pn-prid: a VoIP token and a "remote" (alert) token.
        r.relay.routes[TOKEN_A] = free_port(socket.SOCK_STREAM)
        phone = r.keep(start_phone(
            r.server.addr("udp"), r.relay.routes[TOKEN_A],
            "--token", f"{TOKEN_A}:voip&{TOKEN_B}:remote", "--action", "ignore",
        ))  # fmt: skip
        res = r.call(scenario("uac_reject.xml", tmp_path, expect="480"))
        assert res.returncode == 0, res.output
        deadline = time.monotonic() + 5
        kinds: dict[str, str] = {}
        while time.monotonic() < deadline and len(kinds) < 2:
            for push in r.pushes():
                headers = {k.lower(): v for k, v in dict(push["headers"]).items()}  # type: ignore[call-overload]
                kinds[str(push["token"])] = headers["apns-push-type"]
            time.sleep(0.1)
        events(phone)
        assert kinds == {TOKEN_A: "voip", TOKEN_B: "alert"}, kinds


def test_device_answering_an_ended_call_gets_ack_and_bye(tmp_path: Path) -> None:
    """The iOS-safe path when the device's 200 crosses our CANCEL: a device woken for a
    call the caller has cancelled answers 200 at once; sipwake ACKs and BYEs it."""
    with rig(tmp_path, send_180=True) as r:
        device = start_uas("uas_answer_now.xml", extra=keys(user="bob"))
        push_contact = scenario("register.xml", tmp_path)
        push_contact.write_text(
            push_contact.read_text().replace(
                "transport=[ctransport]>",
                f"transport=[ctransport];pn-provider=apns;pn-prid={TOKEN_A};"
                f'pn-param={PHONE_PARAM}>;+sip.instance="<urn:uuid:00000000-0000-0000-0000-00000000000a>"',
            )
        )
        reg = keys(user="bob", domain=DOMAIN, contact_port=device.port, ctransport="udp",
                   expires=3600)  # fmt: skip
        assert run_sipp(push_contact, r.server.addr("udp"), extra=reg).returncode == 0
        res = r.call("uac_cancel.xml", delay_ms=300)  # held, pushed, then cancelled
        assert res.returncode == 0, res.output
        # The device wakes after the caller left: INVITE, its instant 200, our ACK + BYE.
        assert run_sipp(push_contact, r.server.addr("udp"), extra=reg).returncode == 0
        rc, out = device.wait(15)
        assert rc == 0, out
