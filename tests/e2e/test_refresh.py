"""Binding-refresh pushes (issue 10 item 5, RFC 8599 §5.5) through the real server and the
APNs emulator: background pushes to the app's non-VoIP token before its push binding
expires, retried while it does not REGISTER, never a VoIP push; counted in /metrics."""

from __future__ import annotations

import socket
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.e2e.harness import PHONE_PARAM, RunningServer, apns_emulator, loopback_config, serve
from tests.e2e.real.rig import PushInbox

pytestmark = pytest.mark.e2e


def register(server: RunningServer, user: str, voip: str, remote: str, expires: int) -> str:
    """One REGISTER over UDP with a typed (liblinphone-style) pn-prid; the final answer."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(5)
        me = s.getsockname()[1]
        contact = (
            f"<sip:{user}@127.0.0.1:{me};pn-provider=apns;pn-param={PHONE_PARAM}"
            f";pn-prid={voip}:voip&{remote}:remote>"
            f';+sip.instance="<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_DNS, user)}>"'
        )
        lines = [
            "REGISTER sip:127.0.0.1 SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK{uuid.uuid4().hex};rport",
            "Max-Forwards: 70",
            f"From: <sip:{user}@127.0.0.1>;tag={uuid.uuid4().hex[:8]}",
            f"To: <sip:{user}@127.0.0.1>",
            f"Call-ID: {uuid.uuid4().hex}",
            "CSeq: 1 REGISTER",
            f"Contact: {contact}",
            f"Expires: {expires}",
            "Content-Length: 0",
        ]
        s.sendto(("\r\n".join(lines) + "\r\n\r\n").encode(), server.addr("udp"))
        return s.recv(65535).decode()


def metric(server: RunningServer, name: str) -> float:
    host, port = server.addr("api")
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_refresh_pushes_until_the_app_registers_again(tmp_path: Path) -> None:
    inbox = PushInbox()
    try:
        with apns_emulator("--forward-url", inbox.url) as emu:
            config = loopback_config(
                extra=f"""[auth]
enabled = false
[registrar]
min_expires = 5
[push]
refresh_before = 3.0
refresh_retries = 2
refresh_backoff = 1.0
{emu.config()}"""
            )
            with serve(config, tmp_path) as server:
                asleep_voip, asleep_remote = "a1" * 32, "a2" * 32
                awake_voip, awake_remote = "b1" * 32, "b2" * 32
                t0 = time.time()
                # The sleeper never answers its refresh pushes; the other one does.
                assert register(server, "sleeper", asleep_voip, asleep_remote, 8).startswith(
                    "SIP/2.0 200"
                )
                assert register(server, "waker", awake_voip, awake_remote, 8).startswith(
                    "SIP/2.0 200"
                )
                first = inbox.wait(awake_remote, timeout=10)
                assert 4.0 <= first.at - t0 < 7.0  # expiry 8 s, lead 3 s
                answer = register(server, "waker", awake_voip, awake_remote, 600)
                assert answer.startswith("SIP/2.0 200")
                time.sleep(8.5 - (time.time() - t0))  # past both expiries
                sleeper = inbox.for_token(asleep_remote)
                # Two pushes (5 s, then 1 s later; a third would be due at expiry).
                assert len(sleeper) == 2, [p.at - t0 for p in sleeper]
                assert len(inbox.for_token(awake_remote)) == 1
                for push in [*sleeper, first]:
                    assert push.record["push_type"] == "background"
                    assert push.payload["type"] == "refresh"
                    assert push.payload["aps"] == {"content-available": 1}
                    # Where to REGISTER: the most secure transport, as in a call push.
                    tcp = server.addr("tcp")
                    assert push.payload["sip"] == {
                        "host": tcp[0],
                        "port": tcp[1],
                        "transport": "tcp",
                    }
                # Never a VoIP push: that would ring on iOS.
                assert inbox.for_token(asleep_voip) == inbox.for_token(awake_voip) == []
                assert metric(server, "sipwake_refresh_pushes_total") == 3
                assert metric(server, "sipwake_bindings_expired_unrefreshed_total") == 1
    finally:
        inbox.close()
