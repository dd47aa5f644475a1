"""The transaction layer (RFC 3261 §17) in the sans-I/O shape of aioquic/h11.

Messages and the current time go in (``receive``, ``send_request``, ``send_response``,
``handle_timer``); bytes to transmit (``outbox``), events for the TU (``next_event``) and
the next deadline (``get_timer``) come out. No clock, no sockets: the engine owns both.

Matching: requests by §17.2.3 (RFC 3261 branch + sent-by + method, an ACK going to its
INVITE; the RFC 2543 field comparison otherwise); responses by §17.1.3 (branch + CSeq
method). ``receive`` raises ParseError when a header needed for matching is malformed (the
top Via; for an RFC 2543 request also From, Call-ID or CSeq) before touching any state, so
the engine can answer a request with 400 (and drop a response).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Final

from sipwake.sip.deadlines import Deadlines
from sipwake.sip.events import (
    CancelReceived,
    Dest,
    Event,
    RequestReceived,
    ResponseReceived,
    StrayResponse,
    TransactionTerminated,
    TransactionTimeout,
)
from sipwake.sip.headers import Via
from sipwake.sip.message import Request, Response
from sipwake.sip.timers import TimerConfig
from sipwake.sip.transactions import fsm
from sipwake.sip.transactions.client import ClientKey, ClientTransaction, build_ack, build_cancel
from sipwake.sip.transactions.fsm import Transaction, response_input
from sipwake.sip.transactions.server import (
    MAGIC_COOKIE,
    ServerKey,
    ServerTransaction,
    server_key,
    trying,
    via_key,
)

TimerKey = tuple[str, int]  # (transaction id, 0 = retransmit timer | 1 = lifetime timer)
_Action = Callable[[Transaction, "Request | Response | None", float], "str | None"]

_INF: Final = float("inf")


class TransactionGone(LookupError):
    """No live transaction has this id (it terminated, or never existed). A TU sending a
    2xx to INVITE after that forwards it with ``send_stateless`` (§16.7 step 5)."""


def new_branch(id_source: Callable[[], str]) -> str:
    """A Via branch for a request this element sends: the §8.1.1.7 magic cookie, then a
    fresh id (unique across space and time, so never reused for another request)."""
    return MAGIC_COOKIE + id_source()


class TransactionLayer:
    """Every client and server transaction of one SIP element."""

    __slots__ = (
        "_actions",
        "_client",
        "_count",
        "_deadlines",
        "_events",
        "_life",
        "_out",
        "_prefix",
        "_server",
        "_txns",
        "auto_trying",
        "timers",
    )

    def __init__(
        self, timers: TimerConfig, id_source: Callable[[], str], auto_trying: bool = True
    ) -> None:
        self.timers = timers
        self.auto_trying = auto_trying
        # Ids are a per-layer random prefix and a counter: unique without a random draw
        # per transaction.
        self._prefix = id_source() + "."
        self._count = 0
        self._txns: dict[str, Transaction] = {}
        self._server: dict[ServerKey, ServerTransaction] = {}
        self._client: dict[ClientKey, ClientTransaction] = {}
        self._deadlines: Deadlines[TimerKey] = Deadlines()
        self._events: deque[Event] = deque()
        self._out: list[tuple[bytes, Dest]] = []
        t = timers
        # Lifetime timer actions -> (input fed when it fires, unreliable, reliable duration).
        self._life: dict[str, tuple[str, float, float]] = {
            fsm.START_B: (fsm.TIMER_B, t.b, t.b),
            fsm.START_D: (fsm.TIMER_D, t.d(False), t.d(True)),
            fsm.START_F: (fsm.TIMER_F, t.f, t.f),
            fsm.START_H: (fsm.TIMER_H, t.h, t.h),
            fsm.START_I: (fsm.TIMER_I, t.i(False), t.i(True)),
            fsm.START_J: (fsm.TIMER_J, t.j(False), t.j(True)),
            fsm.START_K: (fsm.TIMER_K, t.k(False), t.k(True)),
            fsm.START_L: (fsm.TIMER_L, t.l, t.l),
            fsm.START_M: (fsm.TIMER_M, t.m, t.m),
        }
        self._actions: dict[str, _Action] = {
            fsm.SEND_REQUEST: self._a_send_request,
            fsm.SEND_ACK: self._a_send_ack,
            fsm.SEND_RESPONSE: self._a_send_response,
            fsm.FORWARD_RESPONSE: self._a_forward_response,
            fsm.RESEND_RESPONSE: self._a_resend_response,
            fsm.PASS_UP: self._a_pass_up,
            fsm.RELEASE: self._a_release,
            fsm.TIMEOUT: self._a_timeout,
            fsm.STOP_TIMERS: self._a_stop_timers,
            fsm.STOP_RETX: self._a_stop_retx,
            fsm.START_A: self._a_start_a,
            fsm.START_E: self._a_start_eg,
            fsm.START_G: self._a_start_eg,
            fsm.BACKOFF: self._a_backoff,
            fsm.RETX_T2: self._a_retx_t2,
        }
        for name, (inp, unreliable, reliable) in self._life.items():
            self._actions[name] = self._life_action(inp, unreliable, reliable)

    # -- the public API --------------------------------------------------------------------
    def receive(self, msg: Request | Response, flow: Dest, now: float) -> None:
        """A message from the network. May raise ParseError (see the module docstring)."""
        if isinstance(msg, Request):
            self._receive_request(msg, flow, now)
        else:
            self._receive_response(msg, flow, now)

    def send_request(self, request: Request, dest: Dest, now: float) -> str:
        """Start a client transaction for ``request`` (its top Via already carries a fresh
        magic-cookie branch) towards ``dest``; returns the transaction id. An ACK is not
        sent in a transaction: use ``send_stateless``."""
        if request.method == "ACK":
            raise ValueError("ACK has no client transaction; use send_stateless")
        branch = request.top_via.branch
        if branch is None or not branch.startswith(MAGIC_COOKIE):
            raise ValueError("request needs a top Via branch starting with z9hG4bK")
        key = (branch, request.method)
        if key in self._client:
            raise ValueError(f"a client transaction already uses branch {branch}")
        txn = ClientTransaction(self._new_id(), request, dest, key)
        self._txns[txn.id] = txn
        self._client[key] = txn
        self._drive(txn, fsm.START, None, now)
        return txn.id

    def send_response(self, txn_id: str, response: Response, now: float) -> None:
        """A response from the TU for server transaction ``txn_id``. What the state allows
        is sent (a second final is dropped, a late 2xx to INVITE is forwarded); raises
        TransactionGone when the transaction no longer exists."""
        txn = self._txns.get(txn_id)
        if not isinstance(txn, ServerTransaction):
            raise TransactionGone(txn_id)
        self._drive(txn, response_input(response.status, sending=True), response, now)

    def send_stateless(self, msg: Request | Response, dest: Dest) -> None:
        """Queue a message outside any transaction (ACK for a 2xx, a forwarded stray 2xx)."""
        self._out.append((msg.serialise(), dest))

    def make_cancel(self, txn_id: str, reason: str | None = None) -> Request:
        """The CANCEL for INVITE client transaction ``txn_id`` (§9.1), to be sent with
        ``send_request`` to the same destination."""
        txn = self._txns.get(txn_id)
        if not isinstance(txn, ClientTransaction) or not txn.invite or txn.released:
            # Its final response came (§9.1: nothing left to cancel); the request is gone.
            raise TransactionGone(txn_id)
        return build_cancel(txn.request, reason)

    def server_transaction_for_cancel(self, cancel_txn_id: str) -> str | None:
        """The live INVITE server transaction a CANCEL transaction matched (§9.2), if any."""
        txn = self._txns.get(cancel_txn_id)
        if not isinstance(txn, ServerTransaction) or txn.invite_id is None:
            return None
        return txn.invite_id if txn.invite_id in self._txns else None

    def terminate(self, txn_id: str) -> None:
        """Destroy a transaction now, at the TU's decision: e.g. an INVITE client
        transaction still without a final response 64*T1 after its CANCEL (§9.1), or a
        server transaction the TU will never answer. Unknown ids are ignored."""
        txn = self._txns.get(txn_id)
        if txn is not None:
            self._destroy(txn)

    def next_event(self) -> Event | None:
        events = self._events
        return events.popleft() if events else None

    def outbox(self) -> list[tuple[bytes, Dest]]:
        """Take everything queued for transmission, in order."""
        out = self._out
        self._out = []
        return out

    def get_timer(self) -> float | None:
        """The earliest deadline (absolute, in the ``now`` clock), None when idle."""
        return self._deadlines.earliest()

    def handle_timer(self, now: float) -> None:
        """Fire every timer due at ``now``."""
        txns = self._txns
        for txn_id, slot in self._deadlines.pop_due(now):
            txn = txns.get(txn_id)
            if txn is None:  # destroyed by a timer earlier in this batch
                continue
            self._drive(txn, txn.life_input if slot else txn.retx_input, None, now)

    def state(self, txn_id: str) -> str | None:
        """The state of a live transaction (for tests and the admin API)."""
        txn = self._txns.get(txn_id)
        return None if txn is None else txn.state

    def __len__(self) -> int:
        return len(self._txns)

    def has_server_transaction(self, request: Request) -> bool:
        """Whether ``request`` is a retransmission of one we are handling (§17.2.3 match);
        raises ParseError like ``receive`` when the fields needed are malformed."""
        key, rfc2543 = server_key(request, request.method)
        if rfc2543:
            key = (*key, request.to.tag)
        return key in self._server

    def has_server_branch(self, via: Via, method: str) -> bool | None:
        """``has_server_transaction`` from the top Via alone, for a request not parsed
        (the overload path, sip/scan.py): the §17.2.3 key is branch, sent-by and method.
        None when the branch is not an RFC 3261 one: the RFC 2543 key needs the parse."""
        key = via_key(via, method)
        return None if key is None else key in self._server

    # -- matching ----------------------------------------------------------------------------
    def _receive_request(self, request: Request, flow: Dest, now: float) -> None:
        method = request.method
        if method == "ACK":
            self._receive_ack(request, flow, now)
            return
        key, rfc2543 = server_key(request, method)
        if rfc2543:
            key = (*key, request.to.tag)
        txn = self._server.get(key)
        if txn is not None:  # a retransmission
            self._drive(txn, fsm.REQUEST, request, now)
            return
        invite_id = None
        if method == "CANCEL":
            # §9.2: the CANCEL matches the INVITE it cancels by the same rules, with the
            # method taken as INVITE.
            ikey, _ = server_key(request, "INVITE")
            if rfc2543:
                ikey = (*ikey, request.to.tag)
            invite = self._server.get(ikey)
            if invite is not None:
                invite_id = invite.id
        txn = ServerTransaction(self._new_id(), request, flow, key, rfc2543)
        self._txns[txn.id] = txn
        self._server[key] = txn
        if method == "CANCEL":
            txn.invite_id = invite_id
            self._events.append(CancelReceived(request, txn.id, invite_id, flow))
        else:
            self._events.append(RequestReceived(request, txn.id, flow))
            if txn.invite and self.auto_trying:
                self._drive(txn, fsm.SEND_1XX, trying(request), now)

    def _receive_ack(self, request: Request, flow: Dest, now: float) -> None:
        """§17.2.3: an ACK matches the INVITE transaction it acknowledges. An RFC 3261 ACK
        for a 2xx has a new branch and matches nothing: it goes up with no transaction."""
        key, rfc2543 = server_key(request, "INVITE")
        if not rfc2543:
            txn = self._server.get(key)
        else:
            # RFC 2543: the ACK's To tag is that of the response it acknowledges. An INVITE
            # inside a dialog carried that tag already; an initial one carried none.
            tag = request.to.tag
            txn = self._server.get((*key, tag))
            if txn is None and tag is not None:
                txn = self._server.get((*key, None))
                if txn is not None and txn.response_tag != tag:
                    txn = None
        if txn is None:
            self._events.append(RequestReceived(request, None, flow))
            return
        self._drive(txn, fsm.ACK, request, now)

    def _receive_response(self, response: Response, flow: Dest, now: float) -> None:
        branch = response.top_via.branch
        txn = self._client.get((branch, response.cseq.method)) if branch else None
        if txn is None:
            self._events.append(StrayResponse(response, flow))
            return
        self._drive(txn, response_input(response.status, sending=False), response, now)

    def _new_id(self) -> str:
        self._count += 1
        return f"{self._prefix}{self._count}"

    # -- the driver ----------------------------------------------------------------------
    def _drive(
        self, txn: Transaction, inp: str, msg: Request | Response | None, now: float
    ) -> None:
        """Run the table for one input; a zero-length timer feeds its input at once."""
        actions = self._actions
        while True:
            state, todo = txn.table[txn.state, inp]
            txn.state = state
            follow = None
            for name in todo:
                follow = actions[name](txn, msg, now) or follow
            if state == fsm.TERMINATED:
                self._destroy(txn)
                return
            if follow is None:
                return
            inp, msg = follow, None

    def _destroy(self, txn: Transaction) -> None:
        deadlines = self._deadlines
        deadlines.cancel(txn.retx_key)
        deadlines.cancel(txn.life_key)
        txn.state = fsm.TERMINATED
        del self._txns[txn.id]
        if isinstance(txn, ClientTransaction):
            if self._client.get(txn.key) is txn:
                del self._client[txn.key]
        elif isinstance(txn, ServerTransaction) and self._server.get(txn.key) is txn:
            del self._server[txn.key]
        self._events.append(TransactionTerminated(txn.id))

    # -- actions (each returns a timer input to feed at once, or None) -------------------------
    def _a_send_request(self, txn: Transaction, msg: Request | Response | None, now: float) -> None:
        assert isinstance(txn, ClientTransaction)
        self._out.append((txn.data, txn.dest))

    def _a_send_ack(self, txn: Transaction, msg: Request | Response | None, now: float) -> None:
        assert isinstance(txn, ClientTransaction)
        ack = txn.ack
        if ack is None:
            assert isinstance(msg, Response)
            ack = txn.ack = build_ack(txn.request, msg).serialise()
        self._out.append((ack, txn.dest))

    def _a_send_response(
        self, txn: Transaction, msg: Request | Response | None, now: float
    ) -> None:
        assert isinstance(txn, ServerTransaction) and isinstance(msg, Response)
        self._out.append((txn.keep_response(msg), txn.dest))

    def _a_forward_response(
        self, txn: Transaction, msg: Request | Response | None, now: float
    ) -> None:
        assert isinstance(msg, Response)
        self._out.append((msg.serialise(), txn.dest))

    def _a_resend_response(
        self, txn: Transaction, msg: Request | Response | None, now: float
    ) -> None:
        assert isinstance(txn, ServerTransaction)
        if txn.last is not None:
            self._out.append((txn.last, txn.dest))

    def _a_pass_up(self, txn: Transaction, msg: Request | Response | None, now: float) -> None:
        if isinstance(msg, Response):
            self._events.append(ResponseReceived(msg, txn.id))
        elif isinstance(msg, Request):  # an ACK reaching an Accepted INVITE server txn
            self._events.append(RequestReceived(msg, None, txn.dest))

    def _a_release(self, txn: Transaction, msg: Request | Response | None, now: float) -> None:
        assert isinstance(txn, ClientTransaction)
        txn.release()

    def _a_timeout(self, txn: Transaction, msg: Request | Response | None, now: float) -> None:
        self._events.append(TransactionTimeout(txn.id))

    def _a_stop_timers(self, txn: Transaction, msg: Request | Response | None, now: float) -> None:
        self._deadlines.cancel(txn.retx_key)
        self._deadlines.cancel(txn.life_key)

    def _a_stop_retx(self, txn: Transaction, msg: Request | Response | None, now: float) -> None:
        self._deadlines.cancel(txn.retx_key)

    def _start_retx(self, txn: Transaction, inp: str, cap: float, now: float) -> None:
        # Reliable transports never retransmit (§17.1.1.2, §17.1.2.2, §17.2.1).
        if not txn.reliable:
            txn.retx_input = inp
            txn.retx_cap = cap
            txn.retx_interval = self.timers.t1
            self._deadlines.set_after(txn.retx_key, now, self.timers.t1)

    def _a_start_a(self, txn: Transaction, msg: Request | Response | None, now: float) -> None:
        self._start_retx(txn, fsm.TIMER_A, _INF, now)  # Timer A doubles without a cap

    def _a_start_eg(self, txn: Transaction, msg: Request | Response | None, now: float) -> None:
        inp = fsm.TIMER_E if isinstance(txn, ClientTransaction) else fsm.TIMER_G
        self._start_retx(txn, inp, self.timers.t2, now)

    def _a_backoff(self, txn: Transaction, msg: Request | Response | None, now: float) -> None:
        interval = txn.retx_interval = min(txn.retx_interval * 2, txn.retx_cap)
        self._deadlines.set(txn.retx_key, now + interval)

    def _a_retx_t2(self, txn: Transaction, msg: Request | Response | None, now: float) -> None:
        txn.retx_interval = self.timers.t2
        self._deadlines.set_after(txn.retx_key, now, self.timers.t2)

    def _life_action(self, inp: str, unreliable: float, reliable: float) -> _Action:
        deadlines = self._deadlines

        def start(txn: Transaction, msg: Request | Response | None, now: float) -> str | None:
            delay = reliable if txn.reliable else unreliable
            if delay <= 0:
                # A zero wait (D, I, J, K on a reliable transport): fire now rather than
                # going through the heap.
                deadlines.cancel(txn.life_key)
                return inp
            txn.life_input = inp
            deadlines.set_after(txn.life_key, now, delay)
            return None

        return start
