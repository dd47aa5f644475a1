"""The real-client matrix (issue 10): linphone 5.1 and baresip 1.0 from Debian, headless,
against the real `sipwake serve` and the APNs emulator, over UDP, TCP and TLS.

linphone plays the mobile app: it registers with RFC 8599 parameters, is killed with
SIGKILL (asleep, no un-REGISTER) and restarted by the test when its push arrives (woken).
baresip plays the caller, registered through sipwake as its outbound proxy."""

from __future__ import annotations

import time
import uuid

import pytest

from tests.e2e.real.baresip import Baresip
from tests.e2e.real.conftest import record
from tests.e2e.real.linphone import Linphone
from tests.e2e.real.rig import DOMAIN, RealRig

pytestmark = [pytest.mark.e2e, pytest.mark.realclient]

TRANSPORTS = ["udp", "tcp", "tls"]


def token() -> str:
    return uuid.uuid4().hex * 2  # 64 hex digits, as a PushKit token


def pair(rig: RealRig, transport: str, push: str | None) -> tuple[Linphone, Baresip]:
    alice, bob = rig.users()
    lp = rig.linphone(alice, transport, push)
    bs = rig.baresip(bob, transport)
    return lp, bs


def started(lp: Linphone, bs: Baresip) -> None:
    lp.start()
    bs.start()
    lp.wait_registered()
    bs.registered()


def stop(*clients: Linphone | Baresip) -> None:
    for c in clients:
        c.stop()


def uri(user: str) -> str:
    return f"sip:{user}@{DOMAIN}"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_register_with_push_params_and_outbound(rig: RealRig, transport: str) -> None:
    # Both with digest auth (MD5: see rig_config); baresip through its outbound proxy
    # (a Route naming sipwake: 480 before issue 10 item 2).
    lp, bs = pair(rig, transport, token())
    try:
        started(lp, bs)
        oks = [t for t in lp.sip_trace() if t[1] == "received" and t[2].startswith("SIP/2.0 200")]
        assert oks, "linphone saw no 200"
        log = lp.log_file.read_text(errors="replace")
        assert 'Feature-Caps: *;+sip.pns="apns"' in log  # RFC 8599 §5.6.1: push binding
        assert "pn-prid=" in log
        bs.wait_output("Route: <sip:127.0.0.1:")
        bs.wait_output("reg-id=1")
    finally:
        stop(lp, bs)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_calls_both_ways_answered_bye_from_either_side(rig: RealRig, transport: str) -> None:
    lp, bs = pair(rig, transport, None)
    alice, bob = lp.account.user, bs.account.user
    try:
        started(lp, bs)
        for caller, hangs_up in (("bs", "bs"), ("bs", "lp"), ("lp", "lp"), ("lp", "bs")):
            lmark, bmark = len(lp.events), bs.mark()
            t0 = time.time()
            if caller == "bs":
                assert bs.command("dial", uri(alice))["ok"]
                ev = lp.wait_event("LinphoneCallIncomingReceived", start=lmark)
                lp.ok(f"answer {ev.fields['Id']}")
                up = bs.wait_event("CALL_ESTABLISHED", start=bmark)
                record("awake call", transport, "baresip INVITE -> 200", up.at - t0)
            else:
                lp.ok(f"call {uri(bob)}")
                bs.wait_event("CALL_INCOMING", start=bmark)
                assert bs.command("accept")["ok"]
                lp.wait_event("LinphoneCallStreamsRunning", start=lmark)
                bs.wait_event("CALL_ESTABLISHED", start=bmark)
            if hangs_up == "bs":
                assert bs.command("hangup")["ok"]
                lp.wait_event("LinphoneCallEnd", start=lmark)
            else:
                lp.ok("terminate")
                bs.wait_event("CALL_CLOSED", start=bmark)
            lp.wait_event("LinphoneCallReleased", start=lmark)
        deadline = time.monotonic() + 5
        while bs.output().count("BYE sip:") < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert bs.output().count("BYE sip:") >= 4  # two sent, two received
    finally:
        stop(lp, bs)


