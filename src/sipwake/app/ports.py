"""What the app layer needs from the outside that is not SIP: the metrics sink and the bus
to the other nodes.

``api.metrics.Metrics`` implements the metrics for Prometheus; ``NullMetrics`` is the
default so the core runs (and is tested) without it. ``app.cluster.ClusterNode``
implements the bus; ``LocalBus`` is a node alone."""

from __future__ import annotations

from typing import Protocol

from sipwake.storage.cluster import HeldEntry


class Bus(Protocol):
    """The other nodes sharing the store, as the call runner needs them."""

    @property
    def shared(self) -> bool: ...

    @property
    def node_id(self) -> str: ...

    def held(self, entry: HeldEntry, ttl: float) -> None:
        """Store a held call's snapshot: what a restarted or another node resumes it from
        (app/resume.py), and what every node lists. Written in order, the last wins."""

    def dropped(self, call_id: str) -> None:
        """The held call is over: nothing left to resume."""

    def forward_decline(self, call_id: str, token: str, reason: str) -> None:
        """Pass a decline link on to the node holding the call."""


class LocalBus:
    """A node alone: nothing to tell anyone."""

    shared = False

    def __init__(self, node_id: str = "") -> None:
        self.node_id = node_id

    def held(self, entry: HeldEntry, ttl: float) -> None:
        return None

    def dropped(self, call_id: str) -> None:
        return None

    def forward_decline(self, call_id: str, token: str, reason: str) -> None:
        return None


class Gauge(Protocol):
    def inc(self, amount: float = 1) -> None: ...

    def dec(self, amount: float = 1) -> None: ...


class MetricsPort(Protocol):
    @property
    def held_calls(self) -> Gauge: ...

    def message_received(self) -> None: ...

    def parse_error(self) -> None: ...

    def dropped(self) -> None: ...

    def response_sent(self, status: int) -> None: ...

    def registration(self, result: str) -> None: ...

    def call(self, result: str) -> None: ...

    def push(self, provider: str, outcome: str, latency: float | None = None) -> None: ...

    def auth_failure(self) -> None: ...

    def instant_message(self, result: str, count: int = 1) -> None:
        """A SIP MESSAGE kept for a sleeping device: stored, delivered, expired, dropped
        (over ``message.max_per_user``) or refused (the device answered 4xx/6xx)."""
        ...

    def refused(self, reason: str) -> None:
        """Work refused before it was done (push budget, overload): REFUSED_REASONS."""
        ...

    def refresh_push(self, provider: str, outcome: str) -> None:
        """A binding-refresh push sent (RFC 8599 §5.5): PUSH_OUTCOMES."""
        ...

    def binding_expired_unrefreshed(self) -> None:
        """A push binding reached its expiry although refresh pushes were planned."""
        ...

    def edge_register(self, result: str) -> None:
        """Edge mode: a REGISTER forwarded upstream, throttled (answered here), or a
        de-REGISTER we sent upstream (EDGE_REGISTER_RESULTS)."""
        ...


class _NullGauge:
    def inc(self, amount: float = 1) -> None:
        return None

    def dec(self, amount: float = 1) -> None:
        return None


class NullMetrics:
    """Counts nothing."""

    held_calls = _NullGauge()

    def message_received(self) -> None:
        return None

    def parse_error(self) -> None:
        return None

    def dropped(self) -> None:
        return None

    def response_sent(self, status: int) -> None:
        return None

    def registration(self, result: str) -> None:
        return None

    def call(self, result: str) -> None:
        return None

    def push(self, provider: str, outcome: str, latency: float | None = None) -> None:
        return None

    def auth_failure(self) -> None:
        return None

    def instant_message(self, result: str, count: int = 1) -> None:
        return None

    def refused(self, reason: str) -> None:
        return None

    def refresh_push(self, provider: str, outcome: str) -> None:
        return None

    def binding_expired_unrefreshed(self) -> None:
        return None

    def edge_register(self, result: str) -> None:
        return None


def call_result(status: int) -> str:
    """The calls_total label for the final status a caller got."""
    if 200 <= status < 300:
        return "answered"
    if status in (486, 600):
        return "busy"
    if status == 603:
        return "declined"
    if status == 487:
        return "cancelled"
    if status in (408, 480):
        return "no_answer"
    return "failed"
