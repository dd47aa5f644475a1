"""A small HTTP/1.1 client (``h11`` over asyncio streams): one-shot requests and a
keep-alive client for one origin.

``http1_request`` opens a connection, sends ``Connection: close`` and closes it: for the
rare requests (the OAuth token endpoint about once an hour, the emulators, tests).

``Http1Client`` keeps idle connections to one origin for the next request (RFC 9112 §9.3,
persistent connections): the webhook provider sends a push per call, and a fresh TCP
connection for each doubled the sender's CPU per push, a fresh TLS one multiplied it by 5.7
(bench/README.md, "The push path like for like, webhook keep-alive"). An idle connection is
dropped once the server has closed it, or after ``idle_timeout`` seconds, shorter than
common servers' own keep-alive timeouts (Node.js 5 s, nginx 75 s) so that we rarely race
a server closing it. If a *reused* connection still fails before any byte of the response
arrived, the request is sent once more on a fresh connection: the server closed it as we
wrote (RFC 9112 §9.3.1 lets a client retry when it knows the server did not process the
request; a server that processed it and then closed without any answer would see it
twice). A failure on a fresh connection is never retried here: the caller decides
(push/limits.py retries transient push errors).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import h11

MAX_REPLY_BYTES = 1 << 20


class Http1Error(Exception):
    """The HTTP/1.1 exchange failed before a complete response arrived (connect, TLS,
    timeout, malformed response). Always worth retrying later: nothing was answered."""


@dataclass(frozen=True, slots=True)
class HttpReply:
    status: int
    headers: dict[str, str]  # lower-cased names; repeated headers joined with ", "
    body: bytes


def parse_retry_after(value: str | None) -> float | None:
    """Delta-seconds form of Retry-After (RFC 9110 §10.2.3); HTTP dates are not used by
    push services and are ignored."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


@dataclass(frozen=True, slots=True)
class _Origin:
    host: str
    port: int
    tls: bool
    host_header: str  # the URL's authority, as the Host header (RFC 9112 §3.2)


def _origin(url: str) -> tuple[_Origin, str]:
    """The origin and the request target (path and query) of ``url``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Http1Error(f"bad URL {url!r}")
    tls = parts.scheme == "https"
    try:
        port = parts.port or (443 if tls else 80)
    except ValueError:
        raise Http1Error(f"bad port in URL {url!r}") from None
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return _Origin(parts.hostname, port, tls, parts.netloc.rpartition("@")[2]), target


class _Conn:
    """One connection and its h11 state; ``used`` once a request went over it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.CLIENT)
        self.used = False
        self.idle_since = 0.0

    def reusable(self) -> bool:
        """Both sides finished the exchange and neither asked to close (h11 tracks the
        Connection header and HTTP/1.0 peers)."""
        return self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE

    def closed_by_peer(self) -> bool:
        return self.writer.is_closing() or self.reader.at_eof()

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (OSError, ssl.SSLError):
            pass


class _NothingReceived(Exception):
    """A reused connection failed before the response began (see the module doc)."""


async def _open(origin: _Origin, ctx: ssl.SSLContext | None) -> _Conn:
    reader, writer = await asyncio.open_connection(
        origin.host, origin.port, ssl=ctx, server_hostname=origin.host if ctx else None
    )
    return _Conn(reader, writer)


async def _exchange(
    conn: _Conn,
    origin: _Origin,
    *,
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    body: bytes,
    close: bool,
) -> HttpReply:
    reused, conn.used = conn.used, True
    all_headers = [("host", origin.host_header), ("content-length", str(len(body)))]
    if close:
        all_headers.append(("connection", "close"))
    all_headers += headers
    c = conn.h11
    out = [c.send(h11.Request(method=method, target=target, headers=all_headers))]
    if body:
        out.append(c.send(h11.Data(data=body)))
    out.append(c.send(h11.EndOfMessage()))
    status = 0
    reply_headers: dict[str, str] = {}
    chunks: list[bytes] = []
    size = 0
    try:
        conn.writer.write(b"".join(chunk for chunk in out if chunk))
        await conn.writer.drain()
        while True:
            event = c.next_event()
            if event is h11.NEED_DATA:
                c.receive_data(await conn.reader.read(65536))
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
                for name, value in event.headers:
                    key = name.decode("latin-1").lower()
                    text = value.decode("latin-1")
                    reply_headers[key] = (
                        f"{reply_headers[key]}, {text}" if key in reply_headers else text
                    )
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > MAX_REPLY_BYTES:
                    raise OSError("response body too large")
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return HttpReply(status, reply_headers, b"".join(chunks))
            elif isinstance(event, h11.ConnectionClosed):
                raise OSError("connection closed before the response ended")
    except (OSError, h11.RemoteProtocolError) as exc:
        if reused and not status and not chunks:
            raise _NothingReceived(str(exc)) from None
        raise


