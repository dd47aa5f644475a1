"""Connection limits over real loopback sockets: total and per-address caps, the message
deadline against slowloris clients, the TLS handshake deadline, WebSocket refusals."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator

import pytest
import trustme
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from sipwake.transport import tls
from sipwake.transport.flow import Flow
from sipwake.transport.manager import TransportManager
from tests.transport.support import LIMITS, Recorder, sip_message, wait_until

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def dial(addr: tuple[str, int], source: str = "127.0.0.1") -> Stream:
    return await asyncio.open_connection(*addr, local_addr=(source, 0))


async def closed_by_server(stream: Stream, timeout: float = 5.0) -> bool:
    """True when the server closes (EOF or reset) within ``timeout``."""
    reader, _ = stream
    try:
        async with asyncio.timeout(timeout):
            return await reader.read(1000) == b""
    except ConnectionError:
        return True
    except TimeoutError:
        return False


def close_all(streams: list[Stream]) -> None:
    for _, writer in streams:
        writer.close()


@pytest.fixture
async def limited(recorder: Recorder) -> AsyncIterator[TransportManager]:
    mgr = TransportManager(
        recorder,
        limits=LIMITS,
        max_connections=6,
        max_connections_per_ip=3,
        message_timeout=0.4,
    )
    yield mgr
    await mgr.close()


async def test_per_address_limit_refuses_the_excess_and_frees_on_close(
    limited: TransportManager, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    addr = await limited.listen("TCP", "127.0.0.1", 0)
    with caplog.at_level(logging.WARNING, "sipwake.transport"):
        mine = [await dial(addr, "127.0.0.5") for _ in range(5)]
        # Connections are accepted in order: the first three stay, the rest are closed.
        assert [await closed_by_server(s, 0.3) for s in mine[3:]] == [True, True]
    assert limited.stats.connections_refused == 2
    assert limited.stats.connections_open == 3
    assert "max_connections_per_ip" in caplog.text
    assert caplog.text.count("refusing TCP connections") == 1  # rate-limited
    other = await dial(addr, "127.0.0.6")
    other[1].write(sip_message(1))
    await recorder.wait_for(1)
    mine[0][1].close()
    await wait_until(lambda: limited.stats.connections_open == 3)
    again = await dial(addr, "127.0.0.5")
    again[1].write(sip_message(2))
    await recorder.wait_for(2)
    close_all([*mine, other, again])


async def test_total_limit(limited: TransportManager) -> None:
    addr = await limited.listen("TCP", "127.0.0.1", 0)
    streams = [await dial(addr, f"127.0.0.{10 + i}") for i in range(8)]
    await wait_until(lambda: limited.stats.connections_refused == 2)
    assert limited.stats.connections_open == 6
    assert await closed_by_server(streams[7], 1.0)
    close_all(streams)


async def test_slowloris_is_closed_after_message_timeout(
    limited: TransportManager, recorder: Recorder
) -> None:
    addr = await limited.listen("TCP", "127.0.0.1", 0)
    slow = await dial(addr)
    quick = await dial(addr)
    quick[1].write(sip_message(1))
    await recorder.wait_for(1)
    message = sip_message(2)
    closed = False
    for i in range(20):  # a byte every 0.1 s: 2 s for the message, 5x the deadline
        slow[1].write(message[i : i + 1])
        await asyncio.sleep(0.1)
        if slow[0].at_eof():
            closed = True
            break
    assert closed or await closed_by_server(slow, 1.0)
    assert limited.stats.message_timeouts == 1
    assert len(recorder.got) == 1
    # The connection that sent a whole message and went quiet is left to idle_timeout.
    assert not quick[1].is_closing() and not quick[0].at_eof()
    quick[1].write(sip_message(3))
    await recorder.wait_for(2)
    close_all([slow, quick])


async def test_silent_accepted_connection_is_closed(limited: TransportManager) -> None:
    addr = await limited.listen("TCP", "127.0.0.1", 0)
    silent = await dial(addr)
    assert await closed_by_server(silent, 3.0)
    assert limited.stats.message_timeouts == 1
    close_all([silent])


async def test_tls_handshake_deadline(tmp_path_factory: pytest.TempPathFactory) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    d = tmp_path_factory.mktemp("hs")
    cert.cert_chain_pems[0].write_to_path(str(d / "c.pem"))
    cert.private_key_pem.write_to_path(str(d / "k.pem"))
    mgr = TransportManager(
        Recorder(),
        limits=LIMITS,
        tls_server=tls.server_context(str(d / "c.pem"), str(d / "k.pem")),
        tls_handshake_timeout=0.3,
    )
    try:
        addr = await mgr.listen("TLS", "127.0.0.1", 0)
        stalled = await dial(addr)  # TCP only, never a ClientHello
        assert await closed_by_server(stalled, 3.0)
        close_all([stalled])
    finally:
        await mgr.close()


async def test_websocket_over_the_limit_gets_503() -> None:
    mgr = TransportManager(Recorder(), limits=LIMITS, max_connections_per_ip=1)
    try:
        host, port = await mgr.listen("WS", "127.0.0.1", 0)
        url = f"ws://{host}:{port}/"
        async with connect(url, subprotocols=["sip"]):  # type: ignore[list-item]
            with pytest.raises(InvalidStatus) as err:
                async with connect(url, subprotocols=["sip"]):  # type: ignore[list-item]
                    pass
            assert err.value.response.status_code == 503
            assert mgr.stats.connections_refused == 1
    finally:
        await mgr.close()


class Gauged(Recorder):
    """A sink that also notes the queue readings each message was delivered under (the
    engine reads them the same way, per message)."""

    def __init__(self) -> None:
        super().__init__()
        self.mgr: TransportManager | None = None
        self.readings: list[tuple[float, float]] = []

    def __call__(self, data: bytes, flow: Flow) -> None:
        assert self.mgr is not None
        self.readings.append((self.mgr.udp_delay(), self.mgr.udp_backlog()))
        super().__call__(data, flow)


async def stamped_on_arrival(sink: Gauged, addr: tuple[str, int]) -> None:
    """Wait until the kernel stamps datagrams when they arrive. Linux turns arrival
    timestamps on for the whole machine only when a first socket asks (SO_TIMESTAMPNS),
    and does so later, from a work queue (net_enable_timestamp): until then a datagram is
    stamped when it is read, and every wait reads as nothing. The server lives with that
    for its first moments; a test that measures the wait must not."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(100):
            s.sendto(sip_message(1000 + i), addr)
            time.sleep(0.02)  # the loop cannot read it meanwhile
            await sink.wait_for(len(sink.got) + 1)
            if sink.readings[-1][0] >= 0.015:
                break
        else:
            raise AssertionError("the kernel never stamped a datagram on arrival")
    await wait_until(lambda: sink.mgr is not None and sink.mgr.udp_delay() == 0.0)
    sink.got.clear()
    sink.readings.clear()


