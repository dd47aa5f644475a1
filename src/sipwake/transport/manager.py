"""TransportManager: every listener and connection behind one small API for the engine.

The engine gets each complete message with its Flow through the sink, answers with
``send(flow, ...)`` over that very socket or connection (RFC 3261 §18.2.2), and dials out
with ``connect_and_send``, which reuses a live connection to the same peer first
(RFC 3261 §18.1.1, RFC 5923).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import ssl
import time
from collections.abc import Callable
from typing import Protocol

from sipwake.logs import LogEvery
from sipwake.sip.codec import Limits
from sipwake.transport.connections import (
    Connection,
    Key,
    TransportContext,
    flow_key,
    normalise_host,
)
from sipwake.transport.flow import (
    STREAM_TRANSPORTS,
    TRANSPORTS,
    Flow,
    Sink,
    TransportStats,
)
from sipwake.transport.stream import StreamConnection, open_stream
from sipwake.transport.udp import UdpEndpoint, family_of, open_socket
from sipwake.transport.ws import open_ws, serve_ws

__all__ = ["Sink", "TransportManager"]

log = logging.getLogger("sipwake.transport")

_CLOSE_GRACE = 1.0  # seconds close() waits for connections to flush before aborting them


class _Server(Protocol):
    """What asyncio.Server and websockets' Server have in common for shutdown."""

    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...


