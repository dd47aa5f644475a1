"""The transaction layer with a fake clock (RFC 3261 §17, RFC 6026)."""

from __future__ import annotations

import gc
import itertools
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from sipwake.sip.codec import parse_message
from sipwake.sip.errors import ParseError
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
from sipwake.sip.message import Request, Response, make_response
from sipwake.sip.timers import TimerConfig
from sipwake.sip.transactions import TransactionGone, TransactionLayer, new_branch


@dataclass(frozen=True)
class FakeFlow:
    name: str
    reliable: bool = False


UDP = FakeFlow("udp")
TCP = FakeFlow("tcp", reliable=True)
PEER = FakeFlow("peer")


def id_source() -> Callable[[], str]:
    counter = itertools.count(1)
    return lambda: f"id{next(counter)}"


def make_layer(**kw: bool) -> TransactionLayer:
    return TransactionLayer(TimerConfig(), id_source(), **kw)


def request(
    method: str = "INVITE",
    *,
    branch: str | None = "z9hG4bKbr1",
    sent_by: str = "10.0.0.1:5060",
    to_tag: str | None = None,
    call_id: str = "cid1",
    cseq: int = 1,
    cseq_method: str | None = None,
    extra: str = "",
) -> Request:
    """A request as it comes off the wire."""
    via_params = f";branch={branch}" if branch is not None else ""
    tag = f";tag={to_tag}" if to_tag else ""
    text = (
        f"{method} sip:bob@example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {sent_by}{via_params}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@example.com>;tag=ft1\r\n"
        f"To: <sip:bob@example.com>{tag}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} {cseq_method or method}\r\n"
        f"{extra}"
        "Content-Length: 0\r\n\r\n"
    )
    msg = parse_message(text.encode())
    assert isinstance(msg, Request)
    return msg


def response(req: Request, status: int, to_tag: str | None = "tt1") -> Response:
    """A response to ``req`` as it comes back off the wire."""
    msg = parse_message(make_response(req, status, to_tag=to_tag).serialise())
    assert isinstance(msg, Response)
    return msg


def wire(data: bytes) -> Request | Response:
    return parse_message(data)


def drain(layer: TransactionLayer) -> list[Event]:
    out = []
    while (event := layer.next_event()) is not None:
        out.append(event)
    return out


def advance(layer: TransactionLayer, until: float) -> list[tuple[float, bytes, Dest]]:
    """Fire every timer up to ``until`` at its exact deadline; what was sent, when."""
    sent: list[tuple[float, bytes, Dest]] = []
    while (when := layer.get_timer()) is not None and when <= until:
        layer.handle_timer(when)
        sent += [(when, data, dest) for data, dest in layer.outbox()]
    return sent


def times(sent: list[tuple[float, bytes, Dest]]) -> list[float]:
    return [t for t, _, _ in sent]


# -- client INVITE ---------------------------------------------------------------------------
def test_invite_client_retransmits_at_t1_doubling_and_times_out_with_timer_b() -> None:
    layer = make_layer()
    inv = request()
    tid = layer.send_request(inv, PEER, 0.0)
    first = layer.outbox()
    assert [dest for _, dest in first] == [PEER]
    assert wire(first[0][0]).serialise() == inv.serialise()
    sent = advance(layer, 100.0)
    # A: T1, 2T1, 4T1, ... after each (re)transmission; B at 64*T1 = 32 s.
    assert times(sent) == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert all(data is first[0][0] for _, data, _ in sent)  # serialised once
    assert drain(layer) == [TransactionTimeout(tid), TransactionTerminated(tid)]
    assert len(layer) == 0
    assert layer.get_timer() is None


def test_invite_client_timer_b_at_64_t1() -> None:
    layer = TransactionLayer(TimerConfig(t1=0.1), id_source())
    tid = layer.send_request(request(), PEER, 10.0)
    layer.outbox()
    advance(layer, 16.3)
    assert layer.state(tid) == "calling"
    advance(layer, 16.4)
    assert TransactionTimeout(tid) in drain(layer)


