"""UDP through the manager, with real sockets on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

import pytest

from sipwake.sip.codec import Limits
from sipwake.transport import udp
from sipwake.transport.flow import Flow
from sipwake.transport.manager import TransportManager
from tests.transport.support import Recorder, needs_ipv6, sip_message


def _client(family: socket.AddressFamily = socket.AF_INET) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
    sock.settimeout(2.0)
    return sock


async def test_udp_echo_through_manager(manager: TransportManager, recorder: Recorder) -> None:
    addr = await manager.listen("UDP", "127.0.0.1", 0)
    assert addr[0] == "127.0.0.1" and addr[1] > 0
    assert manager.local_address("UDP") == addr
    with _client() as peer:
        msg = sip_message(1)
        peer.sendto(msg, addr)
        got = await recorder.wait_for(1)
        data, flow = got[0]
        assert data == msg
        assert flow == Flow("UDP", addr, peer.getsockname(), 0)
        assert not flow.reliable and not flow.secure
        assert manager.is_alive(flow)

        assert manager.send(flow, b"SIP/2.0 200 OK\r\n\r\n")
        reply, source = peer.recvfrom(65535)
    assert reply == b"SIP/2.0 200 OK\r\n\r\n"
    assert source == addr  # answered from the socket it arrived on (RFC 3261 §18.2.2)
    assert manager.stats.messages_in == 1 and manager.stats.messages_out == 1


async def test_one_flow_per_peer_address_bounded(
    manager: TransportManager, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Datagrams from one address share one Flow (an object less per message, and per
    finished transaction kept through Timer J/L); the cache of them is bounded."""
    monkeypatch.setattr(udp, "FLOW_CACHE", 3)
    addr = await manager.listen("UDP", "127.0.0.1", 0)
    peers = [_client() for _ in range(4)]
    try:
        for i in range(2):
            peers[0].sendto(sip_message(i), addr)
        [(_, first), (_, second)] = await recorder.wait_for(2)
        assert first is second and first.remote == peers[0].getsockname()
        for i, peer in enumerate(peers[1:], start=2):
            peer.sendto(sip_message(i), addr)
            await recorder.wait_for(i + 1)
        endpoint = manager._udp[0]
        assert len(endpoint._flows) <= 3  # emptied when full, not grown
        peers[3].sendto(sip_message(9), addr)
        got = await recorder.wait_for(6)
        assert got[-1][1] == Flow("UDP", addr, peers[3].getsockname(), 0)
    finally:
        for peer in peers:
            peer.close()


async def test_udp_burst_is_drained(manager: TransportManager, recorder: Recorder) -> None:
    addr = await manager.listen("UDP", "127.0.0.1", 0)
    with _client() as peer:
        # The datagrams queue in the receive buffer while the loop is busy here; each
        # readiness callback drains a batch. Batches of 100 stay within even a default
        # (non-enlargeable) rmem_max, so a loss would be ours, not the kernel's.
        for i in range(1000):
            peer.sendto(sip_message(i), addr)
            if i % 100 == 99:
                await asyncio.sleep(0)
        got = await recorder.wait_for(1000)
    assert [data for data, _ in got] == [sip_message(i) for i in range(1000)]
    assert manager.stats.dropped == 0


async def test_oversize_datagram_dropped_and_counted(recorder: Recorder) -> None:
    mgr = TransportManager(recorder, limits=Limits(max_message_size=1000))
    try:
        addr = await mgr.listen("UDP", "127.0.0.1", 0)
        with _client() as peer:
            peer.sendto(sip_message(0, body=b"x" * 2000), addr)
            peer.sendto(sip_message(1), addr)
            got = await recorder.wait_for(1)
        assert got[0][0] == sip_message(1)
        assert len(got) == 1
        assert mgr.stats.oversize == 1 and mgr.stats.dropped == 1
    finally:
        await mgr.close()


async def test_keepalive_datagrams_are_not_delivered(
    manager: TransportManager, recorder: Recorder
) -> None:
    addr = await manager.listen("UDP", "127.0.0.1", 0)
    with _client() as peer:
        peer.sendto(b"\r\n\r\n", addr)
        peer.sendto(sip_message(6), addr)
        # After a message, so what is left in the read buffer starts with a letter.
        for blank in (b"", b"\0", b" ", b"\r\n"):
            peer.sendto(blank, addr)
        peer.sendto(sip_message(7), addr)
        got = await recorder.wait_for(2)
    assert [data for data, _ in got] == [sip_message(6), sip_message(7)]


@needs_ipv6
async def test_udp_ipv6(manager: TransportManager, recorder: Recorder) -> None:
    addr = await manager.listen("UDP", "::1", 0)
    assert addr[0] == "::1"
    with _client(socket.AF_INET6) as peer:
        peer.sendto(sip_message(2), addr)
        (_data, flow), *_ = await recorder.wait_for(1)
        assert flow.remote == peer.getsockname()[:2]
        assert flow.local == addr
        assert manager.send(flow, b"pong")
        assert peer.recvfrom(100)[0] == b"pong"


