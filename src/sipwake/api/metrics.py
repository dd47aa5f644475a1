"""Prometheus metrics for the whole server, on an injected registry (never the global one).

One ``Metrics`` object is built by the composition root and handed to whoever counts. The
registry is injected so tests and several servers in one process do not collide, and so
nothing registers itself as an import side effect.

Label children are bound up front for every label value we know of: ``.labels()`` costs a
dict lookup plus a lock, a bound child's ``inc()`` about 0.45 µs (DEPENDENCIES.md). Callers
use the plain methods below and never see labels. A value outside the known set still works
(bound on first use and cached), except push outcomes, a closed set (ARCHITECTURE.md, push/
base.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # Prometheus text format 0.0.4

RESPONSE_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx", "6xx")
REGISTRATION_RESULTS = ("ok", "unregistered", "rejected", "unauthorized")
CALL_RESULTS = ("answered", "busy", "declined", "cancelled", "no_answer", "expired", "failed")
PUSH_PROVIDERS = ("apns", "fcm", "webpush", "webhook")
PUSH_OUTCOMES = ("delivered", "token_rejected", "transient", "permanent")
# Accepted declines by the app's reason, then the refusals (policy/decline.py slugs + route).
DECLINE_REASONS = (
    "busy",
    "decline",
    "bad_token",
    "expired",
    "wrong_call",
    "replayed",
    "forbidden",  # a 403 from the service with a reason outside the four above
    "unknown_call",
    "bad_request",
)
# Stored SIP MESSAGEs (issue 13): what happened to each (per device for delivered/refused).
MESSAGE_RESULTS = ("stored", "delivered", "expired", "dropped", "refused")
# Work refused before it was done (issue 15): push budget, anonymous push, overload.
REFUSED_REASONS = (
    "push_budget_device",
    "push_budget_source",
    "push_needs_auth",
    "overload",
    "auth_budget",
)
# Push round trips: a warm HTTP/2 connection answers in tens of ms, a cold one in hundreds.
PUSH_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _Children:
    """Label children of one labelled counter, bound up front, cached when bound late."""

    def __init__(self, parent: Counter, known: tuple[str, ...]) -> None:
        self._parent = parent
        self._children: dict[str, Counter] = {v: parent.labels(v) for v in known}

    def __getitem__(self, value: str) -> Counter:
        child = self._children.get(value)
        if child is None:
            child = self._children[value] = self._parent.labels(value)
        return child


class Metrics:
    """Counters, gauges and a histogram for SIP, registrations, calls, pushes and declines."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.sip_messages_received = Counter(
            "sip_messages_received", "SIP messages received (parsed or not)", registry=r
        )
        self.sip_parse_errors = Counter(
            "sip_parse_errors", "SIP messages rejected by the parser", registry=r
        )
        self.sip_dropped = Counter(
            "sip_dropped",
            "SIP messages dropped without an answer",
            registry=r,
        )
        responses = Counter(
            "sip_responses_sent", "SIP responses sent, by status class", ["class"], registry=r
        )
        self._responses = [responses.labels(c) for c in RESPONSE_CLASSES]
        self._registrations = _Children(
            Counter("registrations", "REGISTER requests by result", ["result"], registry=r),
            REGISTRATION_RESULTS,
        )
        self.bindings = Gauge("bindings", "Live bindings in the store", registry=r)
        self._calls = _Children(
            Counter("calls", "Finished calls by result", ["result"], registry=r), CALL_RESULTS
        )
        self.held_calls = Gauge("held_calls", "Calls held while a device is woken", registry=r)
        pushes = Counter(
            "pushes", "Push requests by provider and outcome", ["provider", "outcome"], registry=r
        )
        self._pushes_parent = pushes
        self._pushes: dict[tuple[str, str], Counter] = {
            (p, o): pushes.labels(p, o) for p in PUSH_PROVIDERS for o in PUSH_OUTCOMES
        }
        self.push_latency = Histogram(
            "push_latency_seconds",
            "Push request round trip to the provider",
            buckets=PUSH_LATENCY_BUCKETS,
            registry=r,
        )
        self._declines = _Children(
            Counter("declines", "Decline requests from apps, by reason", ["reason"], registry=r),
            DECLINE_REASONS,
        )
        self._instant_messages = _Children(
            Counter(
                "instant_messages",
                "SIP MESSAGEs kept for sleeping devices: stored, delivered (per device), "
                "expired, dropped over the per-user quota, refused by a device",
                ["result"],
                registry=r,
            ),
            MESSAGE_RESULTS,
        )
        self.auth_failures = Counter(
            "auth_failures", "Requests refused for bad credentials", registry=r
        )
        self._refused = _Children(
            Counter(
                "refused", "Work refused before it was done, by reason", ["reason"], registry=r
            ),
            REFUSED_REASONS,
        )

    def watch_keepalives(self, read: Callable[[], dict[str, int]]) -> None:
        """Keep-alives the transports answered, read from their counters at scrape time
        (the UDP read loop only bumps a plain int): ``read()`` gives {"stun": n,
        "crlf": n} (RFC 5626 §4.4.1 CRLF pings, §4.4.2 STUN Binding Requests)."""
        self.registry.register(_Keepalives(read))

    # -- plain methods: callers never touch labels ------------------------------------------

    def message_received(self) -> None:
        self.sip_messages_received.inc()

    def parse_error(self) -> None:
        self.sip_parse_errors.inc()

    def dropped(self) -> None:
        self.sip_dropped.inc()

    def response_sent(self, status: int) -> None:
        """Count one response by class; ``status`` outside 100..699 is a bug upstream."""
        self._responses[status // 100 - 1].inc()

    def registration(self, result: str) -> None:
        self._registrations[result].inc()

    def set_bindings(self, count: int) -> None:
        self.bindings.set(count)

    def call(self, result: str) -> None:
        self._calls[result].inc()

    def push(self, provider: str, outcome: str, latency: float | None = None) -> None:
        """Count a push result; ``latency`` (seconds) also feeds the histogram."""
        child = self._pushes.get((provider, outcome))
        if child is None:
            if outcome not in PUSH_OUTCOMES:
                raise ValueError(f"unknown push outcome {outcome!r}")
            child = self._pushes[provider, outcome] = self._pushes_parent.labels(provider, outcome)
        child.inc()
        if latency is not None:
            self.push_latency.observe(latency)

    def decline(self, reason: str) -> None:
        self._declines[reason].inc()

    def auth_failure(self) -> None:
        self.auth_failures.inc()

    def instant_message(self, result: str, count: int = 1) -> None:
        if count:
            self._instant_messages[result].inc(count)

    def refused(self, reason: str) -> None:
        self._refused[reason].inc()

    def render(self) -> bytes:
        """The registry in the Prometheus text exposition format (``CONTENT_TYPE``)."""
        return generate_latest(self.registry)


class _Keepalives(Collector):
    def __init__(self, read: Callable[[], dict[str, int]]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "sip_keepalives", "Keep-alives answered (RFC 5626 §4.4), by kind", labels=["kind"]
        )
        for kind, count in sorted(self._read().items()):
            family.add_metric([kind], count)
        yield family