def test_reliable_transport_never_retransmits() -> None:
    layer = make_layer()
    tid = layer.send_request(request(), TCP, 0.0)
    assert len(layer.outbox()) == 1
    assert layer.get_timer() == 32.0  # only Timer B
    assert advance(layer, 100.0) == []
    assert drain(layer) == [TransactionTimeout(tid), TransactionTerminated(tid)]


def test_provisional_stops_retransmissions_and_timer_b() -> None:
    layer = make_layer()
    inv = request()
    tid = layer.send_request(inv, PEER, 0.0)
    layer.outbox()
    advance(layer, 0.6)  # one retransmission
    ringing = response(inv, 180)
    layer.receive(ringing, UDP, 0.7)
    assert drain(layer) == [ResponseReceived(ringing, tid)]
    assert layer.state(tid) == "proceeding"
    assert advance(layer, 500.0) == []
    assert drain(layer) == []  # Timer C (the proxy's) bounds Proceeding, not Timer B
    layer.terminate(tid)
    assert drain(layer) == [TransactionTerminated(tid)]
    assert len(layer) == 0


def test_non_2xx_is_acked_by_the_transaction_and_retransmissions_reacked() -> None:
    layer = make_layer()
    inv = request(extra="Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n")
    inv.headers.add("Via", "SIP/2.0/UDP 10.9.9.9;branch=z9hG4bKlower")
    tid = layer.send_request(inv, PEER, 0.0)
    layer.outbox()
    busy = response(inv, 486)
    layer.receive(busy, UDP, 1.0)
    assert drain(layer) == [ResponseReceived(busy, tid)]
    [(ack_bytes, dest)] = layer.outbox()
    assert dest == PEER
    ack = wire(ack_bytes)
    assert isinstance(ack, Request)
    assert ack.method == "ACK" and ack.uri == inv.uri
    assert ack.headers.get_all("via") == ["SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKbr1"]
    assert ack.to.tag == "tt1"
    assert ack.from_.tag == "ft1" and ack.call_id == "cid1"
    assert (ack.cseq.seq, ack.cseq.method) == (1, "ACK")
    assert ack.headers.get_all("route") == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    ack.validate()
    # The final is retransmitted (our ACK was lost): same ACK again, nothing to the TU.
    layer.receive(response(inv, 486), UDP, 2.0)
    assert layer.outbox() == [(ack_bytes, PEER)]
    assert drain(layer) == []
    assert advance(layer, 32.9) == []
    assert layer.state(tid) == "completed"
    advance(layer, 33.0)  # Timer D = 32 s after the first final
    assert drain(layer) == [TransactionTerminated(tid)]


def test_non_2xx_on_reliable_terminates_at_once() -> None:
    layer = make_layer()
    inv = request()
    tid = layer.send_request(inv, TCP, 0.0)
    layer.outbox()
    busy = response(inv, 603)
    layer.receive(busy, TCP, 1.0)
    assert len(layer.outbox()) == 1  # the ACK
    assert drain(layer) == [ResponseReceived(busy, tid), TransactionTerminated(tid)]
    assert layer.get_timer() is None


def test_2xx_goes_to_accepted_and_every_2xx_goes_up_until_timer_m() -> None:
    layer = make_layer()
    inv = request()
    tid = layer.send_request(inv, PEER, 0.0)
    layer.outbox()
    ok = response(inv, 200)
    layer.receive(ok, UDP, 1.0)
    assert layer.outbox() == []  # no ACK: the 2xx ACK is end to end
    assert layer.state(tid) == "accepted"
    ok_again = response(inv, 200)
    other_fork = response(inv, 200, to_tag="fork2")
    layer.receive(ok_again, UDP, 1.5)
    layer.receive(other_fork, UDP, 1.6)
    layer.receive(response(inv, 180), UDP, 1.7)  # late provisional: absorbed
    assert drain(layer) == [
        ResponseReceived(ok, tid),
        ResponseReceived(ok_again, tid),
        ResponseReceived(other_fork, tid),
    ]
    advance(layer, 33.0)  # Timer M = 64*T1 after the first 2xx
    assert drain(layer) == [TransactionTerminated(tid)]
    late = response(inv, 200)
    layer.receive(late, UDP, 34.0)
    assert drain(layer) == [StrayResponse(late, UDP)]