async def test_send_udp_without_listener_uses_ephemeral_socket(
    manager: TransportManager, recorder: Recorder
) -> None:
    with _client() as peer:
        host, port = peer.getsockname()
        flow = manager.send_udp(host, port, b"hello")
        data, source = peer.recvfrom(100)
        assert data == b"hello"
        assert flow == Flow("UDP", flow.local, (host, port))
        assert source[1] == flow.local[1]
        # The ephemeral socket is read too, so an answer to it reaches the sink.
        peer.sendto(sip_message(3), ("127.0.0.1", flow.local[1]))
        (_, inbound), *_ = await recorder.wait_for(1)
    assert inbound.local == flow.local


async def test_send_udp_picks_listener_and_rejects_names(manager: TransportManager) -> None:
    addr = await manager.listen("UDP", "127.0.0.1", 0)
    with _client() as peer:
        host, port = peer.getsockname()
        flow = manager.send_udp(host, port, b"x")
        assert flow.local == addr
        assert peer.recvfrom(10) == (b"x", addr)
    with pytest.raises(ValueError):
        manager.send_udp("localhost", 5060, b"x")


async def test_send_error_is_counted_not_raised(manager: TransportManager) -> None:
    await manager.listen("UDP", "127.0.0.1", 0)
    # Port 0 is not a valid destination: sendto fails with an OSError.
    flow = manager.send_udp("127.0.0.1", 0, b"x")
    assert flow.remote == ("127.0.0.1", 0)
    assert manager.stats.send_errors == 1 and manager.stats.dropped == 1


async def test_connect_and_send_udp(manager: TransportManager) -> None:
    await manager.listen("UDP", "127.0.0.1", 0)
    with _client() as peer:
        flow = await manager.connect_and_send("UDP", "127.0.0.1", peer.getsockname()[1], b"hi")
        assert peer.recvfrom(10)[0] == b"hi"
    assert flow.transport == "UDP"


async def test_stun_binding_request_on_the_sip_port_is_answered(
    manager: TransportManager, recorder: Recorder
) -> None:
    # RFC 5626 §4.4.2: an outbound UA keeps its UDP flow alive with STUN on the SIP port.
    addr = await manager.listen("UDP", "127.0.0.1", 0)
    txid = bytes(range(12))
    with _client() as peer:
        peer.setblocking(False)
        peer.sendto(struct.pack("!HHI12s", 0x0001, 0, 0x2112A442, txid), addr)
        loop = asyncio.get_running_loop()
        reply = await asyncio.wait_for(loop.sock_recv(peer, 2048), 2)
        port = peer.getsockname()[1]
    kind, _, _, got_txid = struct.unpack_from("!HHI12s", reply)
    assert (kind, got_txid) == (0x0101, txid)
    family, xport, xaddr = struct.unpack_from("!xBHI", reply, 24)
    assert (family, xport ^ 0x2112, xaddr ^ 0x2112A442) == (1, port, 0x7F000001)
    assert manager.stats.stun_requests == 1
    assert recorder.got == []  # not handed to SIP


async def test_low_byte_garbage_is_not_taken_for_stun(
    manager: TransportManager, recorder: Recorder
) -> None:
    # A datagram whose first byte looks like STUN but has no magic cookie is garbage: it
    # goes where garbage goes (the engine drops and counts it), not into the STUN path.
    addr = await manager.listen("UDP", "127.0.0.1", 0)
    garbage = b"\x00\xffgarbage that is not SIP\r\n\r\n"
    with _client() as peer:
        peer.sendto(garbage, addr)
        got = await recorder.wait_for(1)
    assert [data for data, _ in got] == [garbage]
    assert manager.stats.stun_requests == 0


async def test_sends_during_a_read_batch_go_out_after_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What the engine sends while a batch of datagrams is read is held until the batch
    ends (one wake-up of the peer per batch, not per datagram), or until OUTBOX_FLUSH
    sends wait; in order, and a send outside a batch goes at once."""
    monkeypatch.setattr(udp, "OUTBOX_FLUSH", 4)
    with _client() as peer:
        peer.setblocking(False)
        seen: list[int] = []  # per delivery: answers the peer already had

        def echo(data: bytes, flow: Flow) -> None:
            n = 0
            with contextlib.suppress(BlockingIOError):
                while True:
                    got.append(peer.recv(65535))
                    n += 1
            seen.append(n)
            mgr.send(flow, b"re:" + data[:12])

        got: list[bytes] = []
        mgr = TransportManager(echo, limits=Limits())
        try:
            addr = await mgr.listen("UDP", "127.0.0.1", 0)
            for i in range(6):  # queued before the loop reads: one batch
                peer.sendto(b"OPTIONS %02d" % i, addr)
            for _ in range(100):
                await asyncio.sleep(0.01)
                if len(seen) == 6:
                    break
            # The first four answers went out together when the fourth was sent, the
            # last two at the end of the batch.
            assert seen == [0, 0, 0, 0, 4, 0]
            await asyncio.sleep(0.05)
            with contextlib.suppress(BlockingIOError):
                while True:
                    got.append(peer.recv(65535))
            assert got == [b"re:OPTIONS %02d" % i for i in range(6)]
            # Outside a read batch (a timer, a task): sent at once.
            assert mgr.send(Flow("UDP", addr, peer.getsockname()), b"now")
            await asyncio.sleep(0)
            assert peer.recv(65535) == b"now"
            assert mgr.stats.messages_out == 7
        finally:
            await mgr.close()
