"""SIP over WebSocket (RFC 7118) with the ``websockets`` library.

The handshake must negotiate the "sip" subprotocol (RFC 7118 §4.1); each WebSocket message
carries exactly one SIP message, text or binary (§5.1), so no framer is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections import deque
from http import HTTPStatus

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from sipwake.sip.codec import PONG
from sipwake.transport.connections import TransportContext
from sipwake.transport.flow import Flow

log = logging.getLogger("sipwake.transport.ws")

SUBPROTOCOL = Subprotocol("sip")

WsSocket = ServerConnection | ClientConnection


def _addr(addr: tuple[str, int] | tuple[str, int, int, int] | None) -> tuple[str, int]:
    if not addr:
        return ("", 0)
    return (str(addr[0]), int(addr[1]))


class WsConnection:
    """One WebSocket connection (accepted or dialled) in the flow table."""

    def __init__(self, ws: WsSocket, transport_name: str, ctx: TransportContext) -> None:
        self._ws = ws
        self._ctx = ctx
        self._flow = Flow(
            transport_name,
            _addr(ws.local_address),
            _addr(ws.remote_address),
            ctx.table.new_id(),
        )
        self.last_activity = ctx.clock()
        # websockets' send() is a coroutine and our send() is not: messages queue here and
        # one writer task per connection sends them in order.
        self._queue: deque[bytes] = deque()
        self._queued_bytes = 0
        self._wakeup = asyncio.Event()
        self._closing = False
        self._closer: asyncio.Task[None] | None = None
        self._hard_limit = 16 * ctx.limits.max_message_size
        ctx.opened(self)

    @property
    def flow(self) -> Flow:
        return self._flow

    @property
    def incomplete_since(self) -> float | None:
        # websockets assembles frames itself; a trickled frame never reaches us, and
        # last_activity moves only per whole message, so idle_timeout bounds it.
        return None

    def is_closing(self) -> bool:
        return self._closing

    def write(self, data: bytes) -> bool:
        stats = self._ctx.stats
        if self._closing or self._queued_bytes + len(data) > self._hard_limit:
            stats.dropped += 1
            return False
        stats.messages_out += 1
        stats.bytes_out += len(data)
        self.last_activity = self._ctx.clock()
        self._enqueue(data)
        return True

    def _enqueue(self, data: bytes) -> None:
        self._queue.append(data)
        self._queued_bytes += len(data)
        self._wakeup.set()

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._wakeup.set()  # the writer flushes what is queued, then closes

    def abort(self) -> None:
        self._closing = True
        self._queue.clear()
        self._queued_bytes = 0
        self._ws.transport.abort()

    async def run(self) -> None:
        """Read messages until the connection ends; the caller owns the task."""
        ctx = self._ctx
        writer = asyncio.create_task(self._writer())
        try:
            async for message in self._ws:
                self._received(message.encode() if isinstance(message, str) else message)
        except ConnectionClosed:
            pass
        finally:
            self._closing = True
            ctx.closed(self)
            self._wakeup.set()
            with contextlib.suppress(ConnectionClosed):
                await writer

    def _received(self, data: bytes) -> None:
        ctx = self._ctx
        self.last_activity = ctx.clock()
        ctx.stats.bytes_in += len(data)
        if self._closing:
            return
        if not data.strip(b"\r\n"):
            # A CRLF keep-alive sent as its own message, as SIP.js/JsSIP do: answer like
            # RFC 5626 §4.4.1 does on a stream.
            ctx.stats.pings += 1
            ctx.stats.bytes_out += len(PONG)
            self._enqueue(PONG)
            return
        ctx.deliver(data, self._flow)

    async def _writer(self) -> None:
        ws = self._ws
        queue = self._queue
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while queue:
                data = queue.popleft()
                self._queued_bytes -= len(data)
                try:
                    text = data.decode("utf-8")
                except UnicodeDecodeError:
                    await ws.send(data)  # not UTF-8: must be a binary frame (RFC 7118 §5.1)
                else:
                    await ws.send(text)
            if self._closing:
                await ws.close()
                return


async def serve_ws(
    ctx: TransportContext,
    transport_name: str,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None,
    *,
    reuse_port: bool = False,
    handshake_timeout: float = 10.0,
) -> Server:
    async def handler(ws: ServerConnection) -> None:
        await WsConnection(ws, transport_name, ctx).run()

    def admit(ws: ServerConnection, request: Request) -> Response | None:
        # Refused during the HTTP upgrade, before any SIP state exists (RFC 6455 §4.2.2
        # lets the server answer with any HTTP status).
        if ctx.admit(transport_name, _addr(ws.remote_address)[0]):
            return None
        return ws.respond(HTTPStatus.SERVICE_UNAVAILABLE, "Too many connections\n")

    return await serve(
        handler,
        host,
        port,
        process_request=admit,
        open_timeout=handshake_timeout,  # the TLS handshake and the HTTP upgrade
        ssl_handshake_timeout=handshake_timeout if ssl_context is not None else None,
        # With a server subprotocol list, websockets refuses (HTTP 400) a handshake that
        # does not offer "sip", as RFC 7118 §4.1 requires.
        subprotocols=[SUBPROTOCOL],
        ssl=ssl_context,
        compression=None,  # per-message deflate costs CPU and SIP messages are small
        max_size=ctx.limits.max_message_size,
        reuse_port=reuse_port,  # passed on to loop.create_server
    )


async def open_ws(
    ctx: TransportContext,
    transport_name: str,
    host: str,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None,
    timeout: float,
    tasks: set[asyncio.Task[None]],
) -> WsConnection:
    """Dial ws:// or wss:// with subprotocol "sip"; raises OSError on any failure."""
    scheme = "wss" if transport_name == "WSS" else "ws"
    netloc = f"[{host}]" if ":" in host else host
    try:
        ws = await connect(
            f"{scheme}://{netloc}:{port}/",
            subprotocols=[SUBPROTOCOL],
            ssl=ssl_context if scheme == "wss" else None,
            compression=None,
            max_size=ctx.limits.max_message_size,
            open_timeout=timeout,
        )
    except InvalidHandshake as exc:
        raise ConnectionError(f"WebSocket handshake with {host}:{port} failed: {exc}") from exc
    if ws.subprotocol != SUBPROTOCOL:  # pragma: no cover - websockets enforces this
        await ws.close()
        raise ConnectionError(f"{host}:{port} did not accept the sip subprotocol")
    conn = WsConnection(ws, transport_name, ctx)
    task = asyncio.create_task(conn.run())
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return conn
