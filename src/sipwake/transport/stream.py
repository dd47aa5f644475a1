"""TCP and TLS connections: an asyncio Protocol with a StreamFramer per connection.

Messages are cut by Content-Length (RFC 3261 §18.3); a framing error cannot be recovered
from, so the connection gets a bare error status line and is closed. CRLFCRLF keep-alives
are answered with CRLF here (RFC 5626 §4.4.1, §3.5.1), below the engine.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import cast

from sipwake.sip.codec import PONG, Ping, StreamFramer
from sipwake.sip.errors import ParseError
from sipwake.transport.connections import TransportContext
from sipwake.transport.flow import Flow

log = logging.getLogger("sipwake.transport.stream")


class StreamConnection(asyncio.Protocol):
    """One TCP or TLS connection, accepted or dialled."""

    def __init__(
        self, ctx: TransportContext, transport_name: str, *, accepted: bool = True
    ) -> None:
        self._ctx = ctx
        self._name = transport_name
        self._accepted = accepted
        self._framer = StreamFramer(ctx.limits)
        self._transport: asyncio.Transport | None = None
        self._flow: Flow | None = None
        self._closing = False
        # While a read is being processed, writes are collected here and go out in one
        # writelines() after the batch: responses to pipelined requests share a syscall.
        self._pending: list[bytes] | None = None
        self._pending_size = 0
        # Past this much unsent data the peer is not reading: drop rather than grow without
        # bound. (The high-water mark, lower, pauses our reading first.)
        self._hard_limit = 16 * ctx.limits.max_message_size
        self.last_activity = ctx.clock()
        # sip.message_timeout runs from here: the first byte of a message not yet whole,
        # or, on a connection we accepted, the accept until its first message. A byte a
        # second resets the idle timer but not this one (slowloris).
        self.incomplete_since: float | None = None

    @property
    def flow(self) -> Flow:
        assert self._flow is not None, "connection not made yet"
        return self._flow

    # asyncio.Protocol callbacks -------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        t = cast(asyncio.Transport, transport)
        self._transport = t
        peer = t.get_extra_info("peername")
        local = t.get_extra_info("sockname")
        if not peer or not local:  # reset before we saw it: nothing to talk to
            self._closing = True
            t.abort()
            return
        ctx = self._ctx
        if self._accepted and not ctx.admit(self._name, peer[0]):
            self._closing = True
            t.abort()
            return
        self._flow = Flow(self._name, (local[0], local[1]), (peer[0], peer[1]), ctx.table.new_id())
        t.set_write_buffer_limits(high=4 * ctx.limits.max_message_size)
        self.last_activity = ctx.clock()
        if self._accepted:
            self.incomplete_since = self.last_activity
        ctx.opened(self)

    def data_received(self, data: bytes) -> None:
        ctx = self._ctx
        stats = ctx.stats
        self.last_activity = ctx.clock()
        stats.bytes_in += len(data)
        if self._closing:
            return
        try:
            items = self._framer.feed(data)
        except ParseError as exc:
            self._framing_error(exc)
            return
        if self._framer.buffered:
            if items or self.incomplete_since is None:
                self.incomplete_since = self.last_activity  # a new message began
        elif items:
            self.incomplete_since = None
        if not items:
            return
        flow = self.flow
        pending = self._pending = []
        try:
            for item in items:
                if isinstance(item, Ping):
                    stats.pings += 1
                    pending.append(PONG)
                    self._pending_size += len(PONG)
                    stats.bytes_out += len(PONG)
                else:
                    ctx.deliver(item, flow)
                if self._closing:
                    break
        finally:
            self._flush()

    def eof_received(self) -> bool:
        # The peer half-closed: a SIP stream has nothing more to say; close our side too.
        return False

    def pause_writing(self) -> None:
        # The peer is not reading what we send: stop reading what it sends, so one slow
        # connection cannot make us buffer without bound (backpressure, not memory growth).
        if self._transport is not None and not self._closing:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None and not self._closing:
            self._transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._pending = None
        if self._flow is not None:
            self._ctx.closed(self)

    # Connection interface ---------------------------------------------------------------

    def is_closing(self) -> bool:
        t = self._transport
        return self._closing or t is None or t.is_closing()

    def write(self, data: bytes) -> bool:
        stats = self._ctx.stats
        t = self._transport
        if t is None or self._closing or t.is_closing():
            stats.dropped += 1
            return False
        if t.get_write_buffer_size() + self._pending_size + len(data) > self._hard_limit:
            stats.dropped += 1
            return False
        stats.messages_out += 1
        stats.bytes_out += len(data)
        self.last_activity = self._ctx.clock()
        if self._pending is not None:
            self._pending.append(data)
            self._pending_size += len(data)
        else:
            t.write(data)
        return True

    def close(self) -> None:
        if self._closing:
            return
        self._flush()
        self._closing = True
        if self._transport is not None:
            # close() (not abort()) lets buffered responses and a TLS close_notify go out.
            self._transport.close()

    def abort(self) -> None:
        self._closing = True
        self._pending = None
        if self._transport is not None:
            self._transport.abort()

    # internals ---------------------------------------------------------------------------

    def _flush(self) -> None:
        pending = self._pending
        self._pending = None
        self._pending_size = 0
        if pending and self._transport is not None and not self._transport.is_closing():
            self._transport.writelines(pending)

    def _framing_error(self, exc: ParseError) -> None:
        # The stream cannot be resynchronised (RFC 3261 §18.3): answer with a bare status
        # line, since nothing of the message can be trusted to build a proper response
        # (no Via to route it by), then close.
        self._ctx.stats.framing_errors += 1
        log.info("framing error on %s from %s: %s", self._name, self.flow.remote, exc.detail)
        line = f"SIP/2.0 {exc.status} {exc.reason}\r\nContent-Length: 0\r\n\r\n".encode()
        t = self._transport
        if t is not None and not t.is_closing() and t.get_write_buffer_size() < self._hard_limit:
            t.write(line)
        self.close()


async def open_stream(
    ctx: TransportContext,
    transport_name: str,
    host: str,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    timeout: float = 10.0,
    local_addr: tuple[str, int] | None = None,
) -> StreamConnection:
    """Dial a TCP/TLS connection (from ``local_addr`` when given); raises OSError (incl.
    TimeoutError, ssl.SSLError)."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        _, proto = await loop.create_connection(
            lambda: StreamConnection(ctx, transport_name, accepted=False),
            host,
            port,
            ssl=ssl_context,
            server_hostname=server_hostname,
            local_addr=local_addr,
        )
    return proto