@pytest.mark.parametrize(("method", "status"), [("INVITE", 200), ("INVITE", 486), ("BYE", 200)])
def test_client_keeps_nothing_of_its_request_once_it_has_its_final(
    method: str, status: int
) -> None:
    """Completed/Accepted last up to 64*T1: a parsed request kept that long is ~30 objects
    for the garbage collector's full passes to walk, per call (fsm.RELEASE)."""
    layer = make_layer()
    req = request(method)
    tid = layer.send_request(req, PEER, 0.0)
    layer.outbox()
    txn = layer._txns[tid]
    assert req in gc.get_referents(txn)
    layer.receive(response(req, 180), UDP, 0.5)
    assert req in gc.get_referents(txn)  # still pending: a CANCEL is built from it
    layer.receive(response(req, status), UDP, 1.0)
    first = layer.outbox()  # the ACK of a non-2xx, built before the request went
    assert layer.state(tid) in ("completed", "accepted")
    assert req not in gc.get_referents(txn)
    with pytest.raises(TransactionGone):
        layer.make_cancel(tid)  # §9.1: a request with a final response is not cancelled
    layer.receive(response(req, status), UDP, 2.0)  # a retransmitted final still works
    if method == "INVITE" and status >= 300:
        assert layer.outbox() == first  # the same ACK again
        assert wire(first[0][0]).method == "ACK"  # type: ignore[union-attr]


# -- client non-INVITE -------------------------------------------------------------------------
def test_non_invite_client_backs_off_to_t2_and_times_out_with_timer_f() -> None:
    layer = make_layer()
    tid = layer.send_request(request("OPTIONS"), PEER, 0.0)
    layer.outbox()
    sent = advance(layer, 100.0)
    assert times(sent) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert drain(layer) == [TransactionTimeout(tid), TransactionTerminated(tid)]
    assert len(layer) == 0


def test_non_invite_client_proceeding_retransmits_every_t2() -> None:
    layer = make_layer()
    req = request("REGISTER")
    tid = layer.send_request(req, PEER, 0.0)
    layer.outbox()
    layer.receive(response(req, 100), UDP, 0.2)
    sent = advance(layer, 13.0)
    assert times(sent) == [0.5, 4.5, 8.5, 12.5]
    ok = response(req, 200)
    layer.receive(ok, UDP, 13.0)
    layer.receive(response(req, 200), UDP, 13.1)  # retransmission: absorbed in Completed
    assert [type(e) for e in drain(layer)] == [ResponseReceived, ResponseReceived]
    assert layer.state(tid) == "completed"
    assert advance(layer, 17.9) == []
    advance(layer, 18.0)  # Timer K = T4
    assert drain(layer) == [TransactionTerminated(tid)]


def test_non_invite_client_final_on_reliable_terminates_at_once() -> None:
    layer = make_layer()
    req = request("OPTIONS")
    tid = layer.send_request(req, TCP, 0.0)
    ok = response(req, 200)
    layer.receive(ok, TCP, 0.1)
    assert drain(layer) == [ResponseReceived(ok, tid), TransactionTerminated(tid)]
    assert len(layer) == 0 and layer.get_timer() is None


def test_send_request_rejects_what_cannot_be_a_client_transaction() -> None:
    layer = make_layer()
    with pytest.raises(ValueError, match="ACK"):
        layer.send_request(request("ACK"), PEER, 0.0)
    with pytest.raises(ValueError, match="z9hG4bK"):
        layer.send_request(request(branch="old-style"), PEER, 0.0)
    layer.send_request(request(), PEER, 0.0)
    with pytest.raises(ValueError, match="already"):
        layer.send_request(request(), PEER, 0.0)
    assert new_branch(lambda: "xyz") == "z9hG4bKxyz"


