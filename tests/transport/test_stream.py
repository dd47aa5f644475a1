"""TCP through the manager: framing, keep-alives, errors, reuse, reaping (real sockets)."""

from __future__ import annotations

import asyncio

import pytest

from sipwake.sip.codec import Limits
from sipwake.transport.flow import Flow
from sipwake.transport.manager import TransportManager
from tests.transport.support import LIMITS, Recorder, needs_ipv6, sip_message, wait_until


async def _connect(addr: tuple[str, int]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(addr[0], addr[1])


async def test_message_split_across_many_writes(
    manager: TransportManager, recorder: Recorder
) -> None:
    addr = await manager.listen("TCP", "127.0.0.1", 0)
    _reader, writer = await _connect(addr)
    msg = sip_message(1, body=b"v=0\r\n")
    for i in range(0, len(msg), 7):
        writer.write(msg[i : i + 7])
        await writer.drain()
        await asyncio.sleep(0.001)  # make each piece its own read
    (data, flow), *_ = await recorder.wait_for(1)
    assert data == msg
    assert flow.transport == "TCP" and flow.reliable and not flow.secure
    assert flow.conn_id > 0
    assert flow.remote == writer.get_extra_info("sockname")[:2]
    assert flow.local == addr
    writer.close()


async def test_two_messages_in_one_write(manager: TransportManager, recorder: Recorder) -> None:
    addr = await manager.listen("TCP", "127.0.0.1", 0)
    _, writer = await _connect(addr)
    writer.write(sip_message(1) + sip_message(2, body=b"hello"))
    got = await recorder.wait_for(2)
    assert [d for d, _ in got] == [sip_message(1), sip_message(2, body=b"hello")]
    assert got[0][1] == got[1][1]  # same connection, same flow
    writer.close()


async def test_crlf_ping_is_answered_with_crlf(
    manager: TransportManager, recorder: Recorder
) -> None:
    addr = await manager.listen("TCP", "127.0.0.1", 0)
    reader, writer = await _connect(addr)
    writer.write(b"\r\n\r\n")
    assert await asyncio.wait_for(reader.readexactly(2), 2) == b"\r\n"
    # A ping split in two still counts once, and a message after it is framed normally.
    writer.write(b"\r\n")
    await writer.drain()
    await asyncio.sleep(0.01)
    writer.write(b"\r\n" + sip_message(5))
    assert await asyncio.wait_for(reader.readexactly(2), 2) == b"\r\n"
    (data, _), *_ = await recorder.wait_for(1)
    assert data == sip_message(5)
    assert manager.stats.pings == 2
    writer.close()


async def test_framing_error_closes_connection_and_next_one_works(
    manager: TransportManager, recorder: Recorder
) -> None:
    addr = await manager.listen("TCP", "127.0.0.1", 0)
    reader, writer = await _connect(addr)
    writer.write(b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP h\r\n\r\n")  # no Content-Length
    answer = await asyncio.wait_for(reader.read(), 2)  # read to EOF: the server closed
    assert answer.startswith(b"SIP/2.0 400 Bad Request\r\n")
    assert manager.stats.framing_errors == 1
    assert recorder.got == []
    await wait_until(lambda: manager.stats.connections_open == 0)
    writer.close()

    _, writer2 = await _connect(addr)
    writer2.write(sip_message(9))
    (data, _), *_ = await recorder.wait_for(1)
    assert data == sip_message(9)
    writer2.close()


async def test_oversize_stream_message_gets_513(recorder: Recorder) -> None:
    mgr = TransportManager(recorder, limits=Limits(max_message_size=1000))
    try:
        addr = await mgr.listen("TCP", "127.0.0.1", 0)
        reader, writer = await _connect(addr)
        writer.write(sip_message(0, body=b"x" * 2000))
        answer = await asyncio.wait_for(reader.read(), 2)
        assert answer.startswith(b"SIP/2.0 513 Message Too Large\r\n")
        writer.close()
    finally:
        await mgr.close()


async def test_response_goes_back_over_same_connection(
    manager: TransportManager, recorder: Recorder
) -> None:
    addr = await manager.listen("TCP", "127.0.0.1", 0)
    r1, w1 = await _connect(addr)
    r2, w2 = await _connect(addr)
    w1.write(sip_message(1))
    w2.write(sip_message(2))
    got = await recorder.wait_for(2)
    flows = dict(got)
    f1, f2 = flows[sip_message(1)], flows[sip_message(2)]
    assert f1.conn_id != f2.conn_id
    assert manager.send(f2, b"to-two") and manager.send(f1, b"to-one")
    assert await asyncio.wait_for(r1.readexactly(6), 2) == b"to-one"
    assert await asyncio.wait_for(r2.readexactly(6), 2) == b"to-two"

    w1.close()
    await wait_until(lambda: not manager.is_alive(f1))
    assert not manager.send(f1, b"gone")
    assert manager.is_alive(f2)
    w2.close()


async def test_replies_sent_from_the_sink_are_batched_in_order() -> None:
    def echo(data: bytes, flow: Flow) -> None:
        # Answer each request with its Call-ID, synchronously from inside the read.
        call_id = data.split(b"Call-ID: ", 1)[1].split(b"\r\n", 1)[0]
        assert mgr.send(flow, call_id + b"\n")

    mgr = TransportManager(echo, limits=LIMITS)
    try:
        addr = await mgr.listen("TCP", "127.0.0.1", 0)
        reader, writer = await _connect(addr)
        writer.write(b"".join(sip_message(i) for i in range(20)))
        lines = [await asyncio.wait_for(reader.readline(), 2) for _ in range(20)]
        assert lines == [f"call-{i}@example.com\n".encode() for i in range(20)]
        assert mgr.stats.messages_out == 20
        writer.close()
    finally:
        await mgr.close()


@needs_ipv6
async def test_tcp_ipv6(manager: TransportManager, recorder: Recorder) -> None:
    addr = await manager.listen("TCP", "::1", 0)
    assert addr[0] == "::1"
    reader, writer = await _connect(addr)
    writer.write(sip_message(4))
    (_, flow), *_ = await recorder.wait_for(1)
    assert flow.remote[0] == "::1" and flow.local == addr
    assert manager.send(flow, b"back")
    assert await asyncio.wait_for(reader.readexactly(4), 2) == b"back"
    writer.close()


async def test_idle_connections_are_reaped(recorder: Recorder) -> None:
    # The busy connection pings ten times per idle timeout, so a loaded machine that
    # delays a few pings does not get it reaped too.
    mgr = TransportManager(recorder, limits=LIMITS, idle_timeout=0.3)
    try:
        addr = await mgr.listen("TCP", "127.0.0.1", 0)
        idle_reader, idle_writer = await _connect(addr)
        _busy_reader, busy_writer = await _connect(addr)
        await wait_until(lambda: mgr.stats.connections_open == 2)
        loop = asyncio.get_running_loop()
        end = loop.time() + 1.2
        while loop.time() < end:  # keep one connection busy with pings
            busy_writer.write(b"\r\n\r\n")
            await asyncio.sleep(0.03)
        assert await asyncio.wait_for(idle_reader.read(), 3) == b""  # closed by us
        assert mgr.stats.idle_closed == 1
        assert mgr.stats.connections_open == 1
        busy_writer.close()
        idle_writer.close()
    finally:
        await mgr.close()


async def test_connect_and_send_reuses_live_connection(recorder: Recorder) -> None:
    server_rec = Recorder()
    server = TransportManager(server_rec, limits=LIMITS)
    client = TransportManager(recorder, limits=LIMITS)
    try:
        addr = await server.listen("TCP", "127.0.0.1", 0)
        f1 = await client.connect_and_send("TCP", *addr, sip_message(1))
        f2 = await client.connect_and_send("TCP", *addr, sip_message(2))
        assert f1 == f2 and f1.remote == addr
        got = await server_rec.wait_for(2)
        assert got[0][1].conn_id == got[1][1].conn_id
        assert server.stats.connections_opened == 1

        # The server answers over the connection, and the client's sink gets it on f1.
        assert server.send(got[0][1], sip_message(3))
        (_, back), *_ = await recorder.wait_for(1)
        assert back == f1

        # The server can reach the client over the inbound connection by its address too.
        inbound = got[0][1]
        f3 = await server.connect_and_send("TCP", *inbound.remote, sip_message(4))
        assert f3 == inbound
        await recorder.wait_for(2)

        # Once the connection is gone, a new one is dialled.
        server.close_flow(inbound)
        await wait_until(lambda: not client.is_alive(f1))
        f4 = await client.connect_and_send("TCP", *addr, sip_message(5))
        assert f4.conn_id != f1.conn_id
        await server_rec.wait_for(3)
        assert server.stats.connections_opened == 2
    finally:
        await client.close()
        await server.close()


async def test_concurrent_dials_share_one_connection(recorder: Recorder) -> None:
    server_rec = Recorder()
    server = TransportManager(server_rec, limits=LIMITS)
    client = TransportManager(recorder, limits=LIMITS)
    try:
        addr = await server.listen("TCP", "127.0.0.1", 0)
        flows = await asyncio.gather(
            *(client.connect_and_send("TCP", *addr, sip_message(i)) for i in range(5))
        )
        assert len({f.conn_id for f in flows}) == 1
        await server_rec.wait_for(5)
        assert server.stats.connections_opened == 1
    finally:
        await client.close()
        await server.close()


async def test_connect_failure_raises_oserror(manager: TransportManager) -> None:
    addr = await manager.listen("TCP", "127.0.0.1", 0)
    await manager.close()  # nothing listens there any more
    other = TransportManager(Recorder(), limits=LIMITS)
    try:
        with pytest.raises(OSError):
            await other.connect_and_send("TCP", *addr, b"x")
    finally:
        await other.close()


async def test_backpressure_pauses_reading_and_bounds_buffer(recorder: Recorder) -> None:
    mgr = TransportManager(recorder, limits=Limits(max_message_size=2000))
    try:
        addr = await mgr.listen("TCP", "127.0.0.1", 0)
        reader, writer = await _connect(addr)
        writer.write(sip_message(0))
        (_, flow), *_ = await recorder.wait_for(1)
        # The peer does not read: once the kernel buffers fill, ours grows to the hard
        # limit and further sends are refused instead of buffered without bound.
        chunk = b"y" * 1000
        sent = 0
        for _ in range(100_000):
            if not mgr.send(flow, chunk):
                break
            sent += len(chunk)
        else:
            raise AssertionError("send never refused")
        assert mgr.stats.dropped == 1
        # Reading is paused meanwhile: a request from that peer waits...
        writer.write(sip_message(1))
        await asyncio.sleep(0.05)
        assert len(recorder.got) == 1
        # ...until the peer catches up with what we sent.
        received = 0
        while received < sent:
            received += len(await asyncio.wait_for(reader.read(1 << 20), 2))
        await recorder.wait_for(2)
        writer.close()
    finally:
        await mgr.close()


async def test_connect_opens_without_sending(recorder: Recorder) -> None:
    server = TransportManager(Recorder(), limits=LIMITS)
    client = TransportManager(recorder, limits=LIMITS)
    try:
        addr = await server.listen("TCP", "127.0.0.1", 0)
        flow = await client.connect("TCP", *addr)
        assert client.is_alive(flow) and flow.remote == addr
        await wait_until(lambda: server.stats.connections_open == 1)
        assert await client.connect("tcp", *addr) == flow  # reused, case-insensitive name
        assert client.send(flow, sip_message(1))
        udp = await client.connect("UDP", "127.0.0.1", 5060)
        assert udp.transport == "UDP" and udp.remote == ("127.0.0.1", 5060)
        assert client.is_alive(udp)
    finally:
        await client.close()
        await server.close()


async def test_dials_from_the_address_it_listens_on(recorder: Recorder) -> None:
    """A peer that knows us by address (edge mode's registrar trusting our de-REGISTER)
    sees the TCP connection come from our listening address, as UDP datagrams do; a
    wildcard listener leaves the choice to the kernel."""
    server_rec = Recorder()
    server = TransportManager(server_rec, limits=LIMITS)
    client = TransportManager(recorder, limits=LIMITS)
    wildcard = TransportManager(Recorder(), limits=LIMITS)
    try:
        addr = await server.listen("TCP", "127.0.0.2", 0)
        await client.listen("TCP", "127.0.0.3", 0)
        flow = await client.connect_and_send("TCP", *addr, sip_message(1))
        assert flow.local[0] == "127.0.0.3"
        (_, inbound), *_ = await server_rec.wait_for(1)
        assert inbound.remote[0] == "127.0.0.3"
        await wildcard.listen("TCP", "0.0.0.0", 0)
        other = await wildcard.connect_and_send("TCP", *addr, sip_message(2))
        assert other.local[0] == "127.0.0.1"
    finally:
        await wildcard.close()
        await client.close()
        await server.close()
