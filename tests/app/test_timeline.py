"""Per-call timelines, without sockets: offsets from the INVITE, the ring of finished calls,
and the one INFO line (text and JSON) logged under the INVITE's Call-ID at the end."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from sipwake.app.timeline import Timelines
from sipwake.logs import call_context, setup_logging


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    setup_logging("info", "json", stream=stream)
    yield stream
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def test_offsets_summary_and_json_line(captured: io.StringIO) -> None:
    timelines = Timelines(size=10, wall=lambda: 1_700_000_000.0)
    t = timelines.start("uuid-1", at=100.0, aor="sip:bob@example.com", sip_call_id="inv@host")
    t.add(100.0, "invite", detail="1 device(s)")
    t.add(100.002, "provisional", detail="110")
    t.add(100.003, "push_sent", "dev-a", "apns")
    t.add(100.030, "push_answer", "dev-a", "delivered in 27.0 ms")
    t.add(100.850, "wake_register", "dev-a")
    t.add(100.851, "branch", "dev-a", "TCP")
    t.add(101.2, "response", "dev-a", "200")
    t.status = 200
    t.answered_at = 101.2
    # The end may run in another request's context (the wake REGISTER's): the line
    # still carries the INVITE's Call-ID.
    with call_context("register@phone"):
        timelines.finish("uuid-1", 101.3, "answered")
    [line] = captured.getvalue().splitlines()
    record = json.loads(line)
    assert record["level"] == "INFO"
    assert record["call_id"] == "inv@host"
    assert record["msg"].startswith("call uuid-1 sip:bob@example.com 200 in 1200.0 ms: +0.0 invite")
    assert "+850.0 wake_register [dev-a]" in record["msg"]
    timeline = record["timeline"]
    assert [e["t_ms"] for e in timeline["events"]] == [0.0, 2.0, 3.0, 30.0, 850.0, 851.0, 1200.0]
    assert timeline["devices"] == [{"device": "dev-a"}]
    assert timeline["duration_ms"] == 1200.0  # what the caller waited
    assert timeline["ended"] is True
    assert timelines.get("uuid-1") == timeline
    assert timelines.recent()[0]["status"] == 200


def test_ring_keeps_the_newest_and_lists_live_calls_first() -> None:
    timelines = Timelines(size=2)
    for i in range(4):
        timelines.start(f"c{i}", at=float(i), aor="sip:a@x", sip_call_id=f"s{i}")
        timelines.finish(f"c{i}", float(i) + 0.5, "answered")
    timelines.start("live", at=9.0, aor="sip:a@x", sip_call_id="s9")
    assert [r["call_id"] for r in timelines.recent()] == ["live", "c3", "c2"]
    assert timelines.get("c0") is None
    assert timelines.get("live") is not None
    timelines.finish("unknown", 1.0, "x")  # nothing to do, no error


class WakeSink:
    def __init__(self) -> None:
        self.seen: list[tuple[float | None, float | None]] = []

    def wake(self, *, push_to_register: float | None, invite_to_delivery: float | None) -> None:
        self.seen.append((push_to_register, invite_to_delivery))


def test_events_of_two_devices_one_woken_one_declining() -> None:
    from sipwake.app import events as ev

    timelines = Timelines()
    sink = WakeSink()
    timelines.metrics = sink
    for event in (
        ev.CallStarted("u", 10.0, "sip:bob@x", "inv@x", 9.999, 2),
        ev.ProvisionalSent("u", 10.001, 110),
        ev.PushSent("u", 10.002, "a", "apns"),
        ev.PushSent("u", 10.002, "b", "fcm"),
        ev.PushAnswered("u", 10.040, "a", "delivered"),
        ev.PushAnswered("u", 10.050, "b", "token_rejected", "UNREGISTERED"),
        ev.WakeRegister("u", 10.800, "a", False),
        ev.BranchOpened("u", 10.801, "a", "TLS"),
        ev.Declined("u", 10.900, "a", 603),
        ev.FinalAnswer("u", 10.901, 603),
        ev.CallEnded("u", 11.5, "declined"),
    ):
        timelines.observe(event)
    call = timelines.get("u")
    assert call is not None
    assert call["status"] == 603 and call["state"] == "declined" and call["ended"]
    assert call["duration_ms"] == 902.0
    answers = [e["detail"] for e in call["events"] if e["event"] == "push_answer"]
    assert answers == ["delivered in 38.0 ms", "token_rejected (UNREGISTERED) in 48.0 ms"]
    assert [e["event"] for e in call["events"] if e["device"] == "a"] == [
        "push_sent", "push_answer", "wake_register", "branch", "decline",
    ]  # fmt: skip
    assert call["devices"] == [
        {"device": "a", "provider": "apns", "transport": "TLS"},
        {"device": "b", "provider": "fcm"},
    ]
    # Only the woken device's branch gives wake latencies: push -> REGISTER, INVITE -> out.
    [(push_to_register, invite_to_delivery)] = sink.seen
    assert round(push_to_register or 0, 3) == 0.798
    assert round(invite_to_delivery or 0, 3) == 0.802
