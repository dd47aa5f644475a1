"""End to end: the real `sipwake serve` driven by SIPp over UDP and TCP on loopback."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import BASIC_CONFIG
from tests.e2e.harness import RunningServer, run_sipp, serve

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_options_answered_200(server: RunningServer, transport: str) -> None:
    result = run_sipp(
        "options.xml", server.addr(transport), transport=transport, calls=50, rate=100
    )
    assert result.returncode == 0, result.output
    assert (result.successful, result.failed) == (50, 0)


def test_garbage_datagram_changes_nothing(server: RunningServer) -> None:
    host, port = server.addr("udp")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for junk in (
            b"\x00\x01\x02",
            b"NOT SIP AT ALL\r\n\r\n",
            b"SIP/2.0 200\r\n\r\n",
            b"INVITE sip:x SIP/2.0\r\nVia: nonsense\r\n\r\n",
            bytes(range(256)) * 4,
        ):
            s.sendto(junk, (host, port))
    time.sleep(0.1)
    assert server.alive()
    result = run_sipp("options.xml", (host, port), calls=5, rate=50)
    assert result.returncode == 0, result.output
    assert result.successful == 5


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_malformed_request_gets_400_naming_fault(server: RunningServer, transport: str) -> None:
    result = run_sipp("bad_request.xml", server.addr(transport), transport=transport, calls=1)
    assert result.returncode == 0, result.output
    assert result.successful == 1


def test_unknown_method_gets_501(server: RunningServer) -> None:
    result = run_sipp("unknown_method.xml", server.addr("udp"), calls=1)
    assert result.returncode == 0, result.output


def test_tcp_framing_error_closes_only_that_connection(server: RunningServer) -> None:
    host, port = server.addr("tcp")
    with socket.create_connection((host, port), timeout=5) as bad:
        bad.sendall(b"OPTIONS sip:x SIP/2.0\r\nContent-Length: banana\r\n\r\n")
        bad.settimeout(5)
        data = b""
        while chunk := bad.recv(4096):  # the server closes it after answering (or not)
            data += chunk
    assert data == b"" or data.startswith(b"SIP/2.0 400")
    result = run_sipp("options.xml", (host, port), transport="tcp", calls=5, rate=50)
    assert result.returncode == 0, result.output


def test_debug_log_has_one_line_per_transaction_with_call_id(tmp_path: Path) -> None:
    with serve(BASIC_CONFIG, tmp_path) as server:
        result = run_sipp("options.xml", server.addr("udp"), calls=3, rate=50)
        assert result.returncode == 0
    out = "".join(server.output)
    lines = [ln for ln in out.splitlines() if "OPTIONS sip:" in ln and "-> 200" in ln]
    assert len(lines) == 3, out
    assert all("call_id=" in ln and "call_id=-" not in ln for ln in lines), lines
