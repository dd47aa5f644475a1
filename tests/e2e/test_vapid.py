"""Web Push apps learn our VAPID key from the REGISTER 200 (issue 10 item 8, RFC 8599 §12):
the operator makes the key pair with `sipwake vapid-keygen`, configures [[push.webpush]],
and a browser app registering with pn-provider=webpush gets +sip.vapid in Feature-Caps."""

from __future__ import annotations

import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.e2e.harness import loopback_config, serve

pytestmark = pytest.mark.e2e


def test_register_200_carries_the_key_the_cli_printed(tmp_path: Path) -> None:
    key_file = tmp_path / "vapid.pem"
    made = subprocess.run(
        [sys.executable, "-m", "sipwake", "vapid-keygen", str(key_file)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    public = made.stdout.strip()
    config = loopback_config(
        extra=f"""[auth]
enabled = false
[[push.webpush]]
vapid_private_key_file = "{key_file}"
subject = "mailto:ops@example.com"
"""
    )
    with serve(config, tmp_path) as server, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(5)
        me = s.getsockname()[1]
        prid = "https://push.example.net/sub/" + uuid.uuid4().hex
        lines = [
            "REGISTER sip:127.0.0.1 SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK{uuid.uuid4().hex};rport",
            "Max-Forwards: 70",
            "From: <sip:web@127.0.0.1>;tag=w1",
            "To: <sip:web@127.0.0.1>",
            f"Call-ID: {uuid.uuid4().hex}",
            "CSeq: 1 REGISTER",
            f"Contact: <sip:web@127.0.0.1:{me};pn-provider=webpush;pn-prid={prid}>",
            "Expires: 600",
            "Content-Length: 0",
        ]
        s.sendto(("\r\n".join(lines) + "\r\n\r\n").encode(), server.addr("udp"))
        answer = s.recv(65535).decode()
    assert answer.startswith("SIP/2.0 200"), answer
    assert f'Feature-Caps: *;+sip.pns="webpush";+sip.vapid="{public}"' in answer, answer