def test_response_matching_uses_branch_and_cseq_method() -> None:
    layer = make_layer()
    inv = request()
    tid = layer.send_request(inv, PEER, 0.0)
    cancel = layer.make_cancel(tid, reason='SIP;cause=200;text="Call completed elsewhere"')
    assert cancel.method == "CANCEL" and cancel.uri == inv.uri
    assert cancel.top_via.branch == "z9hG4bKbr1"
    assert (cancel.cseq.seq, cancel.cseq.method) == (1, "CANCEL")
    assert cancel.headers.get("reason") is not None
    cancel.validate()
    ctid = layer.send_request(cancel, PEER, 0.1)
    assert ctid != tid
    cancel_ok = response(cancel, 200)
    terminated = response(inv, 487)
    layer.receive(cancel_ok, UDP, 0.2)
    layer.receive(terminated, UDP, 0.3)
    events = drain(layer)
    assert ResponseReceived(cancel_ok, ctid) in events
    assert ResponseReceived(terminated, tid) in events
    stray = response(request(branch="z9hG4bKother"), 200)
    layer.receive(stray, UDP, 0.4)
    assert drain(layer) == [StrayResponse(stray, UDP)]


# -- server INVITE ---------------------------------------------------------------------------
def test_new_invite_gets_100_trying_and_retransmissions_get_the_last_response() -> None:
    layer = make_layer()
    inv = request(extra="Timestamp: 54.2\r\n")
    layer.receive(inv, UDP, 0.0)
    [event] = drain(layer)
    assert isinstance(event, RequestReceived) and event.request is inv and event.flow == UDP
    assert event.txn_id is not None
    [(data, dest)] = layer.outbox()
    assert dest == UDP
    trying = wire(data)
    assert isinstance(trying, Response) and trying.status == 100
    assert trying.to.tag is None
    assert trying.headers.get("timestamp") == "54.2"
    assert trying.call_id == "cid1" and trying.top_via.branch == "z9hG4bKbr1"
    layer.receive(request(extra="Timestamp: 54.2\r\n"), UDP, 0.5)
    assert drain(layer) == []
    assert layer.outbox() == [(data, UDP)]
    layer.send_response(event.txn_id, make_response(inv, 180, to_tag="tt1"), 1.0)
    [(ringing, _)] = layer.outbox()
    layer.receive(request(), UDP, 1.5)
    assert layer.outbox() == [(ringing, UDP)]


def test_auto_trying_can_be_turned_off() -> None:
    layer = make_layer(auto_trying=False)
    layer.receive(request(), UDP, 0.0)
    assert layer.outbox() == []
    layer.receive(request(), UDP, 0.1)  # nothing sent yet, nothing to resend
    assert layer.outbox() == []
    assert len(drain(layer)) == 1


def test_server_non_2xx_retransmits_capped_at_t2_then_timer_h() -> None:
    layer = make_layer()
    inv = request()
    layer.receive(inv, UDP, 0.0)
    [event] = drain(layer)
    assert isinstance(event, RequestReceived) and event.txn_id is not None
    tid = event.txn_id
    layer.outbox()
    layer.send_response(tid, make_response(inv, 486, to_tag="tt1"), 0.0)
    [(busy, _)] = layer.outbox()
    sent = advance(layer, 100.0)
    assert times(sent) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert all(data is busy for _, data, _ in sent)
    assert drain(layer) == [TransactionTimeout(tid), TransactionTerminated(tid)]
    assert len(layer) == 0


def test_ack_for_non_2xx_is_absorbed_and_timer_i_ends_it() -> None:
    layer = make_layer()
    inv = request()
    layer.receive(inv, UDP, 0.0)
    tid = drain(layer)[0].txn_id  # type: ignore[union-attr]
    assert tid is not None
    layer.send_response(tid, make_response(inv, 404, to_tag="tt1"), 0.0)
    layer.outbox()
    assert times(advance(layer, 0.6)) == [0.5]  # Timer G, before the ACK arrives
    ack = request("ACK", to_tag="tt1")
    layer.receive(ack, UDP, 0.7)
    assert drain(layer) == []
    assert layer.state(tid) == "confirmed"
    layer.receive(request("ACK", to_tag="tt1"), UDP, 0.8)  # retransmitted ACK: absorbed
    layer.receive(request(), UDP, 0.9)  # late INVITE retransmission: absorbed
    assert layer.outbox() == [] and drain(layer) == []
    assert advance(layer, 5.69) == []
    advance(layer, 5.7)  # Timer I = T4 after the ACK
    assert drain(layer) == [TransactionTerminated(tid)]


