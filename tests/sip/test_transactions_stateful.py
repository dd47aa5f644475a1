"""Random sequences of messages, TU answers and time steps never raise, every id terminates
once and is never heard of again, and the layer is empty once everything is answered and
every timer has fired."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from sipwake.sip.events import TransactionTerminated
from sipwake.sip.message import Request, make_response
from sipwake.sip.transactions import TransactionGone
from tests.sip.test_transactions import TCP, UDP, make_layer, request, response

STATUSES = st.sampled_from([100, 180, 200, 404, 486, 503])


class LayerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.layer = make_layer()
        self.now = 0.0
        self.seq = itertools.count(1)
        self.sent: list[tuple[Request, bool]] = []  # client requests, reliable?
        self.received: list[dict[str, Any]] = []  # how each server request was built
        self.server_ids: list[tuple[str, Request]] = []
        self.terminated: set[str] = set()

    def _pump(self) -> None:
        self.layer.outbox()
        while (event := self.layer.next_event()) is not None:
            txn_id = getattr(event, "txn_id", None)
            assert txn_id is None or txn_id not in self.terminated, event
            if isinstance(event, TransactionTerminated):
                self.terminated.add(event.txn_id)
            elif txn_id is not None and getattr(event, "request", None) is not None:
                self.server_ids.append((txn_id, event.request))  # type: ignore[attr-defined]
            elif txn_id is not None and hasattr(event, "cancel"):
                self.server_ids.append((txn_id, event.cancel))  # type: ignore[attr-defined]

    @rule(method=st.sampled_from(["INVITE", "OPTIONS"]), reliable=st.booleans())
    def send_request(self, method: str, reliable: bool) -> None:
        req = request(method, branch=f"z9hG4bKc{next(self.seq)}")
        self.layer.send_request(req, TCP if reliable else UDP, self.now)
        self.sent.append((req, reliable))
        self._pump()

    @precondition(lambda self: self.sent)
    @rule(i=st.integers(0, 1000), status=STATUSES, tag=st.sampled_from(["a", "b"]))
    def network_responds(self, i: int, status: int, tag: str) -> None:
        req, reliable = self.sent[i % len(self.sent)]
        self.layer.receive(response(req, status, to_tag=tag), TCP if reliable else UDP, self.now)
        self._pump()

    @rule(
        method=st.sampled_from(["INVITE", "OPTIONS", "REGISTER"]),
        reliable=st.booleans(),
        legacy=st.booleans(),
    )
    def network_requests(self, method: str, reliable: bool, legacy: bool) -> None:
        n = next(self.seq)
        kw: dict[str, Any] = {
            "branch": None if legacy else f"z9hG4bKs{n}",
            "call_id": f"call{n}",
            "reliable": reliable,
            "method": method,
        }
        self.received.append(kw)
        self._deliver(method, kw)

    def _deliver(self, method: str, kw: dict[str, Any], **over: Any) -> None:
        args = {"branch": kw["branch"], "call_id": kw["call_id"], **over}
        flow = TCP if kw["reliable"] else UDP
        self.layer.receive(request(method, **args), flow, self.now)
        self._pump()

    @precondition(lambda self: self.received)
    @rule(i=st.integers(0, 1000), kind=st.sampled_from(["again", "ack", "ack2xx", "cancel"]))
    def network_follows_up(self, i: int, kind: str) -> None:
        kw = self.received[i % len(self.received)]
        if kind == "again":
            self._deliver(kw["method"], kw)
        elif kind == "ack":
            self._deliver("ACK", kw, to_tag="tt1")
        elif kind == "ack2xx":
            self._deliver("ACK", kw, to_tag="tt1", branch=f"z9hG4bKa{next(self.seq)}")
        else:
            self._deliver("CANCEL", kw)

    @precondition(lambda self: self.server_ids)
    @rule(i=st.integers(0, 1000), status=STATUSES)
    def tu_responds(self, i: int, status: int) -> None:
        txn_id, req = self.server_ids[i % len(self.server_ids)]
        try:
            self.layer.send_response(txn_id, make_response(req, status, to_tag="tt1"), self.now)
        except TransactionGone:
            assert txn_id in self.terminated
        self._pump()

    @rule(dt=st.floats(0, 40, allow_nan=False))
    def time_passes(self, dt: float) -> None:
        self.now += dt
        self.layer.handle_timer(self.now)
        self._pump()

    @invariant()
    def timer_is_armed_while_something_waits_on_it(self) -> None:
        when = self.layer.get_timer()
        assert when is None or len(self.layer) > 0

    def teardown(self) -> None:
        layer = self.layer
        # Answer whatever is still waiting on the other side, then let every timer fire.
        for txn_id, req in self.server_ids:
            if txn_id not in self.terminated:
                layer.send_response(txn_id, make_response(req, 500, to_tag="tt1"), self.now)
        for req, reliable in self.sent:
            layer.receive(response(req, 487), TCP if reliable else UDP, self.now)
        self._pump()
        layer.handle_timer(self.now + 1000.0)
        self._pump()
        assert len(layer) == 0
        assert layer.get_timer() is None
        assert layer._server == {} and layer._client == {}


LayerMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
test_transaction_layer_state_machine = LayerMachine.TestCase
