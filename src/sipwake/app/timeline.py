"""Per-call wake-up timelines: every event of a call with its offset from the INVITE.

A ``Timelines`` is fed the call's events (app/events.py, through ``observe``), keeps the calls
in progress and the last ``size`` finished ones (``api.timeline_size``), and at each call's
end writes one INFO line summarising it, under the INVITE's Call-ID (with
``log_format = "json"`` the line carries the whole timeline as a ``timeline`` object). The
admin API serves ``get``/``recent``; the console draws them as a waterfall.

Offsets are taken from the events' own ``at`` (the engine's monotonic clock), so they are
exact whatever the log's timestamps say; ``started`` is wall-clock for humans.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from sipwake.app import events as ev

log = logging.getLogger("sipwake.timeline")

DEFAULT_SIZE = 1000


class Entry:
    """One event of a call's timeline. A plain class, not a dataclass: several are made per
    call, and mypyc compiles a hand-written ``__init__`` where a dataclass's stays
    interpreted (sip/flows.py Flow)."""

    __slots__ = ("at", "detail", "device", "event")

    at: float  # monotonic seconds
    event: str  # "invite", "push_sent", "push_answer", "provisional", "wake_register", ...
    device: str
    detail: str

    def __init__(self, at: float, event: str, device: str = "", detail: str = "") -> None:
        self.at = at
        self.event = event
        self.device = device
        self.detail = detail

    def _key(self) -> tuple[object, ...]:
        return (self.at, self.event, self.device, self.detail)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Entry):
            return NotImplemented
        return self._key() == other._key()

    __hash__ = None  # type: ignore[assignment]  # mutable, as the dataclass was

    def __repr__(self) -> str:
        return (
            f"Entry(at={self.at!r}, event={self.event!r}, device={self.device!r}, "
            f"detail={self.detail!r})"
        )


@dataclass(slots=True)
class CallTimeline:
    call_id: str  # the call's UUID (the one in the push payload)
    sip_call_id: str
    aor: str
    t0: float  # monotonic: the INVITE's arrival
    started: float  # wall clock of the same instant
    entries: list[Entry] = field(default_factory=list)
    devices: dict[str, dict[str, str]] = field(default_factory=dict)  # device -> facts
    status: int = 0  # final answer to the caller
    answered_at: float | None = None  # when the caller got it
    state: str = "held"
    ended_at: float | None = None  # nothing more will happen (late devices' grace is over)

    @property
    def duration_ms(self) -> float | None:
        """INVITE in to final answer out: what the caller waited."""
        end = self.answered_at if self.answered_at is not None else self.ended_at
        return self.offset_ms(end) if end is not None else None

    def add(self, at: float, event: str, device: str = "", detail: str = "") -> None:
        self.entries.append(Entry(at, event, device, detail))
        if device:
            self.devices.setdefault(device, {})

    def offset_ms(self, at: float) -> float:
        return round((at - self.t0) * 1000, 1)

    def as_dict(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "sip_call_id": self.sip_call_id,
            "aor": self.aor,
            "started": self.started,
            "status": self.status or None,
            "state": self.state,
            "duration_ms": self.duration_ms,
            "ended": self.ended_at is not None,
            "devices": [{"device": d, **facts} for d, facts in self.devices.items()],
            "events": [
                {
                    "t_ms": self.offset_ms(e.at),
                    "event": e.event,
                    "device": e.device,
                    "detail": e.detail,
                }
                for e in self.entries
            ],
        }

    def row(self) -> dict[str, Any]:
        """The short form for lists."""
        return {
            "call_id": self.call_id,
            "sip_call_id": self.sip_call_id,
            "aor": self.aor,
            "started": self.started,
            "status": self.status or None,
            "state": self.state,
            "devices": len(self.devices),
            "duration_ms": self.duration_ms,
            "ended": self.ended_at is not None,
        }

    def summary(self) -> str:
        """One line: ``call <uuid> sip:bob@x 200 in 87.0 ms: +0.0 invite; +1.2 ...``."""
        steps = "; ".join(
            f"+{self.offset_ms(e.at)} {e.event}"
            + (f" [{_short(e.device)}]" if e.device else "")
            + (f" {e.detail}" if e.detail else "")
            for e in self.entries
        )
        took = f" in {self.duration_ms} ms" if self.duration_ms is not None else ""
        return f"call {self.call_id} {self.aor} {self.status or self.state}{took}: {steps}"


class WakeMetrics(Protocol):
    def wake(self, *, push_to_register: float | None, invite_to_delivery: float | None) -> None: ...


def _last(t: CallTimeline, event: str, device: str) -> Entry | None:
    for e in reversed(t.entries):
        if e.event == event and e.device == device:
            return e
    return None


def _short(device: str) -> str:
    """Device keys can be 100+ characters (a push token): keep logs readable."""
    return device if len(device) <= 48 else f"{device[:45]}..."


class Timelines:
    """Calls in progress and a ring of finished ones, newest last."""

    def __init__(
        self,
        size: int = DEFAULT_SIZE,
        *,
        wall: Callable[[], float] = time.time,
        on_finished: Callable[[CallTimeline], None] | None = None,
    ) -> None:
        self.size = size
        self.wall = wall
        self.live: dict[str, CallTimeline] = {}
        self.done: OrderedDict[str, CallTimeline] = OrderedDict()
        self.on_finished = on_finished
        self.metrics: WakeMetrics | None = None  # wake latencies, fed from the events

    def start(self, call_id: str, *, at: float, aor: str, sip_call_id: str) -> CallTimeline:
        # The wall clock at ``at`` (``at`` may lie slightly in the past: the INVITE's
        # arrival, recorded before the callee was looked up).
        now_mono = time.monotonic()
        started = self.wall() - max(0.0, now_mono - at)
        timeline = CallTimeline(call_id, sip_call_id, aor, at, started)
        self.live[call_id] = timeline
        return timeline

    def find(self, call_id: str) -> CallTimeline | None:
        return self.live.get(call_id) or self.done.get(call_id)

    def finish(self, call_id: str, at: float, state: str) -> None:
        timeline = self.live.pop(call_id, None)
        if timeline is None:
            return
        timeline.ended_at = at
        timeline.state = state
        self.done[call_id] = timeline
        while len(self.done) > self.size:
            self.done.popitem(last=False)
        # Under the INVITE's Call-ID, whatever context the ending runs in (a timer, the
        # wake REGISTER's handler...).
        if log.isEnabledFor(logging.INFO):  # the summary costs more than the call's routing
            log.info(
                "%s",
                timeline.summary(),
                extra={"call_id": timeline.sip_call_id, "timeline": timeline.as_dict()},
            )
        if self.on_finished is not None:
            self.on_finished(timeline)

    def observe(self, event: ev.CallEvent) -> None:
        """The observer for app/calls.py's events (``calls.observers.add(...)``)."""
        if isinstance(event, ev.CallStarted):
            started = self.start(
                event.call_id, at=event.received_at, aor=event.aor, sip_call_id=event.sip_call_id
            )
            started.add(event.received_at, "invite", detail=f"{event.devices} device(s)")
            return
        t = self.find(event.call_id)
        if t is None:
            return
        if isinstance(event, ev.PushSent):
            t.devices.setdefault(event.device, {})["provider"] = event.provider
            t.add(event.at, "push_sent", event.device, event.provider)
        elif isinstance(event, ev.PushAnswered):
            sent = _last(t, "push_sent", event.device)
            took = f" in {t.offset_ms(event.at) - t.offset_ms(sent.at):.1f} ms" if sent else ""
            why = f" ({event.reason})" if event.reason else ""
            t.add(event.at, "push_answer", event.device, event.outcome + why + took)
        elif isinstance(event, ev.ProvisionalSent):
            t.add(event.at, "provisional", detail=str(event.status))
        elif isinstance(event, ev.WakeRegister):
            t.add(
                event.at,
                "wake_register",
                event.device,
                "after the call ended" if event.late else "",
            )
        elif isinstance(event, ev.BranchOpened):
            t.devices.setdefault(event.device, {})["transport"] = event.transport
            t.add(event.at, "branch", event.device, event.transport)
            self._wake_latency(t, event.device, event.at)
        elif isinstance(event, ev.BranchResponse):
            t.add(event.at, "response", event.device, str(event.status))
        elif isinstance(event, ev.Declined):
            t.add(event.at, "decline", event.device, str(event.status))
        elif isinstance(event, ev.CancelSent):
            t.add(event.at, "cancel", event.device, event.reason)
        elif isinstance(event, ev.FinalAnswer):
            t.status = event.status
            t.answered_at = event.at
            t.add(event.at, "final", detail=str(event.status))
        elif isinstance(event, ev.CallEnded):
            self.finish(event.call_id, event.at, event.state)

    def _wake_latency(self, t: CallTimeline, device: str, delivered: float) -> None:
        """A woken device's branch: push sent -> wake REGISTER, INVITE in -> delivered."""
        wake = _last(t, "wake_register", device)
        if wake is None or self.metrics is None:
            return  # a live device, not woken by us
        sent = _last(t, "push_sent", device)
        self.metrics.wake(
            push_to_register=wake.at - sent.at if sent is not None else None,
            invite_to_delivery=delivered - t.t0,
        )

    def get(self, call_id: str) -> dict[str, Any] | None:
        found = self.find(call_id)
        return found.as_dict() if found is not None else None

    def recent(self, limit: int = 100) -> list[dict[str, Any]]:
        """Calls in progress, then finished ones, newest first."""
        rows = [t.row() for t in reversed(self.live.values())]
        rows += [t.row() for t in reversed(self.done.values())]
        return rows[:limit]
