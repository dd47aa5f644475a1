"""The flow table: live connections by id, and by (transport, remote address) for reuse.

Responses and requests for a registered device go back over the connection the device
registered on (RFC 3261 §18.2.2, RFC 5626 §5.3); outbound requests reuse a live connection
to the same peer rather than opening a new one (RFC 3261 §18.1.1, RFC 5923 §4).
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from sipwake.logs import LogEvery
from sipwake.sip.codec import Limits
from sipwake.transport.flow import Flow, Sink, TransportStats

log = logging.getLogger("sipwake.transport")

Key = tuple[str, str, int]  # (transport, normalised host, port)


class Connection(Protocol):
    """What the table needs from a stream or WebSocket connection."""

    @property
    def flow(self) -> Flow: ...

    @property
    def last_activity(self) -> float: ...

    def write(self, data: bytes) -> bool:
        """Queue one message; False (and counted as dropped) if it cannot be sent."""
        ...

    def close(self) -> None:
        """Flush what is queued, then close."""
        ...

    def abort(self) -> None:
        """Close at once, dropping what is queued (shutdown)."""
        ...

    def is_closing(self) -> bool: ...

    @property
    def incomplete_since(self) -> float | None:
        """When the message now being received began (or the connection was accepted, until
        its first message); None when nothing is pending. ``sip.message_timeout`` runs
        from here."""
        ...


def normalise_host(host: str) -> str:
    """Canonical text for an address so "[::1]", "::1" and "0::1" are one key."""
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return ipaddress.ip_address(host).compressed
    except ValueError:
        return host.lower()


def flow_key(transport: str, host: str, port: int) -> Key:
    return (transport, normalise_host(host), port)


class FlowTable:
    """conn_id -> connection, and (transport, host, port) -> conn_ids."""

    __slots__ = ("_by_id", "_by_key", "_keys", "_next_id")

    def __init__(self) -> None:
        self._by_id: dict[int, Connection] = {}
        self._by_key: dict[Key, list[int]] = {}  # oldest first; usually one
        self._keys: dict[int, list[Key]] = {}
        # A random start, not 1: bindings outlive the process (SQLite, Redis) and name
        # their connection by id, so after a restart, or on another worker, a small
        # counter would hand a stored id to some other device's new connection and route
        # its calls there. 2**40 random starts make that collision negligible.
        self._next_id = int.from_bytes(os.urandom(5), "big") | 1

    def new_id(self) -> int:
        conn_id = self._next_id
        self._next_id += 1
        return conn_id

    def add(self, conn: Connection) -> None:
        flow = conn.flow
        self._by_id[flow.conn_id] = conn
        self.alias(flow_key(flow.transport, *flow.remote), flow.conn_id)

    def alias(self, key: Key, conn_id: int) -> None:
        """Also find ``conn_id`` under ``key`` (e.g. the name:port we dialled)."""
        if conn_id not in self._by_id:
            return
        ids = self._by_key.setdefault(key, [])
        if conn_id in ids:
            return
        ids.append(conn_id)
        self._keys.setdefault(conn_id, []).append(key)

    def remove(self, conn: Connection) -> bool:
        """Forget ``conn``; False if it was not in the table."""
        conn_id = conn.flow.conn_id
        if self._by_id.get(conn_id) is not conn:
            return False
        del self._by_id[conn_id]
        for key in self._keys.pop(conn_id, ()):
            ids = self._by_key[key]
            ids.remove(conn_id)
            if not ids:
                del self._by_key[key]
        return True

    def get(self, conn_id: int) -> Connection | None:
        conn = self._by_id.get(conn_id)
        if conn is None or conn.is_closing():
            return None
        return conn

    def lookup(self, transport: str, host: str, port: int) -> Connection | None:
        """A live connection for reuse, or None; the newest wins, as older ones to the same
        peer may be on their way out."""
        for conn_id in reversed(self._by_key.get(flow_key(transport, host, port), ())):
            conn = self.get(conn_id)
            if conn is not None:
                return conn
        return None

    def is_alive(self, flow: Flow) -> bool:
        return self.get(flow.conn_id) is not None

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Connection]:
        return iter(list(self._by_id.values()))


@dataclass(slots=True)
class TransportContext:
    """Shared by every socket and connection of one TransportManager."""

    sink: Sink
    limits: Limits
    clock: Callable[[], float]
    stats: TransportStats = field(default_factory=TransportStats)
    table: FlowTable = field(default_factory=FlowTable)
    # Told of every connection that closes (the registrar forgets flows through it).
    on_close: list[Callable[[Flow], None]] = field(default_factory=list)
    # Accepted connections at once, in total and per remote address (0: no limit). File
    # descriptors are finite: without a bound, one client holding connections open
    # locks every other TCP/TLS/WS client out.
    max_connections: int = 0
    max_per_ip: int = 0
    per_ip: dict[str, int] = field(default_factory=dict)
    # The last-read UDP socket's receive queue (udp.py), for overload shedding: how long
    # the last sampled datagram waited in it (seconds), and its fill (0..1).
    watch_backlog: bool = False
    delay: float = 0.0
    backlog: float = 0.0
    refusal_log: LogEvery = field(default_factory=lambda: LogEvery(log))

    def admit(self, transport: str, ip: str) -> bool:
        """May a connection just accepted from ``ip`` stay? Counts and logs a refusal."""
        why = ""
        if self.max_connections and self.stats.connections_open >= self.max_connections:
            why = f"sip.max_connections ({self.max_connections})"
        elif self.max_per_ip and self.per_ip.get(ip, 0) >= self.max_per_ip:
            why = f"sip.max_connections_per_ip ({self.max_per_ip})"
        if not why:
            return True
        self.stats.connections_refused += 1
        self.refusal_log(
            self.clock(), "refusing %s connections from %s: %s reached", transport, ip, why
        )
        return False

    def deliver(self, data: bytes, flow: Flow) -> None:
        """Hand one message to the engine; its bugs must not tear down our read loop."""
        self.stats.messages_in += 1
        try:
            self.sink(data, flow)
        except Exception:
            self.stats.sink_errors += 1
            log.exception("sink failed for a message from %s %s", flow.transport, flow.remote)

    def opened(self, conn: Connection) -> None:
        self.table.add(conn)
        self.stats.connections_opened += 1
        self.stats.connections_open += 1
        ip = conn.flow.remote[0]
        self.per_ip[ip] = self.per_ip.get(ip, 0) + 1

    def closed(self, conn: Connection) -> None:
        if self.table.remove(conn):
            self.stats.connections_closed += 1
            self.stats.connections_open -= 1
            ip = conn.flow.remote[0]
            left = self.per_ip.pop(ip, 1) - 1
            if left > 0:
                self.per_ip[ip] = left
            for hook in self.on_close:
                try:
                    hook(conn.flow)
                except Exception:
                    log.exception(
                        "close hook failed for %s %s", conn.flow.transport, conn.flow.remote
                    )
