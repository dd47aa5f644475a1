"""Prometheus metrics for the whole server, on an injected registry (never the global one).

Every name starts with ``sipwake_``. With ``--workers N`` the supervisor gives every worker
the same ``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's multiprocess mode: each process
writes its values to memory-mapped files there), and worker 0's ``/metrics`` adds them up:
counters and histograms summed, gauges summed over live processes, or the maximum for values
every worker reads from the shared store (bindings by provider, credential expiry).

Values that live elsewhere (connections per transport, pushes in flight, keep-alives the
transports answered, credential expiry) are read by ``sample()``: before each scrape in a
single process, every few seconds in each worker (server.py).

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

import os
import platform
import re
import time
from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from sipwake import __version__

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # Prometheus text format 0.0.4

RESPONSE_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx", "6xx")
REGISTRATION_RESULTS = ("ok", "unregistered", "rejected", "unauthorized")
# Edge mode (docs/edge-mode.md): a device REGISTER relayed upstream or answered here, and
# the de-REGISTERs we send upstream ourselves.
EDGE_REGISTER_RESULTS = ("forwarded", "throttled", "deregistered")
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
    "connection_limit",  # sip.max_connections / max_connections_per_ip
    "message_timeout",  # sip.message_timeout: a connection too slow to send a message
)
# Push round trips: a warm HTTP/2 connection answers in tens of ms, a cold one in hundreds.
PUSH_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Waking a phone: the push's delivery, the OS launching the app, its TLS and REGISTER.
WAKE_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 30.0)
TRANSPORTS = ("tcp", "tls", "ws", "wss")  # connection-oriented: UDP has no connections
BINDING_PROVIDERS = (*PUSH_PROVIDERS, "none")  # "none": a binding without a push target
# Push failure reasons become a label: keep the provider's reason token (Unregistered,
# BadDeviceToken, UNREGISTERED, QUOTA_EXCEEDED...), never free text.
_REASON_TOKEN = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,39}")
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
ASYNC_SAMPLE_MAX_AGE = 10.0  # seconds between walks of the store for sipwake_bindings


def reason_label(reason: str) -> str:
    return reason if _REASON_TOKEN.fullmatch(reason) else "other"


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


class _Tally:
    """Counts of one labelled counter kept as plain ints until the next ``fold``: for the
    counters bumped for every message (received, responses sent, refusals). A child's
    ``inc()`` takes the value's lock: 0.4-0.55 µs, three of them a tenth of what a
    refusal under overload costs; adding to an int in a dict is a twentieth of that."""

    __slots__ = ("_children", "_counts")

    def __init__(self, children: _Children) -> None:
        self._children = children
        self._counts: dict[str | int, int] = {}

    def add(self, value: str | int, count: int = 1) -> None:
        counts = self._counts
        counts[value] = counts.get(value, 0) + count

    def fold(self) -> None:
        counts, self._counts = self._counts, {}
        for value, count in counts.items():
            self._children[str(value)].inc(count)


class Metrics:
    """Every series the server exports, behind plain methods (callers never see labels).

    The per-message counters (``message_received``, ``response_sent``, ``registration``,
    ``call``, ``refused``) reach the registry at each ``sample()``: before every scrape in
    one process, every few seconds in a worker (server.py), like the values read from
    elsewhere. Read the registry directly only after a ``sample()``."""

    def __init__(
        self, registry: CollectorRegistry | None = None, *, multiprocess_dir: str | None = None
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        # Set by the supervisor for --workers; then render() aggregates every worker's files.
        self.multiprocess_dir = multiprocess_dir
        r = self.registry
        self.sip_messages_received = Counter(
            "sipwake_sip_messages_received", "SIP messages received (parsed or not)", registry=r
        )
        self.sip_parse_errors = Counter(
            "sipwake_sip_parse_errors", "SIP messages rejected by the parser", registry=r
        )
        self.sip_dropped = Counter(
            "sipwake_sip_dropped", "SIP messages dropped without an answer", registry=r
        )
        self._responses = _Children(
            Counter(
                "sipwake_sip_responses_sent", "SIP responses sent, by status code", ["code"],
                registry=r,
            ),
            ("100", "110", "180", "200", "401", "407", "404", "480", "486", "487", "603"),
        )  # fmt: skip
        self._registrations = _Children(
            Counter("sipwake_registrations", "REGISTER requests by result", ["result"], registry=r),
            REGISTRATION_RESULTS,
        )
        bindings = Gauge(
            "sipwake_bindings",
            "Live bindings in the store, by push provider (none: no push target)",
            ["provider"],
            registry=r,
            multiprocess_mode="livemax",  # every worker reads the same shared store
        )
        self._bindings = {p: bindings.labels(p) for p in BINDING_PROVIDERS}
        self._bindings_parent = bindings
        self._calls = _Children(
            Counter("sipwake_calls", "Finished calls by result", ["result"], registry=r),
            CALL_RESULTS,
        )
        self.held_calls = Gauge(
            "sipwake_held_calls",
            "Calls held while a device is woken",
            registry=r,
            multiprocess_mode="livesum",
        )
        pushes = Counter(
            "sipwake_pushes",
            "Push requests by provider, outcome and the provider's reason",
            ["provider", "outcome", "reason"],
            registry=r,
        )
        self._pushes_parent = pushes
        self._pushes: dict[tuple[str, str, str], Counter] = {
            (p, o, ""): pushes.labels(p, o, "") for p in PUSH_PROVIDERS for o in PUSH_OUTCOMES
        }
        self._refresh_pushes = Counter(
            "sipwake_refresh_pushes",
            "Binding-refresh pushes (RFC 8599 §5.5) by provider and outcome",
            ["provider", "outcome"],
            registry=r,
        )
        self._edge_registers = _Children(
            Counter(
                "sipwake_edge_registers",
                "Edge mode REGISTERs: relayed upstream, answered here, de-REGISTERs we sent",
                ["result"],
                registry=r,
            ),
            EDGE_REGISTER_RESULTS,
        )
        self.bindings_expired_unrefreshed = Counter(
            "sipwake_bindings_expired_unrefreshed",
            "Push bindings that expired although refresh pushes were sent",
            registry=r,
        )
        self._push_latency = Histogram(
            "sipwake_push_latency_seconds",
            "Push request round trip to the provider, by provider",
            ["provider"],
            buckets=PUSH_LATENCY_BUCKETS,
            registry=r,
        )
        self._in_flight = Gauge(
            "sipwake_pushes_in_flight",
            "Push requests waiting for the provider's answer",
            ["provider"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.wake_register = Histogram(
            "sipwake_wake_register_seconds",
            "From a device's push sent to its wake REGISTER",
            buckets=WAKE_BUCKETS,
            registry=r,
        )
        self.wake_delivery = Histogram(
            "sipwake_wake_delivery_seconds",
            "From a held INVITE's arrival to its delivery to a woken device",
            buckets=WAKE_BUCKETS,
            registry=r,
        )
        self._declines = _Children(
            Counter(
                "sipwake_declines", "Decline requests from apps, by reason", ["reason"],
                registry=r,
            ),
            DECLINE_REASONS,
        )  # fmt: skip
        self._instant_messages = _Children(
            Counter(
                "sipwake_instant_messages",
                "SIP MESSAGEs kept for sleeping devices: stored, delivered (per device), "
                "expired, dropped over the per-user quota, refused by a device",
                ["result"],
                registry=r,
            ),
            MESSAGE_RESULTS,
        )
        self.auth_failures = Counter(
            "sipwake_auth_failures", "Requests refused for bad credentials", registry=r
        )
        self._refused = _Children(
            Counter(
                "sipwake_refused", "Work refused before it was done, by reason", ["reason"],
                registry=r,
            ),
            REFUSED_REASONS,
        )  # fmt: skip
        connections = Gauge(
            "sipwake_open_connections",
            "Open SIP connections by transport",
            ["transport"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self._connections = {t: connections.labels(t) for t in TRANSPORTS}
        self._keepalives = _Children(
            Counter(
                "sipwake_sip_keepalives", "Keep-alives answered (RFC 5626 §4.4), by kind",
                ["kind"], registry=r,
            ),
            ("stun", "crlf"),
        )  # fmt: skip
        self._credential_expiry = Gauge(
            "sipwake_credential_expiry_timestamp_seconds",
            "When a credential expires (certificate notAfter, FCM access token), Unix time",
            ["credential"],
            registry=r,
            multiprocess_mode="livemin",  # the soonest any worker knows of
        )
        Gauge(
            "sipwake_build_info",
            "Always 1; the version and Python in labels",
            ["version", "python"],
            registry=r,
            multiprocess_mode="livemax",
        ).labels(__version__, platform.python_version()).set(1)
        self._received = 0  # sipwake_sip_messages_received, until the next fold
        self._sent = _Tally(self._responses)
        self._registered = _Tally(self._registrations)
        self._finished = _Tally(self._calls)
        self._refusals = _Tally(self._refused)
        self._tallies = (self._sent, self._registered, self._finished, self._refusals)
        self._samplers: list[Callable[[Metrics], None]] = []
        self._async_samplers: list[Callable[[Metrics], Awaitable[None]]] = []
        self._refreshed = float("-inf")
        self._keepalive_seen: dict[str, int] = {}

    # -- values read from elsewhere -----------------------------------------------------------

    def add_sampler(self, sampler: Callable[[Metrics], None]) -> None:
        """``sampler(self)`` sets the read-from-elsewhere values (connections, in flight,
        credential expiry...); ``sample()`` runs every sampler."""
        self._samplers.append(sampler)

    def sample(self) -> None:
        for sampler in self._samplers:
            sampler(self)
        self._fold()  # last: samplers count too (watch_transport_refusals)

    def add_async_sampler(self, sampler: Callable[[Metrics], Awaitable[None]]) -> None:
        """A sampler that asks the store (bindings by provider): run by ``refresh()``."""
        self._async_samplers.append(sampler)

    async def refresh(self, max_age: float = ASYNC_SAMPLE_MAX_AGE) -> None:
        """Run the async samplers unless they ran less than ``max_age`` seconds ago: a
        scrape every few seconds must not walk a large store every time."""
        now = time.monotonic()
        if now - self._refreshed < max_age:
            return
        self._refreshed = now
        for sampler in self._async_samplers:
            await sampler(self)

    def watch_keepalives(self, read: Callable[[], dict[str, int]]) -> None:
        """Keep-alives the transports answered, from their counters (the UDP read loop only
        bumps a plain int): ``read()`` gives {"stun": n, "crlf": n} (RFC 5626 §4.4.1 CRLF
        pings, §4.4.2 STUN Binding Requests); each sample adds what is new."""

        def sampler(metrics: Metrics) -> None:
            for kind, count in read().items():
                new = count - self._keepalive_seen.get(kind, 0)
                if new > 0:
                    self._keepalives[kind].inc(new)
                    self._keepalive_seen[kind] = count

        self.add_sampler(sampler)

    def set_connections(self, counts: dict[str, int]) -> None:
        for transport, child in self._connections.items():
            child.set(counts.get(transport, 0))

    def set_bindings(self, by_provider: dict[str, int]) -> None:
        for provider in set(self._bindings) | set(by_provider):
            child = self._bindings.get(provider)
            if child is None:
                child = self._bindings[provider] = self._bindings_parent.labels(provider)
            child.set(by_provider.get(provider, 0))

    def set_credential_expiry(self, credential: str, timestamp: float) -> None:
        self._credential_expiry.labels(credential).set(timestamp)

    def _fold(self) -> None:
        """The per-message counts since the last fold, into the registry."""
        received, self._received = self._received, 0
        if received:
            self.sip_messages_received.inc(received)
        for tally in self._tallies:
            tally.fold()

    # -- plain methods: callers never touch labels ------------------------------------------

    def message_received(self) -> None:
        self._received += 1

    def parse_error(self) -> None:
        self.sip_parse_errors.inc()

    def dropped(self) -> None:
        self.sip_dropped.inc()

    def response_sent(self, status: int) -> None:
        self._sent.add(status)

    def registration(self, result: str) -> None:
        self._registered.add(result)

    def call(self, result: str) -> None:
        self._finished.add(result)

    def push(
        self, provider: str, outcome: str, latency: float | None = None, reason: str = ""
    ) -> None:
        """Count a push result; ``latency`` (seconds) also feeds the provider's histogram."""
        key = (provider, outcome, reason_label(reason) if reason else "")
        child = self._pushes.get(key)
        if child is None:
            if outcome not in PUSH_OUTCOMES:
                raise ValueError(f"unknown push outcome {outcome!r}")
            child = self._pushes[key] = self._pushes_parent.labels(*key)
        child.inc()
        if latency is not None:
            self._push_latency.labels(provider).observe(latency)

    def push_started(self, provider: str) -> None:
        self._in_flight.labels(provider).inc()

    def push_finished(self, provider: str) -> None:
        self._in_flight.labels(provider).dec()

    def wake(self, *, push_to_register: float | None, invite_to_delivery: float | None) -> None:
        """A woken device's latencies, in seconds (app/timeline.py computes them)."""
        if push_to_register is not None:
            self.wake_register.observe(push_to_register)
        if invite_to_delivery is not None:
            self.wake_delivery.observe(invite_to_delivery)

    def refresh_push(self, provider: str, outcome: str) -> None:
        if outcome not in PUSH_OUTCOMES:
            raise ValueError(f"unknown push outcome {outcome!r}")
        self._refresh_pushes.labels(provider, outcome).inc()

    def binding_expired_unrefreshed(self) -> None:
        self.bindings_expired_unrefreshed.inc()

    def edge_register(self, result: str) -> None:
        if result not in EDGE_REGISTER_RESULTS:
            raise ValueError(f"unknown edge REGISTER result {result!r}")
        self._edge_registers[result].inc()

    def decline(self, reason: str) -> None:
        self._declines[reason].inc()

    def auth_failure(self) -> None:
        self.auth_failures.inc()

    def instant_message(self, result: str, count: int = 1) -> None:
        if count:
            self._instant_messages[result].inc(count)

    def refused(self, reason: str, count: int = 1) -> None:
        self._refusals.add(reason, count)

    def watch_transport_refusals(self, read: Callable[[], dict[str, int]]) -> None:
        """Connections the transports refused or closed, from their plain int counters:
        ``read()`` gives {"connection_limit": n, "message_timeout": n}; each sample adds
        what is new to sipwake_refused_total."""
        seen: dict[str, int] = {}

        def sampler(metrics: Metrics) -> None:
            for reason, count in read().items():
                new = count - seen.get(reason, 0)
                if new > 0:
                    self.refused(reason, new)
                    seen[reason] = count

        self.add_sampler(sampler)

    def render(self) -> bytes:
        """The metrics in the Prometheus text exposition format (``CONTENT_TYPE``): this
        process's, or every worker's added up in multiprocess mode."""
        if self.multiprocess_dir is None:
            self.sample()
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(registry)


def multiprocess_dir() -> str | None:
    """The directory workers share their values through, when running under --workers."""
    return os.environ.get(MULTIPROC_ENV) or None
