"""push/http1.py's keep-alive client against a real HTTP/1.1 server on 127.0.0.1 (h11 on
asyncio streams): connections are reused, a connection the server closed is not, and a
reused connection that fails before any answer is retried once on a fresh one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import h11
import pytest

from sipwake.policy.bindings import PushTarget
from sipwake.push.base import Delivered, PushRequest, Transient
from sipwake.push.http1 import Http1Client, Http1Error
from sipwake.push.webhook import WebhookProvider


class KeepAliveServer:
    """Answers 200 to every request, several per connection unless told otherwise.

    ``close_after_answer``: close each connection right after its first answer, without
    saying so (an idle timeout that fires at once). ``drop_next_reused``: the next request
    that arrives on an already used connection is not read and not answered, the
    connection is closed (the server's idle timeout fired as the client wrote).
    ``never_answer``: close every connection without answering."""

    def __init__(self) -> None:
        self.connections = 0
        self.answered = 0
        self.open = 0
        self.close_after_answer = False
        self.drop_next_reused = False
        self.never_answer = False
        self.answer_close = False  # answer with Connection: close
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        conn = h11.Connection(h11.SERVER)
        served = 0
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await reader.read(65536)
                    if data and (self.never_answer or (served and self.drop_next_reused)):
                        if served:
                            self.drop_next_reused = False
                        return  # a request has started to arrive: drop it unanswered
                    conn.receive_data(data)
                    if not data:
                        return
                    continue
                if isinstance(event, h11.ConnectionClosed):
                    return
                if not isinstance(event, h11.EndOfMessage):
                    continue
                headers = [("content-length", "2")]
                if self.answer_close:
                    headers.append(("connection", "close"))
                writer.write(
                    (conn.send(h11.Response(status_code=200, headers=headers)) or b"")
                    + (conn.send(h11.Data(data=b"ok")) or b"")
                    + (conn.send(h11.EndOfMessage()) or b"")
                )
                await writer.drain()
                self.answered += 1
                served += 1
                if self.close_after_answer or conn.our_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        finally:
            self.open -= 1
            writer.close()


@pytest.fixture
async def server() -> AsyncIterator[KeepAliveServer]:
    s = KeepAliveServer()
    await s.start()
    yield s
    await s.close()


async def test_requests_share_one_connection(server: KeepAliveServer) -> None:
    client = Http1Client(server.url)
    for _ in range(5):
        reply = await client.request("POST", [], b"{}", timeout=2)
        assert (reply.status, reply.body) == (200, b"ok")
    assert (server.connections, server.answered, client.opened) == (1, 5, 1)
    await client.close()


async def test_concurrent_requests_open_more_and_keep_them(server: KeepAliveServer) -> None:
    client = Http1Client(server.url, max_idle=2)
    replies = await asyncio.gather(*(client.request("POST", [], b"", timeout=2) for _ in range(4)))
    assert [r.status for r in replies] == [200] * 4
    assert server.connections == 4
    # Only max_idle stay for the next requests; the others were closed.
    await asyncio.sleep(0.05)
    assert server.open == 2
    await client.request("POST", [], b"", timeout=2)
    assert server.connections == 4
    await client.close()
    await asyncio.sleep(0.05)
    assert server.open == 0


async def test_connection_close_answer_is_not_reused(server: KeepAliveServer) -> None:
    server.answer_close = True
    client = Http1Client(server.url)
    for _ in range(3):
        assert (await client.request("POST", [], b"", timeout=2)).status == 200
    assert (server.connections, client.opened) == (3, 3)


async def test_connection_the_server_closed_while_idle_is_replaced(
    server: KeepAliveServer,
) -> None:
    server.close_after_answer = True
    client = Http1Client(server.url)
    for _ in range(3):
        assert (await client.request("POST", [], b"", timeout=2)).status == 200
        await asyncio.sleep(0.02)  # the FIN arrives while the connection is idle
    assert (server.connections, server.answered) == (3, 3)


async def test_reused_connection_dropped_as_we_write_is_retried_once(
    server: KeepAliveServer,
) -> None:
    client = Http1Client(server.url)
    assert (await client.request("POST", [], b"", timeout=2)).status == 200
    server.drop_next_reused = True
    reply = await client.request("POST", [], b"", timeout=2)
    assert reply.status == 200
    # The dropped request was never read: the retry is its only delivery.
    assert (server.connections, server.answered, client.opened) == (2, 2, 2)
    await client.close()


async def test_fresh_connection_without_answer_is_not_retried(server: KeepAliveServer) -> None:
    server.never_answer = True
    client = Http1Client(server.url)
    with pytest.raises(Http1Error):
        await client.request("POST", [], b"", timeout=2)
    assert server.connections == 1


async def test_idle_timeout_drops_old_connections(server: KeepAliveServer) -> None:
    client = Http1Client(server.url, idle_timeout=0.0)
    for _ in range(2):
        assert (await client.request("POST", [], b"", timeout=2)).status == 200
    assert server.connections == 2
    await client.close()


async def test_webhook_pushes_reuse_the_connection_and_close_it(
    server: KeepAliveServer,
) -> None:
    provider = WebhookProvider("acme", url=server.url, secret="s", timeout=2.0)
    request = PushRequest(target=PushTarget("acme", "device-1"), payload={}, expires_at=0)
    for _ in range(3):
        assert await provider.send(request, 1_700_000_000.0) == Delivered()
    assert (server.connections, server.answered) == (1, 3)
    await provider.close()
    await asyncio.sleep(0.05)
    assert server.open == 0


async def test_webhook_timeout_is_transient_and_the_connection_not_reused(
    server: KeepAliveServer,
) -> None:
    provider = WebhookProvider("acme", url=server.url, secret="s", timeout=0.2)
    request = PushRequest(target=PushTarget("acme", "device-1"), payload={}, expires_at=0)
    assert await provider.send(request, 1_700_000_000.0) == Delivered()
    server.never_answer = True  # the next connection hangs up unanswered
    server.drop_next_reused = True  # and so does the kept one
    outcome = await provider.send(request, 1_700_000_000.0)
    assert isinstance(outcome, Transient)
    await provider.close()