def test_ack_for_non_2xx_on_reliable_terminates_at_once() -> None:
    layer = make_layer()
    inv = request()
    layer.receive(inv, TCP, 0.0)
    tid = drain(layer)[0].txn_id  # type: ignore[union-attr]
    assert tid is not None
    layer.send_response(tid, make_response(inv, 486, to_tag="tt1"), 0.0)
    assert layer.get_timer() == 32.0  # Timer H only, no G
    layer.receive(request("ACK", to_tag="tt1"), TCP, 0.1)
    assert drain(layer) == [TransactionTerminated(tid)]
    assert len(layer) == 0 and layer.get_timer() is None


def test_2xx_accepted_absorbs_invites_and_passes_the_ack_up() -> None:
    layer = make_layer()
    inv = request()
    layer.receive(inv, UDP, 0.0)
    tid = drain(layer)[0].txn_id  # type: ignore[union-attr]
    assert tid is not None
    layer.outbox()
    ok = make_response(inv, 200, to_tag="tt1")
    layer.send_response(tid, ok, 0.1)
    [(ok_bytes, _)] = layer.outbox()
    assert layer.state(tid) == "accepted"
    layer.receive(request(), UDP, 0.5)  # INVITE retransmission: absorbed (RFC 6026)
    assert layer.outbox() == [] and drain(layer) == []
    layer.send_response(tid, ok, 0.6)  # the TU forwards a 2xx retransmission
    assert layer.outbox() == [(ok_bytes, UDP)]
    ack = request("ACK", branch="z9hG4bKnewack", to_tag="tt1")
    layer.receive(ack, UDP, 0.7)
    assert drain(layer) == [RequestReceived(ack, None, UDP)]
    assert advance(layer, 32.0) == []
    assert drain(layer) == []
    advance(layer, 32.1)  # Timer L = 64*T1 after the 2xx
    assert drain(layer) == [TransactionTerminated(tid)]


def test_server_sends_nothing_after_its_final_except_a_late_2xx() -> None:
    layer = make_layer()
    inv = request()
    layer.receive(inv, UDP, 0.0)
    tid = drain(layer)[0].txn_id  # type: ignore[union-attr]
    assert tid is not None
    layer.outbox()
    layer.send_response(tid, make_response(inv, 487, to_tag="tt1"), 0.0)
    layer.outbox()
    layer.send_response(tid, make_response(inv, 180, to_tag="tt1"), 0.1)
    layer.send_response(tid, make_response(inv, 500, to_tag="tt1"), 0.1)
    assert layer.outbox() == []
    ok = make_response(inv, 200, to_tag="tt2")
    layer.send_response(tid, ok, 0.2)  # §16.7 step 5: a 2xx is forwarded regardless
    assert layer.outbox() == [(ok.serialise(), UDP)]
    assert layer.state(tid) == "completed"


def test_send_response_to_a_gone_transaction() -> None:
    layer = make_layer()
    with pytest.raises(TransactionGone):
        layer.send_response("nope", make_response(request(), 200), 0.0)
    tid = layer.send_request(request(), PEER, 0.0)
    with pytest.raises(TransactionGone):  # a client transaction takes no responses
        layer.send_response(tid, make_response(request(), 200), 0.0)
    with pytest.raises(TransactionGone):
        layer.make_cancel("nope")


# -- server non-INVITE -----------------------------------------------------------------------
def test_server_non_invite_absorbs_then_resends_and_timer_j() -> None:
    layer = make_layer()
    reg = request("REGISTER")
    layer.receive(reg, UDP, 0.0)
    tid = drain(layer)[0].txn_id  # type: ignore[union-attr]
    assert tid is not None
    assert layer.outbox() == []  # no automatic 100 for non-INVITE
    layer.receive(request("REGISTER"), UDP, 0.5)  # Trying: discarded
    assert layer.outbox() == [] and drain(layer) == []
    layer.send_response(tid, make_response(reg, 200, to_tag="tt1"), 1.0)
    [(ok, _)] = layer.outbox()
    layer.receive(request("REGISTER"), UDP, 1.5)
    assert layer.outbox() == [(ok, UDP)]
    assert drain(layer) == []
    assert advance(layer, 32.9) == []
    advance(layer, 33.0)  # Timer J = 64*T1
    assert drain(layer) == [TransactionTerminated(tid)]


