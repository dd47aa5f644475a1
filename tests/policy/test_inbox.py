"""The pure inbox rules (policy/inbox.py): order, dedup, expiry, quota, per device."""

from __future__ import annotations

import dataclasses

import pytest

from sipwake.policy import inbox
from sipwake.policy.inbox import StoredMessage
from sipwake.sip.codec import parse_message
from sipwake.sip.message import Request

NOW = 1000.0
A, B = "dev-a", "dev-b"


def msg(n: int, *devices: str, ttl: float = 60) -> StoredMessage:
    return StoredMessage(
        f"m{n}", f"call{n}", 1, "sip:x@y", "text/plain", NOW, NOW + ttl, devices or (A,)
    )


def test_add_keeps_arrival_order_and_reports_new_devices() -> None:
    box: inbox.Inbox = ()
    for n in (3, 1, 2):
        done = inbox.add(box, msg(n, A, B), NOW, 10)
        assert not done.duplicate and done.new_devices == (A, B) and done.dropped == ()
        box = done.inbox
    assert [m.id for m in inbox.pending(box, A, NOW)] == ["m3", "m1", "m2"]


def test_duplicate_merges_devices_without_a_second_copy() -> None:
    box = inbox.add((), msg(1, A), NOW, 10).inbox
    done = inbox.add(box, dataclasses.replace(msg(1, A, B), id="x"), NOW, 10)
    assert done.duplicate and done.new_devices == (B,)
    assert done.inbox == (dataclasses.replace(msg(1), devices=(A, B)),)
    same = inbox.add(done.inbox, msg(1, B), NOW, 10)
    assert same.duplicate and same.new_devices == () and same.inbox == done.inbox


def test_quota_drops_the_oldest() -> None:
    box: inbox.Inbox = ()
    for n in range(1, 4):
        box = inbox.add(box, msg(n), NOW, 2).inbox
    assert [m.id for m in box] == ["m2", "m3"]
    done = inbox.add(box, msg(9), NOW, 2)
    assert [m.id for m in done.dropped] == ["m2"]
    with pytest.raises(ValueError):
        inbox.add(box, msg(5), NOW, 0)


def test_expired_are_never_pending_and_removed_by_a_change() -> None:
    box = inbox.add(inbox.add((), msg(1, ttl=5), NOW, 10).inbox, msg(2, ttl=50), NOW, 10).inbox
    assert [m.id for m in inbox.pending(box, A, NOW + 5)] == ["m2"]  # expires_at == now
    assert [m.id for m in inbox.pending(box, A, NOW + 4.9)] == ["m1", "m2"]
    done = inbox.add(box, msg(3), NOW + 5, 10)
    assert [m.id for m in done.expired] == ["m1"]
    assert [m.id for m in done.inbox] == ["m2", "m3"]
    # Expired messages do not count against the quota.
    full = inbox.add(box, msg(3), NOW + 5, 2)
    assert full.dropped == () and len(full.inbox) == 2


def test_settle_is_per_device_and_removes_when_nobody_waits() -> None:
    box = inbox.add((), msg(1, A, B), NOW, 10).inbox
    done = inbox.settle(box, "m1", A, NOW)
    assert done.settled and inbox.pending(done.inbox, A, NOW) == []
    assert [m.id for m in inbox.pending(done.inbox, B, NOW)] == ["m1"]
    assert not inbox.settle(done.inbox, "m1", A, NOW).settled
    assert not inbox.settle(done.inbox, "nope", B, NOW).settled
    assert inbox.settle(done.inbox, "m1", B, NOW).inbox == ()


def test_expiry_bounds() -> None:
    assert inbox.next_expiry(()) is None and inbox.last_expiry(()) is None
    box = (msg(1, ttl=5), msg(2, ttl=50))
    assert inbox.next_expiry(box) == NOW + 5 and inbox.last_expiry(box) == NOW + 50


@pytest.mark.parametrize(
    ("status", "result"),
    [(200, "delivered"), (202, "delivered"), (408, "retry"), (500, "retry"), (503, "retry"),
     (302, "refused"), (404, "refused"), (415, "refused"), (480, "refused"), (603, "refused")],
)  # fmt: skip
def test_delivery_result(status: int, result: str) -> None:
    assert inbox.delivery_result(status) == result


def test_delivery_copy_is_ours_alone_and_keeps_the_rest() -> None:
    raw = (
        b"MESSAGE sip:bob@example.com SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP proxy.example.org;branch=z9hG4bKp1\r\n"
        b"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa1;rport=5060\r\n"
        b"Max-Forwards: 69\r\nRoute: <sip:old.example.com;lr>\r\n"
        b"Record-Route: <sip:rr.example.com;lr>\r\n"
        b"From: <sip:alice@example.com>;tag=a\r\nTo: <sip:bob@example.com>\r\n"
        b"Call-ID: c1@alice\r\nCSeq: 7 MESSAGE\r\nContent-Type: message/cpim\r\n"
        b"X-Custom: kept\r\nContent-Length: 5\r\n\r\nhello"
    )
    stored = parse_message(raw)
    assert isinstance(stored, Request)
    via = "SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bKours"
    out = inbox.delivery_copy(
        stored, "sip:bob@192.0.2.9:5555;transport=tcp", via, ("<sip:edge;lr>",)
    )
    assert out.uri == "sip:bob@192.0.2.9:5555;transport=tcp"
    assert out.headers.get_all("via") == [via]
    assert out.headers.get_all("route") == ["<sip:edge;lr>"]
    assert "record-route" not in out.headers
    assert out.max_forwards == 70
    for name, value in (("call-id", "c1@alice"), ("cseq", "7 MESSAGE"),
                        ("content-type", "message/cpim"), ("x-custom", "kept")):  # fmt: skip
        assert out.headers.get(name) == value
    assert out.body == b"hello"
    assert stored.headers.count("via") == 2  # the stored copy is untouched
