"""REGISTER with a pre-loaded Route naming sipwake (issue 10 item 2): a UA configured
with an outbound proxy (baresip's ``outbound=``) sends it; RFC 3261 §8.1.2, §16.4 say we
remove our own Route entries and handle the request, here as registrar."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator

import pytest

from tests.e2e.harness import RunningServer, loopback_config, serve

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    config = loopback_config(domains=("example.com", "127.0.0.1"), extra="[auth]\nenabled = false")
    with serve(config, tmp_path_factory.mktemp("route")) as running:
        yield running
        assert running.alive()


def register(server: RunningServer, ruri: str, routes: list[str]) -> str:
    """Send one REGISTER over UDP and return the status line of the final answer."""
    host, port = server.addr("udp")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(5)
        me = s.getsockname()[1]
        lines = [
            f"REGISTER {ruri} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK{uuid.uuid4().hex};rport",
            "Max-Forwards: 70",
            "From: <sip:alice@example.com>;tag=f1",
            "To: <sip:alice@example.com>",
            f"Call-ID: {uuid.uuid4().hex}",
            "CSeq: 1 REGISTER",
            f"Contact: <sip:alice@127.0.0.1:{me}>",
            *(f"Route: {r}" for r in routes),
            "Expires: 300",
            "Content-Length: 0",
        ]
        s.sendto(("\r\n".join(lines) + "\r\n\r\n").encode(), (host, port))
        while True:
            text = s.recv(65535).decode()
            status = text.split("\r\n", 1)[0]
            if not status.startswith("SIP/2.0 1"):
                return status


def test_loose_route_to_us_is_stripped(server: RunningServer) -> None:
    host, port = server.addr("udp")
    assert register(server, "sip:example.com", [f"<sip:{host}:{port};lr>"]) == "SIP/2.0 200 OK"
    # Several of our names in a row (a domain, a listener), any of them.
    two = ["<sip:example.com;lr>", f"<sip:{host}:{port};transport=udp;lr>"]
    assert register(server, "sip:example.com", two) == "SIP/2.0 200 OK"


def test_strict_route_restores_the_request_uri(server: RunningServer) -> None:
    # §12.2.1.1: a strict-routing UA puts the proxy URI in the Request-URI and the real
    # Request-URI last in Route; §16.4 has us put it back.
    host, port = server.addr("udp")
    status = register(server, f"sip:{host}:{port}", ["<sip:example.com>"])
    assert status == "SIP/2.0 200 OK"
