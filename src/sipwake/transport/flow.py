"""The transport contract the engine sees: a Flow (defined in sip/flows.py, the one flow
type), the Sink callback, and counters."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Final

from sipwake.sip.flows import Flow

__all__ = ["STREAM_TRANSPORTS", "TRANSPORTS", "WS_TRANSPORTS", "Flow", "Sink", "TransportStats"]

TRANSPORTS: Final = frozenset({"UDP", "TCP", "TLS", "WS", "WSS"})
STREAM_TRANSPORTS: Final = frozenset({"TCP", "TLS"})
WS_TRANSPORTS: Final = frozenset({"WS", "WSS"})


# Called once per complete SIP message (a datagram, a framed stream message or one WS
# message). Synchronous: it runs inside the read callback, so it must not block.
Sink = Callable[[bytes, Flow], None]


@dataclass(slots=True)
class TransportStats:
    """Counters for /metrics; plain ints, incremented in place."""

    messages_in: int = 0
    messages_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    framing_errors: int = 0  # stream/WS input that could not be framed; connection closed
    oversize: int = 0  # datagrams over the size limit (also counted in dropped)
    dropped: int = 0  # incoming or outgoing messages thrown away (oversize, EAGAIN, gone)
    send_errors: int = 0  # OS errors on send (also counted in dropped)
    sink_errors: int = 0  # exceptions raised by the sink (a bug above us; logged)
    pings: int = 0  # RFC 5626 CRLFCRLF keep-alives answered
    stun_requests: int = 0  # RFC 5626 §4.4.2 STUN Binding Requests answered (UDP)
    connections_opened: int = 0
    connections_closed: int = 0
    connections_open: int = 0
    idle_closed: int = 0
    connections_refused: int = 0  # over sip.max_connections or max_connections_per_ip
    message_timeouts: int = 0  # closed for not completing a message in sip.message_timeout

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}
