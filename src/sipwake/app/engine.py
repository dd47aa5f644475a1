"""The asyncio heart: transport bytes -> parse -> transaction layer -> application, and back.

This is the single place a ProtocolError becomes a response (docs/architecture.md,
"Errors"), and the single timer of the app ring: one ``call_at`` (through the ``Clock``)
for the earliest deadline of the transaction layer and of every other timer source (the
call runner, app/calls.py) — the aioquic shape: ``get_timer()`` / ``handle_timer(now)``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol, cast

from sipwake.app.ports import MetricsPort, NullMetrics
from sipwake.logs import LogEvery, reset_call_id, set_call_id
from sipwake.policy.overload import (
    SHED_TAG_MARK,
    SHED_TAG_PREFIX,
    Overloaded,
    OverloadLimits,
    StandingLag,
    shed_ack,
    sheddable,
)
from sipwake.sip.codec import DEFAULT_LIMITS, Limits, parse_head, parse_message
from sipwake.sip.errors import ParseError, ProtocolError
from sipwake.sip.events import (
    CancelReceived,
    Event,
    RequestReceived,
    ResponseReceived,
    StrayResponse,
    TransactionTerminated,
    TransactionTimeout,
)
from sipwake.sip.flows import response_address, stamp_received, stamp_via
from sipwake.sip.headers import Headers
from sipwake.sip.message import Request, Response, make_response
from sipwake.sip.scan import ack_with, scan_request, to_aor
from sipwake.sip.status import reason_phrase
from sipwake.sip.transactions.layer import TransactionGone, TransactionLayer
from sipwake.sip.uri import aor_key
from sipwake.storage.base import StorageUnavailable
from sipwake.transport.flow import Flow

log = logging.getLogger("sipwake.engine")

_LAG_INTERVAL = 0.05  # seconds between two measurements of the event loop's lag


class Sender(Protocol):
    """What the engine needs of the transport layer."""

    def send(self, flow: Flow, data: bytes) -> bool: ...


class Handle(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """The app ring's one clock: monotonic ``now`` for every deadline, ``wall`` only for
    what outlives the process (binding expiry, push payload expiry), and the one place a
    callback is scheduled. Tests pass a fake one and move time by hand."""

    def now(self) -> float: ...

    def wall(self) -> float: ...

    def call_at(self, when: float, callback: Callable[[], None]) -> Handle: ...


class LoopClock:
    """The running asyncio loop's clock."""

    __slots__ = ("_loop",)

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def now(self) -> float:
        return self.loop.time()

    def wall(self) -> float:
        return time.time()

    def call_at(self, when: float, callback: Callable[[], None]) -> Handle:
        return self.loop.call_at(when, callback)


class TimerSource(Protocol):
    """Something with deadlines of its own, fired through the engine's one timer."""

    def get_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> None: ...


@dataclasses.dataclass(slots=True)
class EngineStats:
    received: int = 0
    parse_errors: int = 0  # answered with 4xx/5xx
    dropped: int = 0  # could not be answered (no usable headers, or a bad response)
    handler_errors: int = 0
    storage_unavailable: int = 0  # requests answered 503 because the store was away
    shed: int = 0  # new requests answered 503 under overload (policy/overload.py)


class Incoming:
    """A request handed to the application, with the means to answer it once."""

    __slots__ = ("_engine", "answered", "flow", "received_at", "request", "txn_id")

    def __init__(
        self, engine: Engine, request: Request, txn_id: str | None, flow: Flow, now: float
    ) -> None:
        self._engine = engine
        self.request = request
        self.txn_id = txn_id
        self.flow = flow
        self.received_at = now
        self.answered = 0  # last status sent (0: none yet)

    def respond(
        self,
        status: int,
        reason: str | None = None,
        *,
        extra: list[tuple[str, str]] | None = None,
        response: Response | None = None,
    ) -> Response:
        """Answer through the server transaction (stateless for ACK-less cases)."""
        if response is None:
            response = make_response(
                self.request, status, reason, to_tag=self._engine.to_tag(self), extra=extra
            )
            if self._engine.server_header:
                response.headers.add("Server", self._engine.server_header)
        self._engine.send_response(self, response)
        return response

    def release(self) -> None:
        """Answered, and nothing will read the request again but its method and Call-ID
        (a late 2xx forwarded upstream, §16.7 step 5; the log context): keep just those.
        A finished call's record lives on until its transactions end (up to 64*T1); a
        parsed request kept that long is ~30 more objects per call for every full pass
        of the garbage collector to walk."""
        req = self.request
        headers = Headers()
        headers.add("Call-ID", req.call_id)
        self.request = Request(req.method, req.uri, headers)