def test_server_non_invite_on_reliable_terminates_on_final() -> None:
    layer = make_layer()
    reg = request("REGISTER")
    layer.receive(reg, TCP, 0.0)
    tid = drain(layer)[0].txn_id  # type: ignore[union-attr]
    assert tid is not None
    layer.send_response(tid, make_response(reg, 100), 0.0)
    layer.send_response(tid, make_response(reg, 200, to_tag="x"), 0.1)
    assert len(layer.outbox()) == 2
    assert drain(layer) == [TransactionTerminated(tid)]


# -- matching ---------------------------------------------------------------------------
def test_cancel_has_its_own_transaction_linked_to_the_invite() -> None:
    layer = make_layer()
    layer.receive(request(), UDP, 0.0)
    [invited] = drain(layer)
    assert isinstance(invited, RequestReceived)
    cancel = request("CANCEL")
    layer.receive(cancel, UDP, 1.0)
    [cancelled] = drain(layer)
    assert isinstance(cancelled, CancelReceived)
    assert cancelled.cancel is cancel and cancelled.flow == UDP
    assert cancelled.invite_txn_id == invited.txn_id
    assert cancelled.txn_id != invited.txn_id
    assert layer.server_transaction_for_cancel(cancelled.txn_id) == invited.txn_id
    layer.send_response(cancelled.txn_id, make_response(cancel, 200, to_tag="tt1"), 1.0)
    layer.outbox()
    layer.receive(request("CANCEL"), UDP, 1.5)  # retransmitted CANCEL: its own 200 again
    [(again, _)] = layer.outbox()
    assert wire(again).cseq.method == "CANCEL"  # type: ignore[union-attr]
    # A CANCEL for an INVITE we never saw (other branch): no link, the TU answers 481.
    layer.receive(request("CANCEL", branch="z9hG4bKunknown"), UDP, 2.0)
    [orphan] = drain(layer)
    assert isinstance(orphan, CancelReceived) and orphan.invite_txn_id is None
    assert layer.server_transaction_for_cancel(orphan.txn_id) is None


def test_same_branch_from_another_sent_by_is_another_transaction() -> None:
    layer = make_layer()
    layer.receive(request(), UDP, 0.0)
    layer.receive(request(sent_by="10.0.0.2:5060"), UDP, 0.0)
    events = drain(layer)
    assert len(events) == 2 and len(layer) == 2
    assert len({e.txn_id for e in events}) == 2  # type: ignore[union-attr]


def test_ack_for_2xx_matches_nothing() -> None:
    layer = make_layer()
    ack = request("ACK", branch="z9hG4bKfresh", to_tag="tt1")
    layer.receive(ack, UDP, 0.0)
    assert drain(layer) == [RequestReceived(ack, None, UDP)]
    assert len(layer) == 0


@pytest.mark.parametrize("branch", [None, "1234abcd"])
def test_rfc2543_matching(branch: str | None) -> None:
    layer = make_layer()
    inv = request(branch=branch)
    layer.receive(inv, UDP, 0.0)
    [first] = drain(layer)
    assert isinstance(first, RequestReceived) and first.txn_id is not None
    tid = first.txn_id
    [(trying, _)] = layer.outbox()
    # Retransmission: same Request-URI, From tag, Call-ID, CSeq, top Via, To tag.
    layer.receive(request(branch=branch), UDP, 0.3)
    assert drain(layer) == [] and layer.outbox() == [(trying, UDP)]
    # Another CSeq is another transaction.
    layer.receive(request(branch=branch, cseq=2), UDP, 0.3)
    [other] = drain(layer)
    assert isinstance(other, RequestReceived) and other.txn_id not in (None, tid)
    # CANCEL: own transaction, linked by the same fields with the method taken as INVITE.
    layer.receive(request("CANCEL", branch=branch), UDP, 0.4)
    [cancelled] = drain(layer)
    assert isinstance(cancelled, CancelReceived) and cancelled.invite_txn_id == tid
    layer.outbox()
    layer.send_response(tid, make_response(inv, 487, to_tag="srv"), 0.5)
    layer.outbox()
    # An ACK whose To tag is not that of our response is not ours.
    wrong = request("ACK", branch=branch, to_tag="someone-else")
    layer.receive(wrong, UDP, 0.6)
    assert drain(layer) == [RequestReceived(wrong, None, UDP)]
    assert layer.state(tid) == "completed"
    layer.receive(request("ACK", branch=branch, to_tag="srv"), UDP, 0.7)
    assert drain(layer) == []
    assert layer.state(tid) == "confirmed"


