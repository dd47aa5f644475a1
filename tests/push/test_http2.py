"""H2Client over real TLS + HTTP/2 against the APNs emulator's h2 server."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator

import pytest

from sipwake.emulate.apns import ApnsEmulator, ApnsEmulatorConfig, serve_apns
from sipwake.emulate.tlsutil import CertFiles, client_context, make_test_certs
from sipwake.push.http2 import H2Client, H2Retryable, H2TLSError

PUSHES = "/_emulator/pushes"  # answered without auth: a plain request/response target


@pytest.fixture
async def server(certs: CertFiles) -> AsyncIterator[ApnsEmulator]:
    em = await serve_apns(
        ApnsEmulatorConfig(
            cert_file=str(certs.cert_file),
            key_file=str(certs.key_file),
            initial_max_streams=10,
            max_streams=10,
        )
    )
    yield em
    await em.close()


@pytest.fixture
async def client(server: ApnsEmulator, certs: CertFiles) -> AsyncIterator[H2Client]:
    c = H2Client(f"https://127.0.0.1:{server.port}", ssl_context=client_context(certs.ca_file))
    yield c
    await c.close()


async def test_body_larger_than_the_initial_window_is_flow_controlled(
    client: H2Client,
) -> None:
    # 200 KB > the 65,535-byte default windows: only arrives whole if WINDOW_UPDATEs are
    # honoured; the emulator answers after END_STREAM (413: too big for APNs).
    body = json.dumps({"pad": "x" * 200_000}).encode()
    headers = [("authorization", "bearer x")]
    response = await client.request("POST", "/3/device/ab", headers, body)
    assert response.status == 403  # auth is checked first; but the whole body arrived
    assert json.loads(response.body) == {"reason": "InvalidProviderToken"}


async def test_large_response_body(server: ApnsEmulator, client: H2Client) -> None:
    server.pushes.extend({"token": "ab", "payload": "y" * 1000} for _ in range(300))
    response = await client.request("GET", PUSHES, [])
    assert response.status == 200 and len(json.loads(response.body)) == 300


async def test_stream_limit_is_respected(server: ApnsEmulator, client: H2Client) -> None:
    server.config.delay = 0.02
    # 40 requests, server allows 10 at a time: h2 on the server would kill the connection
    # (PROTOCOL_ERROR) if the client opened an 11th stream.
    responses = await asyncio.gather(*(client.request("GET", PUSHES, []) for _ in range(40)))
    assert [r.status for r in responses] == [200] * 40
    assert client.connections_opened == 1


async def test_goaway_fails_streams_above_last_and_reconnects(
    server: ApnsEmulator, client: H2Client
) -> None:
    server.config.goaway_after = 2
    server.config.delay = 0.01  # all five are in flight when GOAWAY arrives
    results = await asyncio.gather(
        *(client.request("GET", PUSHES, []) for _ in range(5)), return_exceptions=True
    )
    ok = [r for r in results if not isinstance(r, BaseException)]
    failed = [r for r in results if isinstance(r, BaseException)]
    assert len(ok) >= 1 and failed and all(isinstance(e, H2Retryable) for e in failed)
    server.config.goaway_after = 0
    assert (await client.request("GET", PUSHES, [])).status == 200
    assert client.connections_opened == 2


async def test_connection_reset_is_retryable(server: ApnsEmulator, client: H2Client) -> None:
    server.config.reset_after = 1
    with pytest.raises(H2Retryable, match="connection"):
        await client.request("GET", PUSHES, [])


async def test_timeout_is_retryable_and_frees_the_slot(
    server: ApnsEmulator, client: H2Client
) -> None:
    server.config.delay = 0.5
    with pytest.raises(H2Retryable, match="no response"):
        await client.request("GET", PUSHES, [], timeout=0.05)
    server.config.delay = 0.0
    assert (await client.request("GET", PUSHES, [])).status == 200
    assert client.connections_opened == 1


async def test_ping_keeps_the_connection(server: ApnsEmulator, certs: CertFiles) -> None:
    c = H2Client(
        f"https://127.0.0.1:{server.port}",
        ssl_context=client_context(certs.ca_file),
        ping_interval=0.02,
    )
    try:
        await c.request("GET", PUSHES, [])
        await asyncio.sleep(0.1)  # several PINGs, each answered
        await c.request("GET", PUSHES, [])
        assert c.connections_opened == 1
    finally:
        await c.close()


async def test_untrusted_certificate_is_a_tls_error(
    server: ApnsEmulator, tmp_path_factory: pytest.TempPathFactory
) -> None:
    other_ca = make_test_certs(tmp_path_factory.mktemp("other")).ca_file
    c = H2Client(f"https://127.0.0.1:{server.port}", ssl_context=client_context(other_ca))
    try:
        with pytest.raises(H2TLSError):
            await c.request("GET", PUSHES, [])
    finally:
        await c.close()


async def test_connection_refused_is_retryable(certs: CertFiles) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connect is refused
        c = H2Client(f"https://127.0.0.1:{port}", ssl_context=client_context(certs.ca_file))
        with pytest.raises(H2Retryable, match="failed"):
            await c.request("GET", "/", [])
        await c.close()


def test_origin_must_be_https() -> None:
    with pytest.raises(ValueError):
        H2Client("http://example.com")
    assert H2Client("https://api.push.apple.com").authority == "api.push.apple.com"
    assert H2Client("https://[::1]:8443").authority == "[::1]:8443"


class _Wire:
    """The transport under a client connection: what it wrote, and nothing else."""

    def __init__(self) -> None:
        self.written = bytearray()

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


async def test_headers_leave_as_h2_would_normalise_them() -> None:
    """h2's outbound normalisation is off (a cost per push): the client itself sends the
    names as given, values stripped (RFC 9113 §8.2.1), and credentials as never-indexed
    literals (RFC 7541 §7.1.3), with the caller's unindexed names too. Read back by a real
    h2 server connection from the bytes the client wrote."""
    import h2.config
    import h2.connection
    import h2.events
    from hpack import NeverIndexedHeaderTuple

    from sipwake.push.http2 import _Connection

    server = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
    )
    server.initiate_connection()
    conn = _Connection("push.example.com", 0, frozenset({"apns-id"}))
    wire = _Wire()
    conn.connection_made(wire)  # type: ignore[arg-type]
    conn.data_received(server.data_to_send())
    headers = [("authorization", "bearer abc "), ("apns-id", "x"), ("apns-topic", " t")]
    pending = asyncio.ensure_future(conn.request("POST", "/3/device/ab", headers, b"{}"))
    await asyncio.sleep(0)  # the request's turn
    await asyncio.sleep(0)  # the flush scheduled by it
    events = server.receive_data(bytes(wire.written))
    [received] = [e for e in events if isinstance(e, h2.events.RequestReceived)]
    got = list(received.headers or ())
    assert [(k, v) for k, v in got] == [
        (":method", "POST"),
        (":scheme", "https"),
        (":authority", "push.example.com"),
        (":path", "/3/device/ab"),
        ("authorization", "bearer abc"),
        ("apns-id", "x"),
        ("apns-topic", "t"),
    ]
    never = {k for k, _ in (h for h in got if isinstance(h, NeverIndexedHeaderTuple))}
    assert never == {":path", "authorization", "apns-id"}
    pending.cancel()
    conn.close()