class Application(Protocol):
    """What the engine dispatches to. Handlers may be sync or return an awaitable; errors
    they raise are ProtocolErrors answered here, or bugs answered 500 and logged."""

    def on_request(self, incoming: Incoming) -> Awaitable[None] | None: ...

    def on_cancel(
        self, incoming: Incoming, invite_txn_id: str | None
    ) -> Awaitable[None] | None: ...

    def on_response(self, response: Response, txn_id: str) -> None: ...

    def on_stray_response(self, response: Response, flow: Flow) -> None: ...

    def on_timeout(self, txn_id: str) -> None: ...

    def on_terminated(self, txn_id: str) -> None: ...


class Engine:
    def __init__(
        self,
        txn: TransactionLayer,
        *,
        limits: Limits = DEFAULT_LIMITS,
        server_header: str = "sipwake",
        log_transactions: bool = False,
        tag_source: Callable[[], str],
        overload: OverloadLimits | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.clock: Clock = clock if clock is not None else LoopClock()
        self.timers: list[TimerSource] = []
        self.txn = txn
        # Overload shedding (policy/overload.py): server transactions not yet finally
        # answered, how late the loop runs (measured by _tick); held calls and the UDP
        # receive queue (delay, fill) are the server's to wire in.
        self.overload = overload
        self.held_calls: Callable[[], int] = lambda: 0
        # The wake REGISTER is never shed (_wake_register): does a call held here wait for
        # a device of this AoR? The call table's to answer (app/calls.py by_aor).
        self.wake_awaited: Callable[[str], bool] = lambda aor: False
        self._held = 0  # held_calls() as _overloaded last read it
        self.udp_delay: Callable[[], float] = lambda: 0.0
        self.backlog: Callable[[], float] = lambda: 0.0
        self.lag = 0.0  # standing lag (policy/overload.py StandingLag), not one late tick
        self._lag = StandingLag()
        self._unanswered: set[str] = set()
        self._tick_due = 0.0  # next lag measurement (0: not measuring)
        self._shed_log = LogEvery(log)
        self.limits = limits
        self.server_header = server_header
        self.log_transactions = log_transactions
        self.tag_source = tag_source
        self.stats = EngineStats()
        self.metrics: MetricsPort = NullMetrics()
        self.app: Application | None = None
        self.sender: Sender | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: Handle | None = None
        self._timer_at: float | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- clocks ----------------------------------------------------------------------------
    def now(self) -> float:
        """Monotonic clock every deadline runs on."""
        return self.clock.now()

    def wall(self) -> float:
        """Wall clock for what outlives the process (binding expiry)."""
        return self.clock.wall()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def to_tag(self, incoming: Incoming) -> str | None:
        return None if incoming.request.to.tag else self.tag_source()

    # -- inbound ---------------------------------------------------------------------------
    def on_message(self, data: bytes, flow: Flow) -> None:
        """Transport sink: one complete message."""
        self.stats.received += 1
        self.metrics.message_received()
        why: Overloaded | None = None
        if self.overload is not None:
            if ack_with(data, SHED_TAG_MARK):
                # The ACK of one of our 503s (no transaction was kept for it): dropped
                # before any scan, whether or not we are still overloaded; the full path
                # would parse it only to drop it (_shed).
                return
            why = self._overloaded()
            if why is not None and self._shed_unparsed(data, flow, why):
                return
        try:
            msg = parse_message(data, self.limits, stream=flow.reliable)
        except ParseError as err:
            self._reject_unparsed(data, flow, err)
            return
        if isinstance(msg, Request):
            self._on_request(msg, flow, why)
        else:
            try:
                msg.validate()
            except ParseError as err:
                # RFC 3261 §18.1.2: a malformed response is discarded.
                self.stats.dropped += 1
                self.metrics.dropped()
                log.debug("dropped malformed response from %s: %s", flow, err.detail)
                return
            self.txn.receive(msg, flow, self.now())
            self._pump()

    def _on_request(self, request: Request, flow: Flow, overloaded: Overloaded | None) -> None:
        try:
            request.validate()
            via = stamp_received(request, flow.remote[0], flow.remote[1])
        except ParseError as err:
            self.stats.parse_errors += 1
            self.metrics.parse_error()
            if request.method != "ACK":
                self._send_stateless(make_error_response(request, err), flow)
            return
        # Responses over UDP go where §18.2.2/RFC 3581 say; over a stream, back over it.
        dest = flow
        if not flow.reliable:
            addr = response_address(via)
            if addr != flow.remote:
                dest = flow.with_remote(addr)
        if self.overload is not None and self._shed(request, dest, overloaded):
            return
        try:
            self.txn.receive(request, dest, self.now())
        except ParseError as err:
            self.stats.parse_errors += 1
            self.metrics.parse_error()
            self._send_stateless(make_error_response(request, err), flow)
            return
        self._pump()

    def _overloaded(self) -> Overloaded | None:
        """Why we are overloaded now (policy/overload.py), or None."""
        assert self.overload is not None
        self._held = held = self.held_calls()
        return self.overload.reason(
            pending=len(self._unanswered),
            held=held,
            lag=self.lag,
            delay=self.udp_delay(),
            backlog=self.backlog(),
        )

    def _shed_unparsed(self, data: bytes, flow: Flow, why: Overloaded) -> bool:
        """While overloaded: answer a new request 503 + Retry-After from a scan of its
        bytes (sip/scan.py), before any parse and without a transaction; True when it was
        answered, or was the ACK of such an answer (dropped). False sends it down the full
        path: responses, in-dialog requests, CANCEL, ACK, retransmissions of requests in
        progress (whose transaction answers them), a wake REGISTER (``_wake_register``),
        and whatever the scan cannot read."""
        head = scan_request(data, self.limits)
        if head is None:
            return False  # the full path reads it, and sheds it after the parse if it may
        if shed_ack(head.method, head.to_tag):
            return True
        if not sheddable(head.method, head.to_tag):
            return False
        if head.method == "REGISTER" and self._held:
            aor = to_aor(head.to_value)  # the key _wake_register computes after the parse
            if aor is not None and self.wake_awaited(aor):
                return False  # a wake REGISTER: served (_wake_register says why)
        if self.txn.has_server_branch(head.via, head.method) is not False:
            return False  # a retransmission, or an RFC 2543 peer: the full path matches it
        # The response goes where the full path would send it (§18.2.2, RFC 3581).
        changed = stamp_via(head.via, flow.remote[0], flow.remote[1])
        dest = flow
        if not flow.reliable:
            addr = response_address(head.via)
            if addr != flow.remote:
                dest = flow.with_remote(addr)
        assert self.overload is not None
        self._count_shed(why)
        response = head.response(
            503,
            to_tag=SHED_TAG_PREFIX + self.tag_source(),
            extra=(("Retry-After", str(self.overload.retry_after)),),
            top_via_changed=changed,
        )
        if self.sender is not None:
            self.sender.send(dest, response)
        return True

    def _shed(self, request: Request, dest: Flow, why: Overloaded | None) -> bool:
        """The same refusal after a full parse, for what the scan could not read: answer a
        new request 503 + Retry-After, statelessly and before any other work, while
        overloaded; True when it was answered (or was the ACK of such an answer)."""
        assert self.overload is not None
        to_tag = request.to.tag
        if shed_ack(request.method, to_tag):
            # No transaction was kept for the 503, so its ACK matches none: drop it here.
            return True
        if why is None or not sheddable(request.method, to_tag):
            return False
        if request.method == "REGISTER" and self._wake_register(request):
            return False
        try:
            if self.txn.has_server_transaction(request):
                return False  # a retransmission: its transaction answers it
        except ParseError:
            return False  # the transaction layer answers 400
        self._count_shed(why)
        retry = [("Retry-After", str(self.overload.retry_after))]
        tag = SHED_TAG_PREFIX + self.tag_source()
        self._send_stateless(make_response(request, 503, to_tag=tag, extra=retry), dest)
        return True

    def _wake_register(self, request: Request) -> bool:
        """Is this REGISTER a device waking for a call held here (its AoR, the To URI of
        RFC 3261 §10.3, has a held call waiting)? Such a REGISTER is never shed: it
        completes work in progress (the caller has its 110 Push sent and waits for this
        device), and a 503 would leave that call to end with 480 when the hold window is
        over. Asked only while calls are held (the AoR costs a few µs). The scan path asks
        the same question of the same key (sip/scan.py ``to_aor``)."""
        if not self._held:
            return False
        try:
            aor = aor_key(request.to.uri)
        except ParseError:
            return False
        return self.wake_awaited(aor)

    def _count_shed(self, why: Overloaded) -> None:
        self.stats.shed += 1
        self.metrics.refused("overload")
        self.metrics.response_sent(503)
        self._shed_log(self.now(), "overloaded, answering new requests 503: %s", why)

    def adopt(self, request: Request, flow: Flow) -> Incoming | None:
        """A server transaction for a request this process did not receive: the INVITE of
        a held call taken over from a process that died (app/resume.py). The application
        is not called; the caller gets what the returned Incoming sends. None when a
        transaction for it exists already (its retransmission got here first)."""
        self.txn.receive(request, flow, self.now())
        incoming: Incoming | None = None
        while (event := self.txn.next_event()) is not None:
            if incoming is None and isinstance(event, RequestReceived):
                incoming = Incoming(self, event.request, event.txn_id, flow, self.now())
                if event.txn_id is not None:
                    self._unanswered.add(event.txn_id)
            else:
                self._dispatch(event)
        self._flush()
        return incoming

    def start(self) -> None:
        """Start measuring the event loop's lag (for overload shedding): a deadline every
        _LAG_INTERVAL on the engine's one timer; how late it fires is the lag."""
        if self.overload is not None and not self._tick_due:
            self._tick_due = self.now() + _LAG_INTERVAL
            self._arm_timer()

    def _tick(self, now: float) -> None:
        if self._tick_due and now >= self._tick_due:
            self.lag = self._lag.sample(max(0.0, now - self._tick_due))
            self._tick_due = now + _LAG_INTERVAL

    def _reject_unparsed(self, data: bytes, flow: Flow, err: ParseError) -> None:
        """Answer a request we could not parse when its Via/From/To/Call-ID/CSeq lines can
        still be read (RFC 3261 §8.2: 400 with the fault in the reason phrase); otherwise
        drop and count (nothing to address a response to)."""
        response = error_response_from_bytes(data, err, self.limits)
        if response is None:
            self.stats.dropped += 1
            self.metrics.dropped()
            log.debug("dropped unparseable message from %s: %s", flow, err.detail)
            return
        self.stats.parse_errors += 1
        self.metrics.parse_error()
        self._send_stateless(response, flow)

    def _send_stateless(self, response: Response, flow: Flow) -> None:
        if self.sender is not None:
            self.sender.send(flow, response.serialise())

    # -- events ----------------------------------------------------------------------------
    def _pump(self) -> None:
        txn = self.txn
        while (event := txn.next_event()) is not None:
            self._dispatch(event)
        self._flush()

    def _dispatch(self, event: Event) -> None:
        app = self.app
        if app is None:
            return
        if isinstance(event, RequestReceived):
            flow = cast(Flow, event.flow)
            incoming = Incoming(self, event.request, event.txn_id, flow, self.now())
            if event.txn_id is not None:
                self._unanswered.add(event.txn_id)
            self._run(incoming, lambda: app.on_request(incoming))
        elif isinstance(event, CancelReceived):
            flow = cast(Flow, event.flow)
            incoming = Incoming(self, event.cancel, event.txn_id, flow, self.now())
            self._run(incoming, lambda: app.on_cancel(incoming, event.invite_txn_id))
        elif isinstance(event, ResponseReceived):
            app.on_response(event.response, event.txn_id)
        elif isinstance(event, StrayResponse):
            app.on_stray_response(event.response, cast(Flow, event.flow))
        elif isinstance(event, TransactionTimeout):
            app.on_timeout(event.txn_id)
        elif isinstance(event, TransactionTerminated):
            self._unanswered.discard(event.txn_id)
            app.on_terminated(event.txn_id)

    def _run(self, incoming: Incoming, call: Callable[[], Awaitable[None] | None]) -> None:
        # The Call-ID tags every log line of this handler (logs.py); set and reset by
        # hand: a generator-based context manager costs more than the handler's own work
        # on the fast paths.
        token = set_call_id(incoming.request.headers.get("call-id") or "")
        try:
            result = call()
        except ProtocolError as err:
            self._answer_error(incoming, err)
            return
        except StorageUnavailable as exc:
            self._answer_unavailable(incoming, exc)
            return
        except Exception:
            self._answer_bug(incoming)
            return
        finally:
            reset_call_id(token)
        if result is not None:
            task = self.loop.create_task(self._finish(incoming, result))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _finish(self, incoming: Incoming, awaitable: Awaitable[None]) -> None:
        # A task runs in a copy of the context: setting the Call-ID here stays here.
        set_call_id(incoming.request.headers.get("call-id") or "")
        try:
            await awaitable
        except ProtocolError as err:
            self._answer_error(incoming, err)
        except StorageUnavailable as exc:
            self._answer_unavailable(incoming, exc)
        except Exception:
            self._answer_bug(incoming)

    def _answer_error(self, incoming: Incoming, err: ProtocolError) -> None:
        if incoming.answered >= 200 or incoming.request.method == "ACK":
            return
        incoming.respond(0, response=make_error_response(incoming.request, err, self.tag_source()))

    def _answer_unavailable(self, incoming: Incoming, exc: StorageUnavailable) -> None:
        """The store is away (docs/architecture.md "Errors"): 503 with Retry-After, so the UA
        tries again or elsewhere (RFC 3261 §21.5.4); nothing was changed."""
        self.stats.storage_unavailable += 1
        log.warning("storage unavailable: %s", exc)
        if incoming.answered < 200 and incoming.request.method != "ACK":
            incoming.respond(503, extra=[("Retry-After", str(exc.retry_after))])

    def _answer_bug(self, incoming: Incoming) -> None:
        self.stats.handler_errors += 1
        log.exception("handler failed on %s", incoming.request)
        if incoming.answered < 200 and incoming.request.method != "ACK":
            incoming.respond(500)

    # -- outbound --------------------------------------------------------------------------
    def relay_late_2xx(self, txn_id: str, flow: Flow, response: Response) -> None:
        """A 2xx for an INVITE whose call is over (another branch's, or a retransmission)
        goes upstream, through its server transaction while that lives (Accepted, RFC 6026
        §7.1)."""
        self.metrics.response_sent(response.status)
        self._in_transaction(txn_id, flow, response, stateless_if_gone=True)

    def send_response(self, incoming: Incoming, response: Response) -> None:
        incoming.answered = max(response.status, incoming.answered)
        self.metrics.response_sent(response.status)
        if response.status >= 200 and incoming.txn_id is not None:
            self._unanswered.discard(incoming.txn_id)
        if incoming.txn_id is None:
            self._send_stateless(response, incoming.flow)
        else:
            late_2xx = 200 <= response.status < 300 and incoming.request.method == "INVITE"
            if not self._in_transaction(incoming.txn_id, incoming.flow, response, late_2xx):
                return
        if self.log_transactions and response.status >= 200:
            req = incoming.request
            # DEBUG, and under the request's own Call-ID whatever context answers it (a
            # held INVITE is answered from the wake REGISTER's handler or a timer).
            log.debug(
                "%s %s from %s %s:%d -> %d %s (%.1f ms)",
                req.method,
                req.uri,
                incoming.flow.transport,
                incoming.flow.remote[0],
                incoming.flow.remote[1],
                response.status,
                response.reason,
                (self.now() - incoming.received_at) * 1000,
                extra={"call_id": req.headers.get("call-id") or None},
            )

    def _in_transaction(
        self, txn_id: str, flow: Flow, response: Response, stateless_if_gone: bool
    ) -> bool:
        """Send ``response`` through server transaction ``txn_id``; True when it went. A 2xx
        to an INVITE whose transaction has ended still goes upstream, statelessly (RFC 3261
        §16.7 step 5, RFC 6026 §8.5): ``stateless_if_gone``."""
        try:
            self.txn.send_response(txn_id, response, self.now())
        except TransactionGone:
            if stateless_if_gone:
                self._send_stateless(response, flow)
            return False
        self._flush()
        return True

    def send_request(self, request: Request, flow: Flow) -> str:
        """Start a client transaction towards ``flow``; returns its id."""
        txn_id = self.txn.send_request(request, flow, self.now())
        self._flush()
        return txn_id

    def send_stateless(self, data: bytes, flow: Flow) -> bool:
        """Forward without a transaction (ACK for 2xx, 2xx retransmissions: §16.7 step 10)."""
        return self.sender.send(flow, data) if self.sender is not None else False

    def _flush(self) -> None:
        sender = self.sender
        for data, dest in self.txn.outbox():
            if sender is not None:
                # The transaction layer hands back the Flow objects we gave it.
                sender.send(cast(Flow, dest), data)
        self._arm_timer()

    def rearm(self) -> None:
        """A timer source's earliest deadline changed outside a message or timer turn."""
        self._arm_timer()

    def _arm_timer(self) -> None:
        when = self.txn.get_timer()
        if self._tick_due and (when is None or self._tick_due < when):
            when = self._tick_due
        for source in self.timers:
            other = source.get_timer()
            if other is not None and (when is None or other < when):
                when = other
        if when == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = when
        if when is not None:
            self._timer = self.clock.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        now = self.now()
        self._tick(now)
        self.txn.handle_timer(now)
        for source in self.timers:
            source.handle_timer(now)
        self._pump()

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._tick_due = 0.0
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def make_error_response(
    request: Request, err: ProtocolError, to_tag: str | None = None
) -> Response:
    """Response for a request that failed with ``err``; copies only what parses."""
    try:
        return make_response(request, err.status, err.response_reason(), to_tag=to_tag)
    except ParseError:
        headers = Headers()
        for key in ("via", "from", "to", "call-id", "cseq"):
            for line in request.headers.get_lines(key):
                headers.add(key, line)
        headers.add("Content-Length", "0")
        return Response(err.status, err.response_reason(), headers)


def error_response_from_bytes(data: bytes, err: ParseError, limits: Limits) -> Response | None:
    """Build the error response for bytes that did not parse as a message, if they look
    like a request and carry the headers a response must echo (RFC 3261 §8.2.6.2)."""
    if data.startswith(b"SIP/"):
        return None  # a response: never answered
    end = data.find(b"\r\n\r\n")
    head = data[: end if end >= 0 else min(len(data), limits.max_message_size)]
    try:
        start, entries = parse_head(head.decode("utf-8", "surrogateescape"), limits)
    except ParseError:
        return None
    if start.startswith("ACK ") or len(start.split(" ")) < 2:
        return None
    headers = Headers._from_parsed(entries)
    out = Headers()
    for key in ("via", "from", "to", "call-id", "cseq"):
        lines = headers.get_lines(key)
        if not lines:
            return None
        for line in lines:
            out.add(key, line)
    out.add("Content-Length", "0")
    return Response(err.status, err.response_reason() or reason_phrase(err.status), out)
