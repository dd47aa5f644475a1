"""Shedding before the parse (app/engine.py, sip/scan.py), the whole app ring on a fake clock
(tests/app/harness.py): while overloaded a new request gets 503 + Retry-After with its
headers echoed, and nothing else happens; what belongs to work already accepted (in-dialog
requests, CANCEL, ACK, retransmissions) and responses still take the full path."""

from __future__ import annotations

from sipwake.policy.overload import SHED_TAG_PREFIX, OverloadLimits
from sipwake.sip.codec import parse_message
from sipwake.sip.message import Request, Response, make_response
from sipwake.transport.flow import Flow
from tests.app.harness import AOR, DOMAIN, US, Rig, request_bytes, settle

CALLER = Flow("UDP", US, ("198.51.100.7", 5070))


def overload(rig: Rig, on: bool = True) -> None:
    """The UDP receive queue full (or not), as the transport reports it to the engine."""
    rig.engine.overload = OverloadLimits(retry_after=7)
    rig.engine.backlog = (lambda: 1.0) if on else (lambda: 0.0)


def state(rig: Rig) -> tuple[int, int, int, int, int]:
    """What a shed request must leave as it was: transactions, requests in progress, held
    calls, pushes, call events."""
    return (
        len(rig.engine.txn),
        len(rig.engine._unanswered),
        rig.calls.held_count(),
        len(rig.push.sent),
        len(rig.events),
    )


def sent_since(rig: Rig, mark: int) -> list[tuple[Flow, Request | Response]]:
    return rig.net.sent[mark:]


async def test_new_invite_is_answered_503_from_its_bytes_and_changes_nothing() -> None:
    rig = Rig()
    await rig.register("iphone")
    overload(rig)
    before, mark = state(rig), len(rig.net.sent)
    # A Max-Forwards the full path refuses (400, RFC 3261 §8.2.2): a 503 shows that the
    # answer came from the scan, before any parse or validation.
    invite = request_bytes(
        "INVITE", AOR, CALLER, call_id="shed-1", cseq=1, extra=[("Max-Forwards", "x")]
    )
    rig.engine.on_message(invite, CALLER)
    await settle()
    [(flow, response)] = sent_since(rig, mark)
    assert isinstance(response, Response) and response.status == 503
    assert flow.remote == CALLER.remote
    assert response.headers.get("retry-after") == "7"  # RFC 3261 §21.5.4
    request = parse_message(invite)
    for name in ("from", "call-id", "cseq"):
        assert response.headers.get(name) == request.headers.get(name)
    assert (response.headers.get("to") or "").startswith(f"<{AOR}>;tag={SHED_TAG_PREFIX}")
    # The top Via as the full path stamps it (RFC 3581 §4: rport filled in).
    assert response.top_via.branch == request.top_via.branch
    assert response.top_via.params.get("rport") == "5070"
    assert state(rig) == before
    assert rig.engine.stats.shed == 1

    # Its ACK (same branch, the 503's To tag) matches no transaction: dropped, nothing sent.
    ack = invite.replace(b"INVITE", b"ACK").replace(
        f"<{AOR}>".encode(), f"<{AOR}>;tag={response.to.tag}".encode()
    )
    rig.engine.on_message(ack, CALLER)
    await settle()
    assert sent_since(rig, mark + 1) == []
    assert state(rig) == before
    # One that arrives once the overload is over is dropped the same way, before any
    # parse: a line the parser refuses would count it dropped or a parse error otherwise.
    overload(rig, on=False)
    garbled = ack.replace(b"Call-ID:", b"not a header line\r\nCall-ID:")
    rig.engine.on_message(garbled, CALLER)
    await settle()
    assert sent_since(rig, mark + 1) == []
    assert state(rig) == before
    stats = rig.engine.stats
    assert (stats.parse_errors, stats.dropped) == (0, 0)


async def test_register_is_shed_and_the_binding_store_untouched() -> None:
    rig = Rig()
    phone = await rig.register("iphone")
    bindings = await rig.store.lookup(AOR, rig.clock.wall())
    overload(rig)
    mark = len(rig.net.sent)
    reg = request_bytes(
        "REGISTER",
        f"sip:{DOMAIN}",
        phone.flow,
        call_id="reg-new",
        cseq=1,
        extra=[("Contact", "<sip:bob@10.9.9.9:5060>"), ("Expires", "3600")],
    )
    rig.engine.on_message(reg, phone.flow)
    await settle()
    assert [m.status for _, m in sent_since(rig, mark) if isinstance(m, Response)] == [503]
    assert await rig.store.lookup(AOR, rig.clock.wall()) == bindings


async def test_work_in_progress_keeps_flowing_while_overloaded() -> None:
    rig = Rig()
    await rig.register("iphone")
    invite = await rig.call()  # accepted before the overload: held, pushed
    assert rig.caller_got() == [100, 110]
    overload(rig)
    shed_before = rig.engine.stats.shed

    # A retransmission of that INVITE: its transaction answers it again, no 503.
    rig.engine.on_message(invite.serialise(), CALLER)
    await settle()
    assert rig.caller_got() == [100, 110]
    # CANCEL of the held call: full path, 200 to the CANCEL and 487 to the INVITE.
    await rig.cancel(invite)
    assert 487 in rig.caller_got()
    # An in-dialog request (To tag): the full path forwards it to its Request-URI.
    mark = len(rig.net.sent)
    peer = "sip:alice@203.0.113.5:5060"
    bye = request_bytes("BYE", peer, CALLER, call_id="other", cseq=2).replace(
        f"To: <{AOR}>".encode(), f"To: <{AOR}>;tag=abc".encode()
    )
    rig.engine.on_message(bye, CALLER)
    await settle()
    [(flow, forwarded)] = sent_since(rig, mark)
    assert isinstance(forwarded, Request) and forwarded.method == "BYE"
    assert flow.remote == ("203.0.113.5", 5060)
    # Its response reaches the client transaction and is relayed to the caller.
    rig.engine.on_message(make_response(forwarded, 200).serialise(), flow)
    await settle()
    [(back, ok)] = sent_since(rig, mark + 1)
    assert back.remote == CALLER.remote
    assert isinstance(ok, Response) and (ok.status, ok.cseq.method) == (200, "BYE")
    # OPTIONS is answered, not shed.
    mark = len(rig.net.sent)
    rig.engine.on_message(
        request_bytes("OPTIONS", f"sip:{DOMAIN}", CALLER, call_id="ka", cseq=1), CALLER
    )
    await settle()
    assert [m.status for _, m in sent_since(rig, mark) if isinstance(m, Response)] == [200]
    assert rig.engine.stats.shed == shed_before