async def http1_request(
    method: str,
    url: str,
    headers: list[tuple[str, str]],
    body: bytes,
    *,
    ssl_context: ssl.SSLContext | None = None,
    timeout: float = 10.0,
) -> HttpReply:
    """One request on a fresh connection (``Connection: close``). Raises Http1Error."""
    origin, target = _origin(url)
    ctx = (ssl_context or ssl.create_default_context()) if origin.tls else None
    conn: _Conn | None = None
    try:
        async with asyncio.timeout(timeout):
            conn = await _open(origin, ctx)
            return await _exchange(
                conn, origin, method=method, target=target, headers=headers, body=body, close=True
            )
    except TimeoutError:
        raise Http1Error(f"{method} {url}: timed out after {timeout} s") from None
    except (OSError, ssl.SSLError, h11.ProtocolError) as exc:
        raise Http1Error(f"{method} {url}: {exc}") from None
    finally:
        if conn is not None:
            await conn.close()


class Http1Client:
    """Requests to one origin over kept-alive connections (module doc). At most
    ``max_idle`` idle connections are kept; concurrent requests open more as needed."""

    def __init__(
        self,
        url: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_idle: int = 16,
        idle_timeout: float = 4.0,
    ) -> None:
        self.origin, self.target = _origin(url)
        self._ctx = (ssl_context or ssl.create_default_context()) if self.origin.tls else None
        self._idle: list[_Conn] = []
        self._max_idle = max_idle
        self._idle_timeout = idle_timeout
        self._closed = False
        self.opened = 0  # connections opened so far (tests, bench)

    async def request(
        self,
        method: str,
        headers: list[tuple[str, str]],
        body: bytes,
        *,
        timeout: float = 10.0,
    ) -> HttpReply:
        """``method`` to the client's URL. Raises Http1Error."""
        what = f"{method} {self.origin.host_header}{self.target}"
        try:
            async with asyncio.timeout(timeout):
                conn = await self._take()
                try:
                    reply = await self._send(conn, method, headers, body)
                except _NothingReceived:
                    await conn.close()
                    conn = await self._fresh()
                    reply = await self._send(conn, method, headers, body)
                self._give_back(conn)
                return reply
        except TimeoutError:
            raise Http1Error(f"{what}: timed out after {timeout} s") from None
        except (OSError, ssl.SSLError, h11.ProtocolError, _NothingReceived) as exc:
            raise Http1Error(f"{what}: {exc}") from None

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()

    async def _send(
        self, conn: _Conn, method: str, headers: list[tuple[str, str]], body: bytes
    ) -> HttpReply:
        try:
            return await _exchange(
                conn,
                self.origin,
                method=method,
                target=self.target,
                headers=headers,
                body=body,
                close=False,
            )
        except BaseException:
            # Failed, timed out or cancelled mid-exchange: the connection's state is
            # unknown, so it is never reused (closing it is not awaited: the caller's
            # error comes first).
            conn.writer.close()
            raise

    async def _take(self) -> _Conn:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()  # the most recently used: the likeliest still open
            if conn.closed_by_peer() or now - conn.idle_since > self._idle_timeout:
                conn.writer.close()
                continue
            return conn
        return await self._fresh()

    async def _fresh(self) -> _Conn:
        conn = await _open(self.origin, self._ctx)
        self.opened += 1
        return conn

    def _give_back(self, conn: _Conn) -> None:
        if self._closed or not conn.reusable() or len(self._idle) >= self._max_idle:
            conn.writer.close()
            return
        conn.h11.start_next_cycle()
        conn.idle_since = time.monotonic()
        self._idle.append(conn)