async def test_udp_queue_readings_while_it_is_read() -> None:
    sink = Gauged()
    mgr = sink.mgr = TransportManager(sink, limits=LIMITS)
    try:
        host, port = await mgr.listen("UDP", "127.0.0.1", 0)
        endpoint = mgr._udp[0]
        mgr.watch_backlog()
        await stamped_on_arrival(sink, (host, port))
        assert endpoint.backlog() == 0.0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            # Queued while the loop is kept from reading them for 0.2 s.
            for i in range(200):
                s.sendto(sip_message(i), (host, port))
            assert endpoint.backlog() > 0.0
            time.sleep(0.2)
        await sink.wait_for(200)
        # Each message was delivered under a reading of how long the datagrams waited
        # (sampled every SAMPLE_EVERY reads) and of the queue's fill.
        assert all(0.15 < delay < 5.0 for delay, _ in sink.readings), sink.readings[:3]
        assert all(0.0 < fill < 1.0 for _, fill in sink.readings)
        # Drained: nothing waits any more, the readings say so until the next datagram.
        await wait_until(lambda: mgr.udp_delay() == 0.0)
        assert endpoint.backlog() == mgr.udp_backlog() == 0.0
        # Read as they come: (almost) no wait.
        sink.readings.clear()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(200, 220):
                s.sendto(sip_message(i), (host, port))
                await asyncio.sleep(0.005)
        await sink.wait_for(220)
        # Typically well under a millisecond; a loaded machine may delay a read or two, so
        # the median says "read as they come", the maximum stays below the 0.2 s above.
        delays = sorted(delay for delay, _ in sink.readings)
        assert delays and delays[len(delays) // 2] < 0.05 and delays[-1] < 0.19, delays
    finally:
        await mgr.close()