async def test_what_the_scan_cannot_read_is_shed_after_the_parse() -> None:
    rig = Rig()
    await rig.register("iphone")
    overload(rig)
    mark = len(rig.net.sent)
    # An LF-only sender: the scan gives up, the parser reads it, the 503 comes all the same.
    invite = request_bytes("INVITE", AOR, CALLER, call_id="lf", cseq=1).replace(b"\r\n", b"\n")
    rig.engine.on_message(invite, CALLER)
    await settle()
    [(_, response)] = sent_since(rig, mark)
    assert isinstance(response, Response) and response.status == 503
    assert response.headers.get("retry-after") == "7"


async def test_not_overloaded_the_request_is_served() -> None:
    rig = Rig()
    await rig.register("iphone")
    overload(rig, on=False)
    await rig.call()
    assert rig.caller_got() == [100, 110]
    assert rig.engine.stats.shed == 0


def register_bytes(user: str, flow: Flow, call_id: str, *, to: str | None = None) -> bytes:
    """A new REGISTER of ``user`` (its AoR in To) from ``flow``; ``to``: another To line."""
    aor = f"sip:{user}@{DOMAIN}"
    data = request_bytes(
        "REGISTER",
        f"sip:{DOMAIN}",
        flow,
        call_id=call_id,
        cseq=1,
        extra=[("Contact", f"<sip:{user}@{flow.remote[0]}:{flow.remote[1]}>")],
    )
    data = data.replace(f"<{AOR}>".encode(), f"<{aor}>".encode())
    return data.replace(f"To: <{aor}>".encode(), f"To: {to}".encode()) if to else data


async def test_the_wake_register_of_a_held_call_is_served_while_overloaded() -> None:
    """Issue 15 follow-up: a device pushed for a held call wakes into an overload; its
    REGISTER completes that call (the caller has its 110 and waits for it), so it is
    served and the INVITE reaches the device, while a REGISTER of another user arriving
    at the same moment gets 503."""
    rig = Rig()
    phone = await rig.register("iphone")
    await rig.call()  # accepted before the overload: held, the phone pushed
    assert rig.caller_got() == [100, 110] and len(rig.push.to(phone.token)) == 1
    overload(rig)
    shed_before = rig.engine.stats.shed

    other = Flow("UDP", US, ("10.0.9.9", 41000))
    rig.engine.on_message(register_bytes("alice", other, "reg-alice"), other)
    await settle()
    assert rig.net.statuses(other) == [503]
    assert rig.engine.stats.shed == shed_before + 1

    await rig.register("iphone", dev=phone)  # asserts the REGISTER got 200, not 503
    [invite] = rig.invites(phone)
    await rig.answer(phone, invite, 200)
    assert rig.caller_got() == [100, 110, 200]
    assert rig.engine.stats.shed == shed_before + 1


async def test_the_wake_register_is_served_after_the_parse_too() -> None:
    """The same for what the scan cannot read (an LF-only sender): the REGISTER is
    exempted after the parse, by the same key (the To URI's AoR, its host in another case,
    sips, a display name and parameters: RFC 3261 §10.3 step 5, §19.1.4)."""
    rig = Rig()
    await rig.register("iphone")
    await rig.call()
    overload(rig)
    woken = Flow("UDP", US, ("10.0.1.1", 40999))
    to = f'"Bob" <sips:b%6Fb@{DOMAIN.upper()}:5061;transport=tls>;x=y'
    reg = register_bytes("bob", woken, "reg-lf", to=to).replace(b"\r\n", b"\n")
    rig.engine.on_message(reg, woken)
    await settle()
    assert rig.net.statuses(woken) == [200]
    assert len(rig.net.requests(woken, "INVITE")) == 1  # the held call, to its new binding
    # Another user's, read the same way, is shed after the parse.
    other = Flow("UDP", US, ("10.0.9.9", 41000))
    rig.engine.on_message(register_bytes("alice", other, "a").replace(b"\r\n", b"\n"), other)
    await settle()
    assert rig.net.statuses(other) == [503]


async def test_the_register_of_a_user_with_no_held_call_is_still_shed() -> None:
    """The exemption is the held call's: once it is over and forgotten, the same user's
    REGISTER is shed again."""
    rig = Rig()
    await rig.register("iphone")
    invite = await rig.call()
    await rig.cancel(invite)
    await rig.clock.advance(60)  # past the cancel grace: the call is forgotten
    assert not rig.calls.wake_awaited(AOR)
    overload(rig)
    woken = Flow("UDP", US, ("10.0.1.1", 40998))
    rig.engine.on_message(register_bytes("bob", woken, "reg-late"), woken)
    await settle()
    assert rig.net.statuses(woken) == [503]
    assert rig.net.requests(woken) == []
