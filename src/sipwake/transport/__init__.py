"""Transport adapters: UDP, TCP, TLS and WebSocket (RFC 3261 §18, RFC 7118) behind one manager."""

from sipwake.transport.flow import Flow, Sink, TransportStats
from sipwake.transport.manager import TransportManager

__all__ = ["Flow", "Sink", "TransportManager", "TransportStats"]
