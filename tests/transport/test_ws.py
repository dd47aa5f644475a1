"""SIP over WebSocket (RFC 7118) through the manager, with the websockets client."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import trustme
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

from sipwake.transport import tls
from sipwake.transport.manager import TransportManager
from tests.transport.support import LIMITS, Recorder, needs_ipv6, sip_message, wait_until

SIP = [Subprotocol("sip")]


async def test_ws_message_in_and_out(manager: TransportManager, recorder: Recorder) -> None:
    host, port = await manager.listen("WS", "127.0.0.1", 0)
    async with connect(f"ws://{host}:{port}/", subprotocols=SIP) as ws:
        assert ws.subprotocol == "sip"
        await ws.send(sip_message(1).decode())  # text frame
        await ws.send(sip_message(2))  # binary frame
        got = await recorder.wait_for(2)
        assert [d for d, _ in got] == [sip_message(1), sip_message(2)]
        flow = got[0][1]
        assert got[1][1] == flow
        assert flow.transport == "WS" and flow.reliable and not flow.secure
        assert flow.local == (host, port)
        assert flow.remote == ws.local_address[:2]

        assert manager.send(flow, sip_message(3))
        assert manager.send(flow, b"\xff\xfe not utf-8")
        assert await asyncio.wait_for(ws.recv(), 2) == sip_message(3).decode()
        assert await asyncio.wait_for(ws.recv(), 2) == b"\xff\xfe not utf-8"

        await ws.send("\r\n\r\n")  # keep-alive: answered, not delivered
        assert await asyncio.wait_for(ws.recv(), 2) == "\r\n"
        assert len(recorder.got) == 2
    await wait_until(lambda: not manager.is_alive(flow))
    assert not manager.send(flow, b"gone")


@pytest.mark.parametrize("offered", [None, [Subprotocol("chat")]])
async def test_handshake_without_sip_subprotocol_is_refused(
    manager: TransportManager, offered: list[Subprotocol] | None
) -> None:
    host, port = await manager.listen("WS", "127.0.0.1", 0)
    with pytest.raises(InvalidStatus) as info:
        async with connect(f"ws://{host}:{port}/", subprotocols=offered):
            pass
    assert info.value.response.status_code == 400
    assert manager.stats.connections_opened == 0


async def test_ws_connect_and_send_reuses(recorder: Recorder) -> None:
    server_rec = Recorder()
    server = TransportManager(server_rec, limits=LIMITS)
    client = TransportManager(recorder, limits=LIMITS)
    try:
        addr = await server.listen("WS", "127.0.0.1", 0)
        f1 = await client.connect_and_send("WS", *addr, sip_message(1))
        f2 = await client.connect_and_send("WS", *addr, sip_message(2))
        assert f1 == f2 and f1.transport == "WS"
        got = await server_rec.wait_for(2)
        assert server.stats.connections_opened == 1
        assert server.send(got[0][1], sip_message(3))
        (back, back_flow), *_ = await recorder.wait_for(1)
        assert back == sip_message(3) and back_flow == f1
    finally:
        await client.close()
        await server.close()


async def test_wss_with_trustme(recorder: Recorder, tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    server_ctx = tls.server_context(str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"))
    client_ctx = tls.client_context(str(tmp_path / "ca.pem"))
    server = TransportManager(recorder, limits=LIMITS, tls_server=server_ctx)
    client_rec = Recorder()
    client = TransportManager(client_rec, limits=LIMITS, tls_client=client_ctx)
    try:
        host, port = await server.listen("WSS", "127.0.0.1", 0)
        flow = await client.connect_and_send("WSS", host, port, sip_message(1))
        assert flow.secure
        (data, inbound), *_ = await recorder.wait_for(1)
        assert data == sip_message(1) and inbound.transport == "WSS" and inbound.secure
    finally:
        await client.close()
        await server.close()


@needs_ipv6
async def test_ws_ipv6(manager: TransportManager, recorder: Recorder) -> None:
    host, port = await manager.listen("WS", "::1", 0)
    async with connect(f"ws://[{host}]:{port}/", subprotocols=SIP) as ws:
        await ws.send(sip_message(1))
        (_, flow), *_ = await recorder.wait_for(1)
        assert flow.remote[0] == "::1"


async def test_idle_ws_connection_is_reaped(recorder: Recorder) -> None:
    mgr = TransportManager(recorder, limits=LIMITS, idle_timeout=0.05)
    try:
        host, port = await mgr.listen("WS", "127.0.0.1", 0)
        async with connect(f"ws://{host}:{port}/", subprotocols=SIP) as ws:
            await asyncio.wait_for(ws.wait_closed(), 2)
        assert mgr.stats.idle_closed == 1
        await wait_until(lambda: mgr.stats.connections_open == 0)
    finally:
        await mgr.close()


async def test_ws_dial_to_non_websocket_peer_raises(manager: TransportManager) -> None:
    addr = await manager.listen("TCP", "127.0.0.1", 0)  # speaks SIP, not HTTP
    client = TransportManager(Recorder(), limits=LIMITS, connect_timeout=1.0)
    try:
        with pytest.raises(OSError):
            await client.connect_and_send("WS", *addr, sip_message(1))
    finally:
        await client.close()
