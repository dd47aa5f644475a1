"""A small HTTP/2 client on ``h2`` + asyncio, built for push services (APNs, FCM).

Why our own: the measured alternatives (DEPENDENCIES.md) are 1.5x-5x slower per push, hard-
code hosts, or drop idle connections. What it does:

- one TLS connection (ALPN ``h2``, RFC 9113 §3.2) per client, opened on demand and reused;
  concurrent requests are multiplexed over it;
- at most SETTINGS_MAX_CONCURRENT_STREAMS streams open (RFC 9113 §5.1.2), following the
  server's SETTINGS as they change (APNs allows 1 until a valid JWT was seen); extra
  requests queue in FIFO order;
- request bodies are sent within the peer's flow-control windows (RFC 9113 §6.9), the rest
  is held until WINDOW_UPDATE; received data is acknowledged at once;
- a PING every ``ping_interval`` keeps NATs and the server from idling the connection out;
  an unanswered PING by the next tick declares the connection dead;
- GOAWAY (RFC 9113 §6.8): the connection takes no new requests (the next request opens a
  fresh one); streams above ``last_stream_id`` fail with :class:`H2Retryable`. ``h2`` stops
  processing frames once GOAWAY is received, so streams at or below it that are still
  unanswered fail with :class:`H2Retryable` too (the server may have acted on them);
- RST_STREAM REFUSED_STREAM (§8.7) and connection loss fail with :class:`H2Retryable`.

Writes are coalesced: requests issued in one event-loop turn leave in one ``write``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import ssl
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from hpack import HeaderTuple, NeverIndexedHeaderTuple

__all__ = ["H2Client", "H2Error", "H2Response", "H2Retryable", "H2TLSError"]

# Larger than any push response; also the window we grant the server so it never stalls.
_RECV_WINDOW = 1 << 24
# Stream ids are 31-bit and never reused (§5.1.1): retire a connection well before the end.
_MAX_STREAM_ID = (1 << 31) - 1 - 1000
# Header fields sent as never-indexed literals whatever the caller says.
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization"})


class H2Error(Exception):
    """An HTTP/2 request failed and retrying it as is will not help (or is not known to)."""


class H2Retryable(H2Error):
    """The request was not processed, or the connection died under it: retry it on a new
    connection (GOAWAY above last_stream_id, REFUSED_STREAM, connection loss, timeout)."""


class _NotSent(H2Retryable):
    """The request was still queued for a stream slot when its connection went away."""


class H2TLSError(H2Error):
    """TLS handshake failed (certificate verification, no ALPN h2): a configuration problem."""


@dataclass(slots=True)
class H2Response:
    status: int
    headers: dict[str, str]  # lower-case names; a repeated header keeps its last value
    body: bytes


class _Stream:
    __slots__ = ("body", "future", "headers", "pending", "status")

    def __init__(self, future: asyncio.Future[H2Response], body: bytes) -> None:
        self.future = future
        self.pending = memoryview(body)  # request body not yet sent (flow control)
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []


class _Connection(asyncio.Protocol):
    """One HTTP/2 connection: the ``h2`` state machine plus an asyncio transport."""

    def __init__(self, authority: str, ping_interval: float, unindexed: frozenset[str]) -> None:
        # Outbound headers are built normalised (request(): lower-case names, stripped
        # values, credentials never indexed), so h2's own pass over them is skipped: it
        # was ~10 % of the client's CPU per push (bench/README.md, bench_apns.py).
        config = h2.config.H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        self._h2 = h2.connection.H2Connection(config=config)
        # HPACK without Huffman coding: the pure-Python Huffman encoder was ~4 % of the
        # server's CPU on the push path (bench/README.md) to save ~20 bytes per push.
        encoder = self._h2.encoder
        encode = encoder.encode
        encoder.encode = functools.partial(encode, huffman=False)  # type: ignore[method-assign]
        self._authority = authority
        self._ping_interval = ping_interval
        # Credentials are never indexed (RFC 7541 §7.1.3), as h2's normalisation would do.
        self._unindexed = unindexed | _SECRET_HEADERS
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._streams: dict[int, _Stream] = {}
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._flush_scheduled = False
        self._ping_task: asyncio.Task[None] | None = None
        self._ping_outstanding = False
        self.closed = False
        self.goaway = False  # no new streams on this connection
        self.error: H2Error | None = None
        self.settings_received = asyncio.Event()

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # cast, not isinstance: uvloop's SSL transport is not an asyncio.Transport subclass
        self._transport = cast(asyncio.Transport, transport)
        self._h2.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: _RECV_WINDOW,
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 100,
            },
        )
        self._h2.initiate_connection()
        # The connection-level window is not a setting (RFC 9113 §6.9.2): widen it explicitly.
        self._h2.increment_flow_control_window(_RECV_WINDOW - 65535)
        self._flush()
        if self._ping_interval > 0:
            self._ping_task = self._loop.create_task(self._ping_loop())

    def data_received(self, data: bytes) -> None:
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            if not self.goaway:  # after GOAWAY h2 rejects every frame; that is expected
                self._fail(H2Retryable(f"HTTP/2 protocol error: {exc}"))
            if self._transport is not None:
                self._transport.close()
            return
        for event in events:
            self._handle(event)
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(H2Retryable(f"connection lost: {exc}" if exc else "connection closed"))
        if self._ping_task is not None:
            self._ping_task.cancel()

    # -- requests ----------------------------------------------------------------------------
    @property
    def usable(self) -> bool:
        return not (self.closed or self.goaway)

    @property
    def idle(self) -> bool:
        return not self._streams and not self._waiters

    async def request(
        self, method: str, path: str, headers: list[tuple[str, str]], body: bytes
    ) -> H2Response:
        while self.usable and (
            len(self._streams) >= self._h2.remote_settings.max_concurrent_streams or self._waiters
        ):
            waiter = self._loop.create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            if len(self._streams) < self._h2.remote_settings.max_concurrent_streams:
                break
        if not self.usable:
            raise _NotSent(str(self.error or "connection is closing"))
        stream_id = self._h2.get_next_available_stream_id()
        if stream_id > _MAX_STREAM_ID:
            self.goaway = True  # retire: the client opens a new connection
        future: asyncio.Future[H2Response] = self._loop.create_future()
        stream = _Stream(future, body)
        self._streams[stream_id] = stream
        unindexed = self._unindexed
        wire: list[HeaderTuple] = [
            HeaderTuple(":method", method),
            HeaderTuple(":scheme", "https"),
            HeaderTuple(":authority", self._authority),
            NeverIndexedHeaderTuple(":path", path),
        ]
        for name, value in headers:
            # RFC 9113 §8.2.1: no leading or trailing whitespace in a field value.
            cls = NeverIndexedHeaderTuple if name in unindexed else HeaderTuple
            wire.append(cls(name, value.strip()))
        try:
            self._h2.send_headers(stream_id, wire, end_stream=not body)
        except h2.exceptions.TooManyStreamsError:
            # The server lowered its limit under us: requeue on a fresh connection.
            del self._streams[stream_id]
            raise _NotSent("server stream limit reached") from None
        if body:
            self._send_body(stream_id, stream)
        self._schedule_flush()
        try:
            return await future
        except asyncio.CancelledError:
            # Timeout or caller gave up: free the stream slot (RFC 9113 §8.4 CANCEL).
            if self._streams.pop(stream_id, None) is not None and self.usable:
                with contextlib.suppress(h2.exceptions.H2Error):
                    self._h2.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
                self._schedule_flush()
                self._wake_waiters()
            raise

    def close(self) -> None:
        if self.closed:
            return
        self.goaway = True
        if self._transport is not None:
            with contextlib.suppress(h2.exceptions.H2Error):
                self._h2.close_connection()
            self._flush()
            self._transport.close()
        self.closed = True
        self._fail(H2Retryable("connection closed by client"))
        if self._ping_task is not None:
            self._ping_task.cancel()

    # -- internals ------------------------------------------------------------------------
    def _send_body(self, stream_id: int, stream: _Stream) -> None:
        """Send what the stream and connection windows allow; keep the rest (RFC 9113 §6.9)."""
        pending = stream.pending
        while pending:
            window = self._h2.local_flow_control_window(stream_id)
            size = min(window, self._h2.max_outbound_frame_size, len(pending))
            if size <= 0:
                break
            end = size == len(pending)
            self._h2.send_data(stream_id, pending[:size].tobytes(), end_stream=end)
            pending = pending[size:]
        stream.pending = pending

    def _handle(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                for name, value in event.headers or ():
                    key = name.decode() if isinstance(name, bytes) else name
                    text = value.decode() if isinstance(value, bytes) else value
                    if key == ":status":
                        stream.status = int(text)
                    else:
                        stream.headers[key] = text
        elif isinstance(event, h2.events.DataReceived):
            if event.data:
                stream = self._streams.get(event.stream_id)
                if stream is not None:
                    stream.body.append(event.data)
            if event.flow_controlled_length:
                self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            stream = self._streams.pop(event.stream_id, None)
            if stream is not None:
                if not stream.future.done():
                    response = H2Response(stream.status, stream.headers, b"".join(stream.body))
                    stream.future.set_result(response)
                self._wake_waiters()
        elif isinstance(event, h2.events.StreamReset):
            stream = self._streams.pop(event.stream_id, None)
            if stream is not None:
                if not stream.future.done():
                    code = event.error_code
                    if code == h2.errors.ErrorCodes.REFUSED_STREAM:
                        exc: H2Error = H2Retryable("stream refused (REFUSED_STREAM)")
                    else:
                        exc = H2Error(f"stream reset by server: {code!r}")
                    stream.future.set_exception(exc)
                self._wake_waiters()
        elif isinstance(event, h2.events.WindowUpdated):
            targets = (
                list(self._streams.items())
                if event.stream_id == 0
                else [(event.stream_id, self._streams[event.stream_id])]
                if event.stream_id in self._streams
                else []
            )
            for stream_id, stream in targets:
                if stream.pending:
                    self._send_body(stream_id, stream)
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            self.settings_received.set()
            # A bigger MAX_CONCURRENT_STREAMS or INITIAL_WINDOW_SIZE frees waiters and bodies.
            self._wake_waiters()
            for stream_id, stream in list(self._streams.items()):
                if stream.pending:
                    self._send_body(stream_id, stream)
        elif isinstance(event, h2.events.PingAckReceived):
            self._ping_outstanding = False
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._on_goaway(event)

    def _on_goaway(self, event: h2.events.ConnectionTerminated) -> None:
        self.goaway = True
        last = event.last_stream_id if event.last_stream_id is not None else 0
        debug = (event.additional_data or b"").decode("utf-8", "replace")
        for stream_id, stream in list(self._streams.items()):
            if stream.future.done():
                continue
            if stream_id > last:
                reason = f"not processed: GOAWAY last_stream_id={last} {debug}"
            else:
                reason = f"connection closed by GOAWAY before the response {debug}"
            stream.future.set_exception(H2Retryable(reason.strip()))
        self._streams.clear()
        self.error = H2Retryable(f"GOAWAY {event.error_code!r} {debug}".strip())
        self._wake_waiters(all_of_them=True)
        if self._transport is not None:
            self._transport.close()

    def _fail(self, exc: H2Error) -> None:
        if self.error is None:
            self.error = exc
        self.settings_received.set()  # wake a connect waiting for the server preface
        for stream in self._streams.values():
            if not stream.future.done():
                stream.future.set_exception(exc)
        self._streams.clear()
        self._wake_waiters(all_of_them=True)

    def _wake_waiters(self, all_of_them: bool = False) -> None:
        free = self._h2.remote_settings.max_concurrent_streams - len(self._streams)
        while self._waiters and (all_of_them or free > 0):
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                free -= 1

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        data = self._h2.data_to_send()
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    async def _ping_loop(self) -> None:
        while not self.closed:
            await asyncio.sleep(self._ping_interval)
            if self._ping_outstanding:
                self._fail(H2Retryable("PING not answered: connection dead"))
                self.close()
                return
            if self.goaway:
                continue
            self._ping_outstanding = True
            with contextlib.suppress(h2.exceptions.H2Error):
                self._h2.ping(b"sipwake!")
            self._flush()


class H2Client:
    """HTTP/2 requests to one origin over one kept-warm connection (module doc)."""

    def __init__(
        self,
        origin: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        connect_timeout: float = 5.0,
        ping_interval: float = 30.0,
        unindexed_headers: frozenset[str] = frozenset(),
    ) -> None:
        """``origin``: ``https://host[:port]``. ``unindexed_headers``: header names sent as
        HPACK literals never indexed (values that change per request, e.g. ``apns-id``),
        so they don't churn the server's small dynamic table (apns.md §1)."""
        parts = urlsplit(origin)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError(f"origin must be https://host[:port], not {origin!r}")
        self.host = parts.hostname
        self.port = parts.port or 443
        default_port = self.port == 443
        host_text = f"[{self.host}]" if ":" in self.host else self.host
        self.authority = host_text if default_port else f"{host_text}:{self.port}"
        if ssl_context is None:
            ssl_context = ssl.create_default_context()
            ssl_context.set_alpn_protocols(["h2"])
        self._ssl = ssl_context
        self._connect_timeout = connect_timeout
        self._ping_interval = ping_interval
        self._unindexed = unindexed_headers
        self._conn: _Connection | None = None
        self._lock = asyncio.Lock()
        self._closed = False
        self.connections_opened = 0  # for tests and metrics

    async def request(
        self,
        method: str,
        path: str,
        headers: list[tuple[str, str]],
        body: bytes = b"",
        timeout: float = 10.0,
    ) -> H2Response:
        """One request/response exchange; headers are (name, value) pairs with lower-case
        names (RFC 9113 §8.2.2; sent as given: h2's header normalisation is off).
        Raises :class:`H2Retryable` (incl. timeout), :class:`H2TLSError`, :class:`H2Error`."""
        try:
            async with asyncio.timeout(timeout):
                for _ in range(3):
                    conn = await self._connection()
                    try:
                        return await conn.request(method, path, headers, body)
                    except _NotSent:
                        continue  # queued on a connection that went away: use a new one
                raise H2Retryable("connections keep closing before the request is sent")
        except TimeoutError:
            raise H2Retryable(f"no response within {timeout} s") from None

    async def close(self) -> None:
        self._closed = True
        if self._conn is not None:
            self._conn.close()
        self._conn = None
        await asyncio.sleep(0)  # let the transports' close callbacks run

    async def _connection(self) -> _Connection:
        conn = self._conn
        if conn is not None and conn.usable:
            return conn
        async with self._lock:  # one connect at a time; the others reuse its result
            if self._closed:
                raise H2Error("client closed")
            conn = self._conn
            if conn is not None and conn.usable:
                return conn
            if conn is not None:
                conn.close()  # GOAWAY'd or dead: its streams have already been failed
            self._conn = None
            self._conn = await self._open()
            return self._conn

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        transport: asyncio.BaseTransport | None = None
        try:
            async with asyncio.timeout(self._connect_timeout):
                transport, conn = await loop.create_connection(
                    lambda: _Connection(self.authority, self._ping_interval, self._unindexed),
                    self.host,
                    self.port,
                    ssl=self._ssl,
                    server_hostname=self.host,
                )
                # Wait for the server's SETTINGS before the first request, so its
                # MAX_CONCURRENT_STREAMS (1 on a fresh APNs token connection) is known.
                await conn.settings_received.wait()
        except ssl.SSLCertVerificationError as exc:
            raise H2TLSError(f"TLS certificate verification failed: {exc}") from None
        except TimeoutError:
            if transport is not None:
                transport.close()
            raise H2Retryable(f"connect to {self.authority} timed out") from None
        except (OSError, ssl.SSLError) as exc:
            raise H2Retryable(f"connect to {self.authority} failed: {exc}") from None
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2":
            transport.close()
            raise H2TLSError(f"{self.authority} did not negotiate ALPN h2")
        if not conn.usable:
            raise H2Retryable(f"{self.authority} closed the connection at once: {conn.error}")
        self.connections_opened += 1
        return conn
