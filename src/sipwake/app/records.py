"""What the call runner (app/calls.py) keeps per call, and what of it is stored.

``Running`` is one call and what the runner needs to act for it; ``snapshot`` the part of a
held call another process needs to resume it (app/resume.py), as the store keeps it
(``HeldEntry``), and ``restored`` what of it is read back; ``call_rules`` what every call
runs by, from the configuration.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sipwake.app.engine import Incoming
from sipwake.app.tasks import Tasks
from sipwake.config import Config
from sipwake.policy.bindings import Binding
from sipwake.policy.call import Call, CallRules, Respond, invite_key, resume_state
from sipwake.policy.parking import DeviceState
from sipwake.storage.cluster import HeldEntry
from sipwake.transport.flow import Flow


def call_rules(config: Config) -> CallRules:
    """What every call runs by, from [push], [sip] and [proxy] (a reload replaces it)."""
    push = config.push
    retry = (("Retry-After", str(push.retry_after)),) if push.retry_after else ()
    return CallRules(
        hold_window=push.hold_window,
        cancel_grace=push.cancel_grace,
        live_timeout=push.live_timeout,
        send_180=push.send_180,
        unanswered=Respond(push.unanswered_status, retry),
        timer_c=config.sip.timer_c,
        decline_ends_all=config.proxy.decline_ends_all,
    )


@dataclass(eq=False, slots=True)
class Running:
    """One call and what the runner needs to act for it."""

    call: Call
    incoming: Incoming  # the caller's server transaction
    lhash: str  # loop-detection hash for our Via branches (§16.6 step 8)
    record_route: bool = True
    bindings: dict[str, Binding] = field(default_factory=dict)  # device -> its binding
    flows: dict[str, Flow] = field(default_factory=dict)  # branch key -> flow
    tasks: Tasks = field(default_factory=Tasks)  # cancelled when the call ends
    wall_deadline: float = 0.0  # end of the hold window, wall clock (payload, links)
    indexed: bool = False  # in by_id / by_aor (it was held)
    done: bool = False  # forgotten
    retired: bool = False  # out of by_server/by_client (Calls._retire)
    created: float = 0.0  # wall clock when first held (a binding registered since woke)
    invite: bytes = b""  # the INVITE as held, stored with the call (issue 11 step 3)
    saved: tuple[tuple[str, str], ...] | None = None  # device states last stored


def snapshot(rec: Running, node_id: str) -> HeldEntry | None:
    """The held call as far as another process needs it to resume it: the INVITE, the
    caller's flow, the devices' states, the hold window. Written when it is held and when
    a device stops or starts being awaited; dropped when the caller has its answer. None
    when nothing changed since the last one; otherwise the record notes these states as
    stored (``saved``)."""
    states = tuple((d, resume_state(s).value) for d, s in rec.call.devices.states.items())
    if states == rec.saved:
        return None
    rec.saved = states
    call, flow = rec.call, rec.incoming.flow
    return HeldEntry(
        call.call_id,
        call.aor,
        node_id,
        rec.wall_deadline,
        tuple(rec.bindings),
        invite_key=invite_key(rec.incoming.request),
        invite=rec.invite,
        caller=(flow.transport, *flow.local, *flow.remote),
        states=states,
        created=rec.created,
    )


def restored(
    entry: HeldEntry, bindings: dict[str, Binding]
) -> tuple[dict[str, DeviceState], list[str]]:
    """What ``snapshot`` stored, read back for a takeover: each device's state (one
    written by a newer version, unknown here, is left out), and the devices among
    ``bindings`` (the callee's now) that registered after the call was held: they woke
    meanwhile."""
    states: dict[str, DeviceState] = {}
    for device, value in entry.states:
        try:
            states[device] = DeviceState(value)
        except ValueError:
            continue
    woke = [d for d, b in bindings.items() if d in states and b.registered_at > entry.created]
    return states, woke


def held_view(rec: Running) -> dict[str, object]:
    """One held call as the admin API lists it."""
    call = rec.call
    return {
        "call_id": call.call_id,
        "aor": call.aor,
        "state": call.state.value,
        "deadline": rec.wall_deadline,
        "devices": {d: s.value for d, s in call.devices.states.items()},
    }