def test_unparseable_top_via_raises_parse_error_and_changes_nothing() -> None:
    layer = make_layer()
    bad = request()
    bad.headers.set("Via", "garbage")
    with pytest.raises(ParseError):
        layer.receive(bad, UDP, 0.0)
    no_via = request()
    no_via.headers.remove("Via")
    with pytest.raises(ParseError):
        layer.receive(no_via, UDP, 0.0)
    assert len(layer) == 0 and drain(layer) == [] and layer.outbox() == []


def test_the_table_empties() -> None:
    layer = make_layer()
    for i in range(50):
        inv = request(branch=f"z9hG4bKs{i}", call_id=f"c{i}")
        flow = TCP if i % 2 else UDP
        layer.receive(inv, flow, 0.0)
        tid = drain(layer)[-1].txn_id  # type: ignore[union-attr]
        assert tid is not None
        layer.send_response(tid, make_response(inv, 200 if i % 3 else 486, to_tag="t"), 0.1)
        out = request(method="OPTIONS", branch=f"z9hG4bKc{i}", call_id=f"o{i}")
        layer.send_request(out, flow, 0.2)
        if i % 5 == 0:
            layer.receive(response(out, 200), flow, 0.3)
    assert len(layer) == 95  # the 5 OPTIONS answered over TCP ended at once (K = 0)
    advance(layer, 1000.0)
    layer.outbox()
    drain(layer)
    assert len(layer) == 0
    assert layer.get_timer() is None
    assert layer._server == {} and layer._client == {} and len(layer._deadlines) == 0


def test_100_trying_copies_compact_headers_and_an_existing_to_tag() -> None:
    raw = (
        "INVITE sip:bob@example.com SIP/2.0\r\n"
        "v: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKre\r\n"
        "v: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKfirst\r\n"
        "Max-Forwards: 70\r\n"
        "f: <sip:alice@example.com>;tag=ft1\r\n"
        "t: <sip:bob@example.com>;tag=dialog\r\n"
        "i: re-invite\r\n"
        "CSeq: 2 INVITE\r\n"
        "c: application/sdp\r\n"
        "l: 0\r\n\r\n"
    )
    layer = make_layer()
    layer.receive(wire(raw.encode()), UDP, 0.0)
    [(data, _)] = layer.outbox()
    trying = wire(data)
    assert isinstance(trying, Response) and trying.status == 100
    assert [v.branch for v in trying.vias] == ["z9hG4bKre", "z9hG4bKfirst"]
    assert trying.to.tag == "dialog" and trying.call_id == "re-invite"
    assert "content-type" not in trying.headers and trying.body == b""
    trying.validate()


def test_has_server_branch_matches_from_the_top_via_alone() -> None:
    # The overload path (sip/scan.py) has only the top Via: the §17.2.3 key from it must
    # find the same transactions as the full request does.
    layer = make_layer()
    invite = request("INVITE", branch="z9hG4bKin", sent_by="Host.Example:5070")
    layer.receive(invite, UDP, 0.0)
    again = request("INVITE", branch="z9hG4bKin", sent_by="host.example:5070")
    assert layer.has_server_transaction(again)
    assert layer.has_server_branch(again.top_via, "INVITE") is True
    other = request("INVITE", branch="z9hG4bKin", sent_by="host.example:5071")
    assert layer.has_server_branch(other.top_via, "INVITE") is False
    assert layer.has_server_branch(again.top_via, "REGISTER") is False
    # An RFC 2543 branch: the key needs the parsed request, the answer is "cannot tell".
    old = request("INVITE", branch="1234", sent_by="10.0.0.9")
    layer.receive(old, UDP, 0.0)
    assert layer.has_server_branch(old.top_via, "INVITE") is None