def asleep_with_push(rig: RealRig, transport: str) -> tuple[Linphone, Baresip, str]:
    """linphone registered with a push token, then killed (the app is suspended)."""
    tok = token()
    lp, bs = pair(rig, transport, tok)
    started(lp, bs)
    lp.kill9()
    if transport != "udp":
        time.sleep(0.2)  # let sipwake see the connection close (else the call may race it)
    return lp, bs, tok


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_push_woken_call_answered(rig: RealRig, transport: str) -> None:
    lp, bs, tok = asleep_with_push(rig, transport)
    try:
        bmark = bs.mark()
        t0 = time.time()
        assert bs.command("dial", uri(lp.account.user))["ok"]
        push = rig.inbox.wait(tok)
        assert push.record["push_type"] == "voip"
        assert push.payload["type"] == "call"
        woke = len(lp.events)
        lp.start()  # the app, woken by the push, registers over a new connection
        ev = lp.wait_event("LinphoneCallIncomingReceived", start=woke)
        lp.ok(f"answer {ev.fields['Id']}")
        up = bs.wait_event("CALL_ESTABLISHED", start=bmark)
        trace = lp.sip_trace()
        invite = next(t for t in trace if t[1] == "received" and t[2].startswith("INVITE"))
        registers = [t for t in trace if t[1] == "sent" and t[2].startswith("REGISTER")]
        # The last REGISTER before the INVITE: the one that passed the digest challenge.
        register = [t for t in registers if t[0] <= invite[0]][-1]
        record("woken call", transport, "caller INVITE -> push", push.at - t0)
        record("woken call", transport, "wake REGISTER -> INVITE in", invite[0] - register[0])
        record("woken call", transport, "caller INVITE -> 200", up.at - t0)
        record("woken call", transport, "(linphone restart+auth)", register[0] - push.at)
        assert bs.command("hangup")["ok"]
        lp.wait_event("LinphoneCallEnd", start=woke)
    finally:
        stop(lp, bs)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_caller_cancel_while_asleep_then_woken_gets_invite_and_cancel(
    rig: RealRig, transport: str
) -> None:
    lp, bs, tok = asleep_with_push(rig, transport)
    try:
        bmark = bs.mark()
        assert bs.command("dial", uri(lp.account.user))["ok"]
        rig.inbox.wait(tok)
        assert bs.command("hangup")["ok"]  # CANCEL
        bs.wait_event("CALL_CLOSED", start=bmark)
        bs.wait_output("SIP/2.0 487")
        woke = len(lp.events)
        lp.start()  # woken late, within push.cancel_grace
        lp.wait_event("LinphoneCallIncomingReceived", start=woke)
        lp.wait_event("LinphoneCallEnd", start=woke)
        trace = [t[2] for t in lp.sip_trace() if t[1] == "received"]
        invite = next(i for i, line in enumerate(trace) if line.startswith("INVITE"))
        assert any(line.startswith("CANCEL") for line in trace[invite:]), trace
    finally:
        stop(lp, bs)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_decline_link_from_the_push_gives_486(rig: RealRig, transport: str) -> None:
    lp, bs, tok = asleep_with_push(rig, transport)
    try:
        bmark = bs.mark()
        assert bs.command("dial", uri(lp.account.user))["ok"]
        push = rig.inbox.wait(tok)
        assert rig.decline(push.payload["decline_url"], "busy") == 200
        bs.wait_event("CALL_CLOSED", start=bmark)
        bs.wait_output("SIP/2.0 486")  # baresip -s traces what it receives
        assert lp.proc is not None and lp.proc.poll() is not None  # never started again
    finally:
        stop(lp, bs)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_push_turned_off_calls_ring_at_once(rig: RealRig, transport: str) -> None:
    # The app turns push off and re-registers without pn-* (same +sip.instance): before
    # issue 10 item 3 the old push target stayed, and a UDP client never got a call.
    tok = token()
    lp, bs = pair(rig, transport, tok)
    try:
        started(lp, bs)
        lp.kill9()
        lp.account.push_params = None
        lp.write_config()  # same instance id
        lp.start()
        lp.wait_registered()
        mark = len(lp.events)
        t0 = time.time()
        assert bs.command("dial", uri(lp.account.user))["ok"]
        ev = lp.wait_event("LinphoneCallIncomingReceived", start=mark)
        record("push off", transport, "caller INVITE -> ringing", ev.at - t0)
        lp.ok(f"answer {ev.fields['Id']}")
        bs.wait_event("CALL_ESTABLISHED")
        assert rig.inbox.for_token(tok) == []
        assert bs.command("hangup")["ok"]
    finally:
        stop(lp, bs)


def test_stun_keepalives_from_baresip_over_udp_are_answered(rig: RealRig) -> None:
    # RFC 5626 §4.4.2 (issue 10 item 6): baresip with sipnat=outbound sends STUN Binding
    # Requests on its UDP flow, at the pace our Flow-Timer (2 s, rig_config) asks for.
    _, bob = rig.users()
    bs = rig.baresip(bob, "udp")
    stun = 'sipwake_sip_keepalives_total{kind="stun"}'
    try:
        bs.start()
        bs.registered()
        bs.wait_output("Flow-Timer: 2")
        before = rig.metric(stun)
        deadline = time.monotonic() + 10
        while rig.metric(stun) < before + 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert rig.metric(stun) >= before + 2
        bs.registered()  # still registered: the answers kept its flow good
    finally:
        bs.stop()
