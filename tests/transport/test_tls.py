"""TLS through the manager with a trustme CA: contexts built from files, both directions."""

from __future__ import annotations

import asyncio
import ssl

import pytest
import trustme

from sipwake.transport import tls
from sipwake.transport.manager import TransportManager
from tests.transport.support import LIMITS, Recorder, sip_message


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1", "::1")
    client_cert = ca.issue_cert("client.example.com")
    d = tmp_path_factory.mktemp("pki")
    paths = {
        "ca": d / "ca.pem",
        "cert": d / "cert.pem",
        "key": d / "key.pem",
        "client": d / "client.pem",
    }
    ca.cert_pem.write_to_path(str(paths["ca"]))
    cert.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    cert.private_key_pem.write_to_path(str(paths["key"]))
    client_cert.private_key_and_cert_chain_pem.write_to_path(str(paths["client"]))
    return {k: str(v) for k, v in paths.items()}


def test_contexts_require_tls12(pki: dict[str, str]) -> None:
    server = tls.server_context(pki["cert"], pki["key"])
    client = tls.client_context(pki["ca"])
    assert server.minimum_version == ssl.TLSVersion.TLSv1_2
    assert client.minimum_version == ssl.TLSVersion.TLSv1_2
    assert server.verify_mode == ssl.CERT_NONE
    assert client.verify_mode == ssl.CERT_REQUIRED and client.check_hostname
    insecure = tls.client_context(verify=False)
    assert insecure.verify_mode == ssl.CERT_NONE and not insecure.check_hostname
    mutual = tls.server_context(pki["cert"], pki["key"], ca_file=pki["ca"], verify_client=True)
    assert mutual.verify_mode == ssl.CERT_REQUIRED


async def test_tls_both_ways(pki: dict[str, str], recorder: Recorder) -> None:
    server_rec = Recorder()
    server = TransportManager(
        server_rec, limits=LIMITS, tls_server=tls.server_context(pki["cert"], pki["key"])
    )
    client = TransportManager(recorder, limits=LIMITS, tls_client=tls.client_context(pki["ca"]))
    try:
        addr = await server.listen("TLS", "127.0.0.1", 0)
        flow = await client.connect_and_send("TLS", *addr, sip_message(1))
        assert flow.transport == "TLS" and flow.secure and flow.reliable
        (data, inbound), *_ = await server_rec.wait_for(1)
        assert data == sip_message(1)
        assert inbound.transport == "TLS" and inbound.secure
        assert server.send(inbound, sip_message(2))
        (back, back_flow), *_ = await recorder.wait_for(1)
        assert back == sip_message(2) and back_flow == flow
        # Reuse: the second request rides the same TLS connection.
        assert await client.connect_and_send("TLS", *addr, sip_message(3)) == flow
        await server_rec.wait_for(2)
        assert server.stats.connections_opened == 1
    finally:
        await client.close()
        await server.close()


async def test_tls_ping_and_untrusted_client(pki: dict[str, str]) -> None:
    server = TransportManager(
        Recorder(), limits=LIMITS, tls_server=tls.server_context(pki["cert"], pki["key"])
    )
    try:
        addr = await server.listen("TLS", "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(
            *addr, ssl=tls.client_context(pki["ca"]), server_hostname="localhost"
        )
        writer.write(b"\r\n\r\n")
        assert await asyncio.wait_for(reader.readexactly(2), 2) == b"\r\n"
        writer.close()

        # A client that does not trust our CA refuses the handshake.
        stranger = TransportManager(Recorder(), limits=LIMITS, tls_client=tls.client_context())
        try:
            with pytest.raises(ssl.SSLError):
                await stranger.connect_and_send("TLS", *addr, b"x")
        finally:
            await stranger.close()
    finally:
        await server.close()


async def test_mutual_tls(pki: dict[str, str], recorder: Recorder) -> None:
    server_ctx = tls.server_context(pki["cert"], pki["key"], ca_file=pki["ca"], verify_client=True)
    server = TransportManager(recorder, limits=LIMITS, tls_server=server_ctx)
    try:
        addr = await server.listen("TLS", "127.0.0.1", 0)
        client_ctx = tls.client_context(pki["ca"])
        client_ctx.load_cert_chain(pki["client"])
        _, writer = await asyncio.open_connection(
            *addr, ssl=client_ctx, server_hostname="localhost"
        )
        writer.write(sip_message(1))
        (data, _), *_ = await recorder.wait_for(1)
        assert data == sip_message(1)
        writer.close()
    finally:
        await server.close()


async def test_tls_listener_needs_a_context(manager: TransportManager) -> None:
    with pytest.raises(ValueError, match="TLS context"):
        await manager.listen("TLS", "127.0.0.1", 0)