class TransportManager:
    """UDP sockets, TCP/TLS servers and WS/WSS servers, and the connections they carry."""

    def __init__(
        self,
        sink: Sink,
        *,
        limits: Limits,
        idle_timeout: float = 600.0,
        tls_server: ssl.SSLContext | None = None,
        tls_client: ssl.SSLContext | None = None,
        connect_timeout: float = 10.0,
        max_connections: int = 0,
        max_connections_per_ip: int = 0,
        message_timeout: float = 0.0,
        tls_handshake_timeout: float = 10.0,
    ) -> None:
        """``max_connections*`` and ``message_timeout``: 0 means no limit."""
        self._ctx = TransportContext(
            sink=sink,
            limits=limits,
            clock=time.monotonic,
            max_connections=max_connections,
            max_per_ip=max_connections_per_ip,
        )
        self.stats: TransportStats = self._ctx.stats
        self.idle_timeout = idle_timeout
        self.message_timeout = message_timeout
        self.tls_handshake_timeout = tls_handshake_timeout
        self._timeout_log = LogEvery(log)
        self.connect_timeout = connect_timeout
        self._tls_server = tls_server
        self._tls_client = tls_client
        self._udp: list[UdpEndpoint] = []  # listeners first, then ephemeral client sockets
        self._listeners: dict[str, list[tuple[str, int]]] = {}
        self._servers: list[_Server] = []
        self._dialing: dict[Key, asyncio.Task[Connection]] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # dialled WebSocket connections
        self._reaper: asyncio.Task[None] | None = None
        self._closed = False

    # listening --------------------------------------------------------------------------

    async def listen(
        self, transport: str, host: str, port: int, *, reuse_port: bool = False
    ) -> tuple[str, int]:
        """Start a listener; returns the bound address (port 0 picks an ephemeral port).
        ``reuse_port``: share the port with other processes (SO_REUSEPORT; ``--workers``),
        the kernel spreading datagrams and connections among them by address hash."""
        transport = _check_transport(transport)
        loop = asyncio.get_running_loop()
        host = normalise_host(host)
        ctx = self._ctx
        if transport == "UDP":
            endpoint = UdpEndpoint(open_socket(host, port, reuse_port=reuse_port), ctx, loop)
            # Listeners go before ephemeral client sockets so they are preferred for sending.
            listeners = len(self._listeners.get("UDP", ()))
            self._udp.insert(listeners, endpoint)
            addr = endpoint.local
        elif transport in STREAM_TRANSPORTS:
            tls = self._require(self._tls_server, transport) if transport == "TLS" else None
            server = await loop.create_server(
                lambda: StreamConnection(ctx, transport),
                host,
                port,
                ssl=tls,
                reuse_port=reuse_port,
                ssl_handshake_timeout=self.tls_handshake_timeout if tls is not None else None,
            )
            self._servers.append(server)
            addr = _sockname(server.sockets[0])
        else:
            tls = self._require(self._tls_server, transport) if transport == "WSS" else None
            ws_server = await serve_ws(
                ctx,
                transport,
                host,
                port,
                tls,
                reuse_port=reuse_port,
                handshake_timeout=self.tls_handshake_timeout,
            )
            self._servers.append(ws_server)
            addr = _sockname(next(iter(ws_server.sockets)))
        self._listeners.setdefault(transport, []).append(addr)
        self._start_reaper()
        log.info("listening on %s %s:%d", transport, addr[0], addr[1])
        return addr

    def udp_backlog(self) -> float:
        """How full (0..1) the receive queue of the UDP socket read last was; measured
        only after ``watch_backlog()``."""
        return self._ctx.backlog

    def udp_delay(self) -> float:
        """How long (seconds) the last sampled datagram waited in its UDP socket's
        receive queue; measured only after ``watch_backlog()``."""
        return self._ctx.delay

    def watch_backlog(self) -> None:
        self._ctx.watch_backlog = True
        for endpoint in self._udp:
            endpoint.watch()

    def on_close(self, hook: Callable[[Flow], None]) -> None:
        """Call ``hook`` with the flow of every connection that closes."""
        self._ctx.on_close.append(hook)

    def local_address(self, transport: str) -> tuple[str, int] | None:
        """The first listener of that kind (for Via sent-by and Record-Route)."""
        addrs = self._listeners.get(transport.upper())
        return addrs[0] if addrs else None

    # sending ----------------------------------------------------------------------------

    def send(self, flow: Flow, data: bytes) -> bool:
        """Send over that very connection or UDP socket; False if it is gone or full."""
        if self._closed:
            self.stats.dropped += 1
            return False
        if flow.transport == "UDP":
            return self._udp_endpoint(flow.local, flow.remote[0]).sendto(data, flow.remote)
        conn = self._ctx.table.get(flow.conn_id)
        if conn is None:
            self.stats.dropped += 1
            return False
        return conn.write(data)

    def send_udp(
        self, host: str, port: int, data: bytes, local: tuple[str, int] | None = None
    ) -> Flow:
        """Send one datagram; ``host`` must be an IP literal (resolve names first)."""
        if self._closed:
            raise ConnectionError("transport manager is closed")
        host = normalise_host(host)
        ipaddress.ip_address(host)  # ValueError for a name: sendto would block resolving it
        endpoint = self._udp_endpoint(local, host)
        endpoint.sendto(data, (host, port))
        return Flow("UDP", endpoint.local, (host, port))

    async def connect(self, transport: str, host: str, port: int) -> Flow:
        """A flow to (transport, host, port) without sending on it yet.

        A live connection to that peer is reused, else one is dialled (RFC 3261 §18.1.1,
        RFC 5923); for UDP it names the socket we would send from. Raises OSError
        (ConnectionError, TimeoutError, ssl.SSLError) when no connection can be made: the
        engine treats it as a transport error (RFC 3261 §8.1.3.1, §17.1.4).
        """
        transport = _check_transport(transport)
        if self._closed:
            raise ConnectionError("transport manager is closed")
        host = normalise_host(host)
        if transport == "UDP":
            ip = await _resolve(host, port)
            return Flow("UDP", self._udp_endpoint(None, ip).local, (ip, port))
        conn = self._ctx.table.lookup(transport, host, port)
        if conn is None:
            conn = await self._dial(transport, host, port)
        return conn.flow

    async def connect_and_send(self, transport: str, host: str, port: int, data: bytes) -> Flow:
        """``connect`` then ``send``; raises ConnectionError if the connection died already."""
        flow = await self.connect(transport, host, port)
        if not self.send(flow, data) and not self.is_alive(flow):
            raise ConnectionError(f"{flow.transport} connection to {host}:{port} closed")
        return flow

    def close_flow(self, flow: Flow) -> None:
        """Close that connection after what is queued on it is sent (no-op for UDP)."""
        conn = self._ctx.table.get(flow.conn_id) if flow.transport != "UDP" else None
        if conn is not None:
            conn.close()

    def connection_counts(self) -> dict[str, int]:
        """Open connections by transport (``tcp``, ``tls``, ``ws``, ``wss``), for metrics."""
        counts: dict[str, int] = {}
        for conn in self._ctx.table:
            transport = conn.flow.transport.lower()
            counts[transport] = counts.get(transport, 0) + 1
        return counts

    def is_alive(self, flow: Flow) -> bool:
        if flow.transport == "UDP":
            return any(e.local == flow.local for e in self._udp)
        return self._ctx.table.is_alive(flow)

    # dialling ---------------------------------------------------------------------------

    async def _dial(self, transport: str, host: str, port: int) -> Connection:
        # Concurrent sends to one peer share one connection attempt.
        key = flow_key(transport, host, port)
        task = self._dialing.get(key)
        if task is None:
            task = asyncio.ensure_future(self._open(transport, host, port))
            self._dialing[key] = task
            task.add_done_callback(lambda t: self._dial_done(key, t))
        return await asyncio.shield(task)

    def _dial_done(self, key: Key, task: asyncio.Task[Connection]) -> None:
        if self._dialing.get(key) is task:
            del self._dialing[key]
        if not task.cancelled():
            task.exception()  # retrieved: a waiter may have been cancelled meanwhile

    async def _open(self, transport: str, host: str, port: int) -> Connection:
        if self._closed:
            raise ConnectionError("transport manager is closed")
        self._start_reaper()
        ctx = self._ctx
        conn: Connection
        if transport == "TCP":
            conn = await open_stream(
                ctx, "TCP", host, port, timeout=self.connect_timeout,
                local_addr=self._source(transport, host),
            )  # fmt: skip
        elif transport == "TLS":
            conn = await open_stream(
                ctx,
                "TLS",
                host,
                port,
                ssl_context=self._require(self._tls_client, transport),
                server_hostname=host,  # certificate must match what we dialled (RFC 5922)
                timeout=self.connect_timeout,
                local_addr=self._source(transport, host),
            )
        else:
            tls = self._require(self._tls_client, transport) if transport == "WSS" else None
            conn = await open_ws(
                ctx,
                transport,
                host,
                port,
                ssl_context=tls,
                timeout=self.connect_timeout,
                tasks=self._tasks,
            )
        # Find it again by the name we dialled, not only by the peer's socket address.
        ctx.table.alias(flow_key(transport, host, port), conn.flow.conn_id)
        return conn

    def _source(self, transport: str, remote: str) -> tuple[str, int] | None:
        """Dial from the address we listen on for ``transport`` when that is one specific
        address: a peer that knows us by address (a registrar trusting ours, an ACL) sees
        the one we advertise, as it does over UDP, where we send from the listening
        socket. None (the kernel's choice) for a wildcard listener, another address
        family, or a loopback listener towards a host that is not loopback."""
        try:
            peer = ipaddress.ip_address(remote.strip("[]"))
        except ValueError:
            return None  # a name: its address family is not known before resolving it
        for host, _ in self._listeners.get(transport, ()):
            ip = ipaddress.ip_address(host.strip("[]"))
            if ip.is_unspecified or ip.version != peer.version:
                continue
            if ip.is_loopback and not peer.is_loopback:
                continue
            return str(ip), 0
        return None

    def _udp_endpoint(self, local: tuple[str, int] | None, remote_host: str) -> UdpEndpoint:
        family = family_of(remote_host)
        if local is not None:
            for endpoint in self._udp:
                if endpoint.local == local:
                    return endpoint
        for endpoint in self._udp:
            if endpoint.family == family:
                return endpoint
        # No listener of that family: an ephemeral socket, still read so answers arrive.
        wildcard = "::" if family == socket.AF_INET6 else "0.0.0.0"
        endpoint = UdpEndpoint(open_socket(wildcard, 0), self._ctx, asyncio.get_running_loop())
        self._udp.append(endpoint)
        return endpoint

    def _require(self, context: ssl.SSLContext | None, transport: str) -> ssl.SSLContext:
        if context is None:
            raise ValueError(f"{transport} needs a TLS context (tls_server / tls_client)")
        return context

    # idle reaping and shutdown ----------------------------------------------------------

    def _start_reaper(self) -> None:
        if self._reaper is None and not self._closed:
            self._reaper = asyncio.get_running_loop().create_task(self._reap())

    async def _reap(self) -> None:
        # Idle connections hold a file descriptor and buffers each; a device that still
        # wants its flow sends keep-alives well within the timeout (RFC 5626 §4.4.1).
        interval = min(self.idle_timeout, self.message_timeout or self.idle_timeout) / 4
        interval = max(min(interval, 10.0), 0.01)
        while True:
            await asyncio.sleep(interval)
            self.reap_idle(time.monotonic())

    def reap_idle(self, now: float) -> int:
        """Close connections silent for longer than idle_timeout, or that took longer than
        message_timeout over a message (or, accepted, over their first); returns how many."""
        deadline = now - self.idle_timeout
        slow = now - self.message_timeout if self.message_timeout else float("-inf")
        reaped = 0
        for conn in self._ctx.table:
            if conn.is_closing():
                continue
            began = conn.incomplete_since
            if began is not None and began < slow:
                self.stats.message_timeouts += 1
                self._timeout_log(
                    now,
                    "closing %s connection from %s: no whole message within "
                    "sip.message_timeout (%.1f s)",
                    conn.flow.transport,
                    conn.flow.remote[0],
                    self.message_timeout,
                )
                conn.abort()
                reaped += 1
            elif conn.last_activity < deadline:
                log.debug("closing idle %s connection to %s", conn.flow.transport, conn.flow.remote)
                conn.close()
                reaped += 1
                self.stats.idle_closed += 1
        return reaped

    async def close(self) -> None:
        """Stop listening, close every connection, release every socket."""
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        for dialing in list(self._dialing.values()):
            dialing.cancel()
        for endpoint in self._udp:
            endpoint.close()
        self._udp.clear()
        for server in self._servers:
            server.close()
        for conn in self._ctx.table:
            conn.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _CLOSE_GRACE
        while (len(self._ctx.table) or self._tasks) and loop.time() < deadline:
            await asyncio.sleep(0.01)
        for conn in self._ctx.table:
            conn.abort()
        for task in list(self._tasks):
            task.cancel()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        self._listeners.clear()


def _check_transport(transport: str) -> str:
    name = transport.upper()
    if name not in TRANSPORTS:
        raise ValueError(f"unknown transport {transport!r}")
    return name


def _sockname(sock: socket.socket) -> tuple[str, int]:
    addr = sock.getsockname()
    return (addr[0], addr[1])


async def _resolve(host: str, port: int) -> str:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        if not infos:
            raise OSError(f"cannot resolve {host}") from None
        return str(infos[0][4][0])
    return host
