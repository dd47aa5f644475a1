"""Every (state, input) pair of every table has an outcome, and the driver can run it."""

from __future__ import annotations

import itertools

import pytest

from sipwake.sip.message import Response, make_response
from sipwake.sip.transactions import fsm
from sipwake.sip.transactions.client import ClientTransaction
from sipwake.sip.transactions.layer import TransactionLayer
from sipwake.sip.transactions.server import ServerTransaction, server_key
from tests.sip.test_transactions import TCP, UDP, make_layer, request, response


def test_the_driver_implements_every_action() -> None:
    assert set(make_layer()._actions) == fsm.ACTIONS


@pytest.mark.parametrize("machine", sorted(fsm.MACHINES))
def test_table_is_complete_and_closed(machine: str) -> None:
    table, states, inputs = fsm.MACHINES[machine]
    assert set(table) == set(itertools.product(states, inputs))
    for (state, _), (new_state, actions) in table.items():
        assert new_state in states
        for action in actions:
            assert action in fsm.ACTIONS, action
        if state == fsm.TERMINATED:
            assert (new_state, actions) == (state, ())


def _cases() -> list[tuple[str, str, str, bool]]:
    return [
        (machine, state, inp, reliable)
        for machine, (_, states, inputs) in sorted(fsm.MACHINES.items())
        for state in states
        for inp in inputs
        for reliable in (False, True)
    ]


def _install(layer: TransactionLayer, machine: str, reliable: bool) -> fsm.Transaction:
    flow = TCP if reliable else UDP
    method = "INVITE" if machine.endswith("_invite") and "non" not in machine else "OPTIONS"
    req = request(method)
    if machine.startswith("client"):
        tid = layer.send_request(req, flow, 0.0)
    else:
        layer.receive(req, flow, 0.0)
        key, _ = server_key(req, method)
        tid = layer._server[key].id
    return layer._txns[tid]


def _message(txn: fsm.Transaction, inp: str) -> object:
    req = txn.request
    if inp in (fsm.R1XX, fsm.R2XX, fsm.R3_6):
        return response(req, {fsm.R1XX: 180, fsm.R2XX: 200, fsm.R3_6: 486}[inp])
    if inp in (fsm.SEND_1XX, fsm.SEND_2XX, fsm.SEND_3_6):
        status = {fsm.SEND_1XX: 180, fsm.SEND_2XX: 200, fsm.SEND_3_6: 486}[inp]
        return make_response(req, status, to_tag="tt1")
    if inp == fsm.REQUEST:
        return request(req.method)
    if inp == fsm.ACK:
        return request("ACK", to_tag="tt1")
    return None


@pytest.mark.parametrize(("machine", "state", "inp", "reliable"), _cases())
def test_every_pair_runs(machine: str, state: str, inp: str, reliable: bool) -> None:
    layer = make_layer()
    txn = _install(layer, machine, reliable)
    assert type(txn) is (ClientTransaction if machine.startswith("client") else ServerTransaction)
    layer.outbox()
    while layer.next_event() is not None:
        pass
    txn.state = state
    if isinstance(txn, ClientTransaction) and txn.ack is None and txn.invite:
        txn.ack = b"ACK"  # Completed was entered with an ACK already built
    if isinstance(txn, ServerTransaction) and inp == fsm.REQUEST and txn.last is None:
        txn.keep_response(make_response(txn.request, 100))
    expected_state, actions = txn.table[state, inp]
    msg = _message(txn, inp)
    layer._drive(txn, inp, msg, 1.0)  # type: ignore[arg-type]
    sent = layer.outbox()
    events = []
    while (event := layer.next_event()) is not None:
        events.append(event)
    if fsm.TERMINATED in (expected_state, txn.state):
        # Either the table ends it, or a zero-length timer on a reliable flow did.
        assert txn.id not in layer._txns
        assert events[-1].txn_id == txn.id  # type: ignore[union-attr]
    else:
        assert txn.state == expected_state
    sends = {fsm.SEND_REQUEST, fsm.SEND_ACK, fsm.SEND_RESPONSE, fsm.FORWARD_RESPONSE}
    if sends & set(actions):
        assert sent
    if not actions and expected_state != fsm.TERMINATED:
        assert sent == [] and events == []  # IGNORE is silent
    if fsm.PASS_UP in actions:
        passed = [getattr(e, "response", None) or getattr(e, "request", None) for e in events]
        assert msg in passed
    if isinstance(msg, Response):
        assert msg.status in (180, 200, 486)
