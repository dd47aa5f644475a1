"""The call runner: the one table of calls in progress, and the hands of ``policy.call.Call``.

Every request the proxy forwards is a ``Call`` here, from a BYE with one branch to an
INVITE held for sleeping devices. The runner feeds each call its inputs (transaction
events from the engine, push results, registrations from the registrar or the cluster
bus, decline links, the caller's CANCEL, the clock) and carries out the actions it
answers with: respond upstream, forward or CANCEL a branch (app/proxy.py), push a device
(app/wake.py), open a branch for a device that woke, deliver an ended call to a late
device only to CANCEL it, forget the call.

Timers: the runner is a timer source of the engine (``get_timer``/``handle_timer``): one
heap of the calls' next deadlines, fired through the engine's single ``call_at``, on the
engine's monotonic clock. What happens is told to the observers (app/events.py).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from sipwake.app import events as ev
from sipwake.app.engine import Engine, Incoming
from sipwake.app.ports import Bus, LocalBus, MetricsPort, NullMetrics, call_result
from sipwake.app.proxy import Proxy
from sipwake.app.records import Running, held_view, restored, snapshot
from sipwake.app.targets import Flows, Target, binding_target
from sipwake.app.tasks import Tasks, logged
from sipwake.app.wake import Pusher, family
from sipwake.logs import reset_call_id, set_call_id
from sipwake.policy.bindings import Binding
from sipwake.policy.call import (
    Call,
    CallAction,
    CallRules,
    CancelBranch,
    DeliverAndCancel,
    Ended,
    Forget,
    Forward,
    OpenBranch,
    Respond,
    SendPush,
)
from sipwake.policy.parking import HeldState
from sipwake.policy.proxying import loop_hash
from sipwake.sip.deadlines import Deadlines
from sipwake.sip.message import Response
from sipwake.storage.cluster import HeldEntry
from sipwake.transport.flow import Flow

log = logging.getLogger("sipwake.calls")

# RFC 3261 §20.43: 399 is the miscellaneous warning; the agent is a pseudonym.
PUSH_REFUSED = ("Warning", '399 sipwake "Push budget exceeded"')
Admit = Callable[[list[Binding]], list[Binding]]


class Calls:
    def __init__(
        self,
        engine: Engine,
        proxy: Proxy,
        flows: Flows,
        rules: CallRules,
        *,
        pusher: Pusher | None = None,
        target_of: Callable[[Binding], Target] = binding_target,
        bus: Bus | None = None,
        missed_call_alert: bool = False,
    ) -> None:
        self.engine = engine
        self.proxy = proxy
        self.flows = flows
        self.rules = rules
        self.pusher = pusher
        self.target_of = target_of
        self.bus: Bus = bus if bus is not None else LocalBus()
        self.missed_call_alert = missed_call_alert
        self.by_server: dict[str, Running] = {}
        self.by_client: dict[str, Running] = {}
        # Branches of retired INVITEs (_retire): client txn -> the caller's server txn, flow.
        self.late: dict[str, tuple[str, Flow]] = {}
        self.by_id: dict[str, Running] = {}  # held calls, by call UUID
        self.by_aor: dict[str, list[Running]] = {}  # held calls, by callee
        self._deadlines: Deadlines[Running] = Deadlines()
        self._tasks = Tasks()
        self.observers = ev.Observers()
        self.draining = False  # SIGTERM: no new INVITE is taken (server.Server.drain)
        self._idle: asyncio.Event | None = None
        self.metrics: MetricsPort = NullMetrics()
        self.stats: dict[str, int] = {
            "held": 0, "joined": 0, "late_deliveries": 0, "declined": 0, "silent_pushed": 0,
            "resumed": 0,
        }  # fmt: skip

    def held_count(self) -> int:
        """Calls held here now (overload shedding bounds them)."""
        return len(self.by_id)

    def wake_awaited(self, aor: str) -> bool:
        """Is a call held here for this AoR, so that its REGISTER is a device waking for
        it (the engine never sheds that REGISTER)? Until the call is forgotten: while it
        waits, and through the cancel grace, when a device woken for it still gets the
        INVITE and its CANCEL (policy/parking.py)."""
        return aor in self.by_aor

    # -- the timer source -------------------------------------------------------------------
    def get_timer(self) -> float | None:
        return self._deadlines.earliest()

    def handle_timer(self, now: float) -> None:
        for rec in self._deadlines.pop_due(now):
            try:
                self._apply(rec, rec.call.timer(now))
            except Exception:
                log.exception("call %s: timer failed", rec.call.call_id)

    # -- starting calls ---------------------------------------------------------------------
    async def invite(
        self,
        incoming: Incoming,
        lhash: str,
        aor: str,
        bindings: list[Binding],
        admit: Admit | None = None,
    ) -> None:
        """An INVITE for one of our users with these bindings: push the sleeping devices
        first (every millisecond before the push is one the caller waits), then fork to
        the live ones in parallel (§16.5, §16.6). ``admit`` picks the sleeping bindings
        the push budget lets us push (policy/pushbudget.py); the others are left out."""
        now = self.engine.now()
        call = Call.new(str(uuid.uuid4()), aor, self.rules)
        rec = self._start(call, incoming, lhash)
        pusher = self.pusher
        asleep = [b for b in bindings if pusher is not None and pusher.sleeping(b)]
        live = [b for b in bindings if b not in asleep]
        sleeping = admit(asleep) if admit is not None and asleep else asleep
        if len(sleeping) < len(asleep):
            # Refused a push: if nothing else takes the call, the caller is told why.
            call.fork.unanswered = Respond(480, (PUSH_REFUSED,))
        for b in bindings:
            if b.push is not None:
                rec.bindings.setdefault(b.device_key, b)
        if self.observers:
            self.observers.emit(
                ev.CallStarted(
                    call.call_id,
                    now,
                    aor,
                    incoming.request.call_id,
                    incoming.received_at,
                    len(bindings),
                )
            )
        pushable = [b.device_key for b in live if b.push is not None and pusher is not None]
        self._apply(rec, call.start(now, [b.device_key for b in sleeping], pushable))
        await self._open_all(rec, [self.target_of(b) for b in live])

    async def fork(self, incoming: Incoming, lhash: str, targets: list[Target]) -> None:
        """Any other request for one of our users: to every target in parallel."""
        call = Call.new("", "", self.rules, is_invite=incoming.request.method == "INVITE")
        await self._open_all(self._start(call, incoming, lhash), targets)

    async def relay(self, incoming: Incoming, lhash: str, target: Target) -> bool:
        """Forward to one target resolved from its URI; False (nothing sent) if it cannot
        be reached."""
        call = Call.new("", "", self.rules, is_invite=incoming.request.method == "INVITE")
        rec = self._start(call, incoming, lhash)
        if await self._open(rec, target, settle=False):
            return True
        self._drop_server(rec)
        return False

    def forward(
        self, incoming: Incoming, lhash: str, target: Target, flow: Flow, record_route: bool
    ) -> bool:
        """Forward over a known flow now (in-dialog requests, a peer node's request for a
        connection we own); False if the branch could not be sent."""
        call = Call.new("", "", self.rules, is_invite=incoming.request.method == "INVITE")
        rec = self._start(call, incoming, lhash)
        rec.record_route = record_route
        if self._send_branch(rec, target, flow):
            return True
        self._drop_server(rec)
        return False

    def resume(
        self,
        incoming: Incoming,
        entry: HeldEntry,
        bindings: list[Binding],
        *,
        reachable: bool = True,
    ) -> None:
        """Take over a call another process held (app/resume.py): ``incoming`` is the new
        server transaction for its INVITE, ``bindings`` the callee's now. Same call UUID,
        no second push; a device whose binding was registered after the call was held
        woke meanwhile and gets its branch now. A caller that cannot be ``reachable``
        (its connection died with that process) ends the call: devices that wake get
        the INVITE and its CANCEL."""
        now, wall = self.engine.now(), self.engine.wall()
        call = Call.new(entry.call_id, entry.aor, self.rules)
        rec = self._start(call, incoming, loop_hash(incoming.request))
        rec.created = entry.created
        for b in bindings:
            if b.push is not None:
                rec.bindings.setdefault(b.device_key, b)
        states, woke = restored(entry, rec.bindings)
        hold_end = now + (entry.deadline - wall)
        if reachable:
            actions = call.resume(now, hold_end, states, woke)
        else:
            actions = call.resume(now, hold_end, states)
            actions += call.abandon(now, 480, "Caller unreachable")
            for device in woke:
                actions += call.registered(device, now)
        self.stats["resumed"] += 1
        log.info("call %s resumed", call.call_id)
        self._hold(rec)
        self._apply(rec, actions)

    def _start(self, call: Call, incoming: Incoming, lhash: str) -> Running:
        rec = Running(call, incoming, lhash)
        if incoming.txn_id is not None:
            self.by_server[incoming.txn_id] = rec
        return rec

    async def _open_all(self, rec: Running, targets: list[Target]) -> None:
        call = rec.call
        for t in targets:
            call.will_open(t.device)  # awaited until its branch is out (or failed)
        for t in targets:
            await self._open(rec, t)
        self._apply(rec, call.settle(self.engine.now()))

    # -- branches ---------------------------------------------------------------------------
    async def _open(self, rec: Running, target: Target, *, settle: bool = True) -> bool:
        """Open the branch towards ``target``; False if the device has one already, the
        call is over, or it cannot be reached (then the call is told, unless ``settle``
        is False: the caller answers it itself)."""
        call = rec.call
        ok = False
        if call.can_open(target.device):
            call.will_open(target.device)
            try:
                flow = await self.flows.target_flow(target)
            except (OSError, ValueError) as exc:
                log.info("target %s unreachable: %s", target.uri, exc)
            else:
                ok = self._send_branch(rec, target, flow)
        if not ok:
            call.opening.discard(target.device)
            if settle:
                self._apply(rec, call.settle(self.engine.now()))
        return ok

    def _send_branch(self, rec: Running, target: Target, flow: Flow) -> bool:
        call = rec.call
        if not call.can_open(target.device):
            return False
        key = self.proxy.send_branch(rec.incoming, rec.lhash, target, flow, rec.record_route)
        now = self.engine.now()
        call.branch_opened(key, target.device, now)
        rec.flows[key] = flow
        self.by_client[key] = rec
        if self.observers and call.call_id:
            self.observers.emit(ev.BranchOpened(call.call_id, now, target.device, flow.transport))
        self._arm(rec)
        return True

    # -- events from the transaction layer --------------------------------------------------
    def on_response(self, response: Response, txn_id: str) -> None:
        rec = self.by_client.get(txn_id)
        if rec is None:
            late = self.late.get(txn_id)
            if late is not None and 200 <= response.status < 300:
                # A 2xx after the call was retired: every 2xx goes upstream (§16.7 step 5).
                response.headers.pop_first_value("via")  # ours (§16.7 step 3)
                if "via" in response.headers:
                    self.engine.relay_late_2xx(late[0], late[1], response)
            return
        response.headers.pop_first_value("via")  # ours (§16.7 step 3)
        call = rec.call
        if call.ghost and 200 <= response.status < 300:
            # The device answered a call that had already ended (its 200 crossed our
            # CANCEL): complete and end that dialog ourselves so it does not hang.
            flow = rec.flows.get(txn_id)
            if flow is not None:
                self.proxy.hang_up(flow, response)
            return
        if "via" not in response.headers:
            return  # it was addressed to us alone: nothing to relay
        now = self.engine.now()
        if self.observers and call.call_id:
            branch = call.fork.branches.get(txn_id)
            device = branch.device if branch is not None else ""
            self.observers.emit(ev.BranchResponse(call.call_id, now, device, response.status))
        self._apply(rec, call.response(txn_id, response, now))

    def on_timeout(self, txn_id: str) -> None:
        rec = self.by_client.get(txn_id)
        if rec is not None:
            self._apply(rec, rec.call.branch_timeout(txn_id, self.engine.now()))

    def on_terminated(self, txn_id: str) -> None:
        if self.late.pop(txn_id, None) is not None:
            return
        rec = self.by_client.pop(txn_id, None)
        if rec is not None:
            rec.flows.pop(txn_id, None)
            if not rec.flows and rec.call.fork.finished:
                self._drop_server(rec)
            return
        rec = self.by_server.get(txn_id)
        if rec is not None and rec.call.fork.finished and not rec.flows:
            self._drop_server(rec)

    def on_cancel(self, cancel: Incoming, invite_txn_id: str | None) -> bool:
        """A CANCEL from the caller (§16.10). False when it matches no call of ours."""
        rec = self.by_server.get(invite_txn_id) if invite_txn_id else None
        if rec is None:
            if invite_txn_id is None:
                return False
            # Its INVITE transaction lives on but no call runs for it (answered, and
            # retired or never forwarded): the CANCEL gets its 200 and has no effect
            # (§9.2: answered 200 whenever it matched a transaction; §16.10).
            cancel.respond(200)
            return True
        cancel.respond(200)
        self._apply(rec, rec.call.cancel(self.engine.now()))
        return True

    # -- events from the registrar, the bus and the API --------------------------------------
    def on_registered(self, aor: str, added: tuple[Binding, ...]) -> None:
        """Registrar hook (and the bus's, for registrations on other nodes)."""
        recs = self.by_aor.get(aor)
        if not recs:
            return
        now = self.engine.now()
        for rec in list(recs):
            call = rec.call
            for b in added:
                device = b.device_key
                actions = call.registered(device, now)
                if not actions:
                    continue
                rec.bindings[device] = b
                if self.observers:
                    self.observers.emit(ev.WakeRegister(call.call_id, now, device, call.ended))
                self._apply(rec, actions)

    def holds(self, call_id: str) -> bool:
        """Is the call with this UUID held here?"""
        return call_id in self.by_id

    def declined(self, call_id: str, device: str, status: int) -> bool:
        """The device declined the held call from its push (app/declines.py, the token
        checked): False if no such call waits for that device here."""
        rec = self.by_id.get(call_id)
        actions = rec.call.declined(device, status, self.engine.now()) if rec else None
        if rec is None or actions is None:
            return False
        self.stats["declined"] += 1
        if self.observers:
            self.observers.emit(ev.Declined(call_id, self.engine.now(), device, status))
        self._apply(rec, actions)
        return True

    def cancel(self, call_id: str) -> bool:
        """The caller's CANCEL, answered by another node and passed on over the bus
        (app/resume.py ``cancelled``): as ``on_cancel`` but with no CANCEL to answer."""
        rec = self.by_id.get(call_id)
        if rec is not None:
            self._apply(rec, rec.call.cancel(self.engine.now()))
        return rec is not None

    def held_calls(self) -> list[dict[str, object]]:
        return [held_view(r) for r in self.by_id.values()]

    # -- draining (SIGTERM) ------------------------------------------------------------------
    def waiting_callers(self) -> list[Running]:
        """Calls whose caller has no final answer yet."""
        return [
            r
            for r in self.by_server.values()
            if not r.call.fork.finished and r.incoming.request.method == "INVITE"
        ]

    async def idle(self) -> None:
        """From now on take no new INVITE; return once every caller has its answer."""
        self.draining = True
        if not self.waiting_callers():
            return
        self._idle = asyncio.Event()
        await self._idle.wait()

    def shutdown(self, retry_after: int) -> int:
        """Answer every caller still waiting (503 + Retry-After); how many there were."""
        self.draining = True
        now = self.engine.now()
        recs = self.waiting_callers()
        for rec in recs:
            self._apply(rec, rec.call.shutdown(now, retry_after))
        return len(recs)

    # -- carrying out a call's actions ------------------------------------------------------
    def _apply(self, rec: Running, actions: list[CallAction]) -> None:
        # Whatever runs this (the wake REGISTER's handler, a timer, a branch's answer),
        # the call's log lines and the tasks it starts carry the INVITE's Call-ID.
        token = set_call_id(rec.incoming.request.call_id)
        try:
            self._apply_actions(rec, actions)
        finally:
            reset_call_id(token)

    def _apply_actions(self, rec: Running, actions: list[CallAction]) -> None:
        call = rec.call
        pushing = any(isinstance(a, SendPush) for a in actions)
        later: list[Respond] = []
        for action in actions:
            if isinstance(action, CancelBranch):
                self._cancel_branch(rec, action)
            elif isinstance(action, (Forward, Respond)):
                if call.ghost:
                    continue  # the caller is long gone
                if pushing and isinstance(action, Respond) and action.status < 200:
                    later.append(action)  # see below
                else:
                    self._answer(rec, action)
            elif isinstance(action, SendPush):
                self._push(rec, action.device)
            elif isinstance(action, OpenBranch):
                if not self._join_now(rec, action.device):
                    self._spawn(rec, self._join(rec, action.device))
            elif isinstance(action, DeliverAndCancel):
                self._deliver_and_cancel(rec, action)
            elif isinstance(action, Ended):
                self._ended(rec, action)
            elif isinstance(action, Forget):
                self._forget(rec)
        if later:
            # "110 Push sent" (and a 180) once the push has left: the push's task was
            # spawned above and runs first in the next loop turn, so the caller's answer,
            # and the wake-up of the caller's host it costs, no longer stand before the
            # push's request (bench/README.md, "The push before the row"). The caller got
            # its 100 Trying already (§17.2.1).
            self.engine.loop.call_soon(self._answer_later, rec, later)
        if rec.indexed and not call.ended:
            self._save(rec)
        elif (
            call.ended
            and not (call.ghost or rec.retired)
            and (call.forgotten or not call.held)
            and (rec.incoming.request.method != "INVITE" or not call.fork.active())
        ):
            self._retire(rec)
            return
        self._arm(rec)

    def _answer(self, rec: Running, action: Forward | Respond) -> None:
        call = rec.call
        if isinstance(action, Forward):
            status = action.response.status
            rec.incoming.respond(0, response=action.response)
        else:
            status = action.status
            rec.incoming.respond(status, action.reason, extra=list(action.headers))
        if self.observers and call.call_id:
            self.observers.emit(ev.answered(call.call_id, self.engine.now(), status))

    def _answer_later(self, rec: Running, provisional: list[Respond]) -> None:
        """Provisional answers held back behind a push (``_apply_actions``); none once the
        caller has a final one (a push that failed at once may have ended the call)."""
        for action in provisional:
            if rec.call.ghost or rec.incoming.answered >= 200:
                return
            self._answer(rec, action)

    def _arm(self, rec: Running) -> None:
        when = None if rec.done else rec.call.next_deadline()
        if when is None:
            self._deadlines.cancel(rec)
        elif self._deadlines.get(rec) != when:
            self._deadlines.set(rec, when)
        self.engine.rearm()

    def _cancel_branch(self, rec: Running, action: CancelBranch) -> None:
        flow = rec.flows.get(action.key)
        if flow is None:
            return
        self.proxy.send_cancel(action.key, flow, action.reason)
        call = rec.call
        if self.observers and call.call_id:
            branch = call.fork.branches.get(action.key)
            self.observers.emit(
                ev.CancelSent(
                    call.call_id,
                    self.engine.now(),
                    branch.device if branch is not None else "",
                    action.reason or "",
                )
            )

    def _push(self, rec: Running, device: str) -> None:
        call = rec.call
        b = rec.bindings.get(device)
        pusher = self.pusher
        if b is None or b.push is None or pusher is None:
            return
        # The push's task first, so that its request leaves before the held call's row
        # (``_hold``, a task of the bus) is written: the row is only for a takeover if
        # this process dies (app/resume.py), and waiting for its COMMIT cost every push
        # 280 µs (bench/README.md, "The push before the row"). A process killed in the
        # ~0.1 ms between the two leaves one device woken for a call nobody resumes: it
        # gets no INVITE.
        self._spawn(rec, self._send_push(rec, pusher, b))
        if not rec.indexed:
            self._hold(rec)
        if device in call.pushable and call.branch_of.get(device):
            self.stats["silent_pushed"] += 1
        if self.observers:
            self.observers.emit(
                ev.PushSent(call.call_id, self.engine.now(), device, family(b.push.provider))
            )

    async def _send_push(self, rec: Running, pusher: Pusher, b: Binding) -> None:
        call = rec.call
        invite = rec.incoming.request
        state, outcome, reason = await pusher.push(
            call.call_id, call.aor, invite, b, rec.wall_deadline
        )
        now = self.engine.now()
        if self.observers:
            self.observers.emit(ev.PushAnswered(call.call_id, now, b.device_key, outcome, reason))
        self._apply(rec, call.push_result(b.device_key, state, now))

    def _hold(self, rec: Running) -> None:
        """The call's first push: it is held, findable by its UUID and its callee."""
        call = rec.call
        assert call.hold_end is not None
        rec.indexed = True
        rec.wall_deadline = self.engine.wall() + (call.hold_end - self.engine.now())
        self.by_id[call.call_id] = rec
        self.by_aor.setdefault(call.aor, []).append(rec)
        self.stats["held"] += 1
        self.metrics.held_calls.inc()
        if not rec.created:
            rec.created = self.engine.wall()
        rec.invite = rec.incoming.request.serialise()
        self._save(rec)

    def _save(self, rec: Running) -> None:
        """Store the held call as far as another process needs it to resume it
        (app/resume.py, app/records.py ``snapshot``); the bus writes one call's snapshots
        in order, the last one winning."""
        entry = snapshot(rec, self.bus.node_id)
        if entry is not None:
            remaining = rec.wall_deadline - self.engine.wall()
            self.bus.held(entry, max(1.0, remaining + self.rules.cancel_grace + 1))

    def _join_now(self, rec: Running, device: str) -> bool:
        """Open a woken device's branch in this very turn when its flow needs no wait: the
        INVITE then leaves as soon as the REGISTER is decided, ahead of its 200 (RFC 8599
        §5.6.2, app/register.py), not a loop turn later. False leaves it to ``_join`` (a
        name to resolve, a connection to open, or nothing to open, which ``_open`` tells
        the call)."""
        b = rec.bindings.get(device)
        if b is None or not rec.call.can_open(device):
            return False
        target = self.target_of(b)
        try:
            flow = self.flows.known_flow(target)
        except (OSError, ValueError):
            return False  # _open says why it is unreachable
        if flow is None:
            return False
        rec.call.will_open(device)
        if not self._send_branch(rec, target, flow):
            rec.call.opening.discard(device)
            return False
        self.stats["joined"] += 1
        return True

    async def _join(self, rec: Running, device: str) -> None:
        b = rec.bindings.get(device)
        if b is None:
            return
        log.debug("call %s: %s registered, forwarding the INVITE", rec.call.call_id, device)
        if await self._open(rec, self.target_of(b)):
            self.stats["joined"] += 1

    def _deliver_and_cancel(self, rec: Running, action: DeliverAndCancel) -> None:
        """Send the ended call to a device woken for it and CANCEL it at once with the
        reason; the CANCEL waits for the device's first provisional answer (§9.1)."""
        b = rec.bindings.get(action.device)
        if b is None:
            return
        self.stats["late_deliveries"] += 1
        call = rec.call
        ghost = Call.new(call.call_id, call.aor, self.rules)
        ghost.ghost = True
        grec = Running(ghost, rec.incoming, rec.lhash)

        async def deliver() -> None:
            if await self._open(grec, self.target_of(b)):
                self._apply(grec, ghost.deliver_and_cancel(action.reason))

        self._spawn(rec, deliver(), keep=True)

    def _ended(self, rec: Running, action: Ended) -> None:
        call = rec.call
        if call.ghost:
            return
        if self._idle is not None and not self.waiting_callers():
            self._idle.set()
        if rec.incoming.request.method == "INVITE" and call.call_id:
            self.metrics.call(call_result(action.status))
            if not call.held and self.observers:
                # Nobody was pushed: no late waker can be owed this call, so it ends with
                # its answer (a held call ends when it is forgotten, in ``_forget``).
                # Without this, every such call's timeline stayed "in progress" for good.
                self.observers.emit(ev.CallEnded(call.call_id, self.engine.now(), call.state.value))
        if not call.held:
            rec.incoming.release()  # answered, and no late waker is owed this INVITE
        if not rec.indexed:
            return
        self.metrics.held_calls.dec()
        self.bus.dropped(call.call_id)  # nothing left to resume: the caller has its answer
        rec.tasks.cancel()  # pushes still in flight: the device stays owed INVITE + CANCEL
        pusher = self.pusher
        alert = action.state in (HeldState.EXPIRED, HeldState.CANCELLED)
        if pusher is not None and self.missed_call_alert and alert:
            bindings = list(rec.bindings.values())
            invite = rec.incoming.request
            coro = pusher.missed_call(call.call_id, call.aor, invite, bindings, rec.wall_deadline)
            self._spawn(None, coro)

    def _forget(self, rec: Running) -> None:
        call = rec.call
        rec.done = True
        if self.by_id.get(call.call_id) is rec:
            del self.by_id[call.call_id]
        recs = self.by_aor.get(call.aor)
        if recs is not None:
            recs[:] = [r for r in recs if r is not rec]
            if not recs:
                del self.by_aor[call.aor]
        if self.observers:
            self.observers.emit(ev.CallEnded(call.call_id, self.engine.now(), call.state.value))

    def _retire(self, rec: Running) -> None:
        """An answered call nobody can wake for any more (none was pushed, or it was
        forgotten: policy/call.py ``_forgettable``) whose branches all have their final
        response: out of every index now, not as its transactions end (up to 64*T1 later).
        Nothing more can reach it but what its transactions handle themselves: late
        responses to a non-INVITE and retransmitted non-2xx finals are absorbed by the
        client transactions (§17.1.2.2, §17.1.1.2), retransmitted requests answered by the
        server transaction (§17.2.1-2). Only an INVITE's late 2xx needs us: it must go
        upstream (§16.7 step 5, RFC 6026 §8.5), so ``late`` keeps where to send it -- a
        tuple instead of the call's record (~20 objects for every full pass of the cyclic
        GC to walk, per call, for 32 s)."""
        rec.retired = True
        by_client = self.by_client
        incoming = rec.incoming
        if rec.call.held:
            incoming.release()  # kept for late wakers until now (_ended released the others)
        late = None
        if incoming.request.method == "INVITE" and incoming.txn_id is not None:
            late = (incoming.txn_id, incoming.flow)
        for txn_id in rec.flows:
            if by_client.get(txn_id) is rec:
                del by_client[txn_id]
                if late is not None:
                    self.late[txn_id] = late
        rec.flows.clear()
        self._deadlines.cancel(rec)  # a forgotten held call's grace deadline kept it alive
        self._drop_server(rec)

    def _drop_server(self, rec: Running) -> None:
        txn_id = rec.incoming.txn_id
        if txn_id is not None and self.by_server.get(txn_id) is rec:
            del self.by_server[txn_id]
        if not rec.call.held:
            rec.done = True
            self._deadlines.cancel(rec)

    def _spawn(
        self, rec: Running | None, coro: Coroutine[Any, Any, None], *, keep: bool = False
    ) -> None:
        """Run ``coro`` as a task; a call's own tasks (``rec``, unless ``keep``) are
        cancelled when it ends."""
        tasks = rec.tasks if rec is not None and not keep else self._tasks
        tasks.spawn(logged(coro, log, "call task failed"))

    async def close(self) -> None:
        await asyncio.gather(self._tasks.close(), *(r.tasks.close() for r in self.by_id.values()))
