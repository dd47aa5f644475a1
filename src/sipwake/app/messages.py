"""SIP MESSAGE (RFC 3428) for our users, whose devices may sleep (issue 13).

* When every device of the user is live, the MESSAGE is forked like any request (the
  router's ordinary stateful proxying, RFC 3261 §16.7: the first 2xx goes to the sender).
* When one sleeps, the message is stored (storage/inbox.py, the rules in policy/inbox.py)
  for every device with a push target, each keeping its own copy; sleeping devices get an
  **alert** push, never a VoIP push: iOS 13+ ends an app whose VoIP push reports no call
  (apns.md §8); live ones get it at once over their connection, sent by us (the stored
  message is ours to deliver from then on). The sender gets 200 when a live device
  accepted it, else 202 Accepted (RFC 3428 §7: final delivery is not known yet).
* When a device registers (woken or not), its pending messages go out over the connection
  it registered on, one at a time and in order; 2xx removes one for that device, 3xx/4xx/6xx
  drop it for that device, no answer, 408 or 5xx leave it for the next registration. With a
  shared store (Redis) the node that receives the REGISTER owns the device's connection,
  so that node delivers, whichever node stored the message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable

from sipwake.app.engine import Incoming
from sipwake.app.ports import MetricsPort, NullMetrics
from sipwake.app.proxy import Proxy
from sipwake.app.targets import Target
from sipwake.app.tasks import Tasks
from sipwake.config import MessageConfig
from sipwake.policy.bindings import Binding, FlowRef
from sipwake.policy.inbox import (
    DELIVERED,
    RETRY,
    StoredMessage,
    delivery_copy,
    delivery_result,
)
from sipwake.policy.proxying import make_branch
from sipwake.policy.pushparams import provider_family
from sipwake.push.base import Delivered, Permanent, PushOutcome, PushRequest, TokenRejected
from sipwake.push.dispatcher import PushDispatcher
from sipwake.push.payload import (
    PayloadTooLarge,
    build_message_payload,
    message_alert_text,
    message_preview,
)
from sipwake.sip.codec import parse_message
from sipwake.sip.deadlines import Deadlines
from sipwake.sip.errors import ParseError
from sipwake.sip.message import Request, Response
from sipwake.storage.base import BindingStore, StorageError
from sipwake.storage.inbox import MessageStore

log = logging.getLogger("sipwake.messages")

# Bytes our forwarded or delivered copy may add (a Via, Max-Forwards, a Route): a MESSAGE
# whose copy would not fit sip.max_message_size is refused with 413 (RFC 3428 §7) rather
# than stored and never deliverable.
HEADROOM = 256
# The sender of a MESSAGE that is stored but also sent to a live device waits at most this
# long for that device's 2xx before it gets 202 (its own Timer F is 32 s, RFC 3261 §17.1.2.2).
ANSWER_WITHIN = 4.0
_OUTCOMES = {Delivered: "delivered", TokenRejected: "token_rejected"}


class _Watch:
    """The live deliveries of one MESSAGE whose sender waits: accepted at the first 2xx,
    refused once every live device answered otherwise."""

    def __init__(self, count: int) -> None:
        self.left = count
        self.accepted: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def done(self, ok: bool) -> None:
        self.left -= 1
        if not self.accepted.done() and (ok or self.left <= 0):
            self.accepted.set_result(ok)


class MessageService:
    def __init__(
        self,
        *,
        proxy: Proxy,
        store: MessageStore,
        bindings: BindingStore,
        cfg: MessageConfig,
        max_message_size: int,
        flow_alive: Callable[[FlowRef], bool],
        target_of: Callable[[Binding], Target],
        sip_address: tuple[str, int, str],
        id_source: Callable[[], str],
        wall: Callable[[], float],
        clock: Callable[[], float],
        rearm: Callable[[], None] = lambda: None,
        dispatcher: PushDispatcher | None = None,
    ) -> None:
        self.proxy = proxy
        self.store = store
        self.bindings = bindings
        self.cfg = cfg
        self.max_message_size = max_message_size
        self.flow_alive = flow_alive
        self.target_of = target_of
        self.sip_address = sip_address
        self.id_source = id_source
        # Wall clock for what is stored (messages outlive the process), the loop's
        # monotonic clock for durations (engine.wall / engine.now).
        self.wall = wall
        self.clock = clock
        self.rearm = rearm  # engine.rearm: our earliest deadline changed
        self.dispatcher = dispatcher
        self.metrics: MetricsPort = NullMetrics()
        # Client transactions of stored messages being delivered -> their final status.
        self._deliveries: dict[str, asyncio.Future[int]] = {}
        # (aor, device) being drained -> the binding to drain again once done (a newer
        # registration arrived meanwhile), or None.
        self._draining: dict[tuple[str, str], Binding | None] = {}
        self._watches: dict[str, _Watch] = {}  # message id -> its sender's live deliveries
        self._deadlines: Deadlines[str] = Deadlines()  # message id -> answer the sender 202
        self._tasks = Tasks()

    def sleeping(self, b: Binding) -> bool:
        """As for calls (app/wake.py): a push target and no connection known alive; UDP
        gives no such knowledge, so a UDP push binding counts as asleep."""
        if b.push is None:
            return False
        ref = b.flow
        return ref is None or ref.transport == "UDP" or not self.flow_alive(ref)

    # -- a MESSAGE for one of our users -------------------------------------------------------
    async def handle(
        self,
        incoming: Incoming,
        aor: str,
        bindings: list[Binding],
        admit: Callable[[list[Binding]], list[Binding]] | None = None,
    ) -> bool:
        """Take the MESSAGE if a device of ``aor`` sleeps; False leaves it to the ordinary
        fork (every device is live: a plain stateful proxy, RFC 3261 §16).

        Taken, it is stored for every device with a push target (StorageUnavailable ->
        503 from the engine, nothing sent: the sender retries and dedup keeps one copy),
        sleeping ones are alert-pushed, live ones get it at once over their connection,
        and the sender gets 200 as soon as a live device accepts it, else 202. ``admit``
        picks the sleeping devices the push budget lets us push (the router's); the others
        keep the message all the same and get it when they next register."""
        req = incoming.request
        data = req.serialise()
        if len(data) + HEADROOM > self.max_message_size:
            incoming.respond(413)  # RFC 3428 §7, RFC 3261 §21.4.11
            return True
        devices: dict[str, Binding] = {}  # the best binding of each device (q order)
        for b in bindings:
            devices.setdefault(b.device_key, b)
        asleep = {d: b for d, b in devices.items() if self.sleeping(b)}
        if not asleep:
            return False
        now = self.wall()
        message = StoredMessage(
            id=str(uuid.uuid4()),
            call_id=req.call_id,
            cseq=req.cseq.seq,
            sender=str(req.from_.uri),
            content_type=req.headers.get("content-type") or "",
            stored_at=now,
            expires_at=now + self.cfg.store_for,
            # Live devices with a push target too: one that fails now (5xx, no answer)
            # gets it at its next registration like the sleeping ones.
            devices=tuple(d for d, b in devices.items() if b.push is not None),
            data=data,
        )
        added = await self.store.add(aor, message, now, self.cfg.max_per_user)
        if not added.duplicate:
            self.metrics.instant_message("stored")
        self.metrics.instant_message("dropped", len(added.dropped))
        self.metrics.instant_message("expired", len(added.expired))
        if added.dropped:
            log.info("%s: %d oldest stored messages dropped", aor, len(added.dropped))
        to_push = [asleep[d] for d in added.new_devices if d in asleep]
        if to_push and admit is not None:
            to_push = admit(to_push)
        for pushed in to_push:
            self._tasks.spawn(self._push(pushed, added.message, req))
        if added.new_devices:
            self._tasks.spawn(self._woke_meanwhile(aor, asleep, added.new_devices))
        live = [b for d, b in devices.items() if d not in asleep]
        if not live:
            incoming.respond(202)  # RFC 3428 §7: stored, final delivery not known yet
            return True
        # Live devices get it now, in parallel; the first 2xx makes the answer a 200.
        watch = _Watch(len(live))
        self._watches[added.message.id] = watch
        try:
            for b in live:
                if b.push is not None:
                    self._drain_soon(aor, b)  # in order after anything older it still has
                else:
                    self._tasks.spawn(self._send_watched(b, added.message))
            # Bounded through the engine's one timer (handle_timer), not a timer of ours.
            self._deadlines.set(added.message.id, self.clock() + ANSWER_WITHIN)
            self.rearm()
            accepted = await watch.accepted
        finally:
            self._watches.pop(added.message.id, None)
            self._deadlines.cancel(added.message.id)
        incoming.respond(200 if accepted else 202)
        return True

    async def _woke_meanwhile(
        self, aor: str, asleep: dict[str, Binding], devices: tuple[str, ...]
    ) -> None:
        """A device that registered between our lookup and the store's write found nothing
        to deliver (on Redis the two can run on different nodes): look again, and deliver
        to each such device over its new flow (through its owner node if it is another's:
        cluster.target). A duplicate is possible if its own node drains at the same time;
        apps drop those by Call-ID + CSeq (docs/app-developers.md)."""
        try:
            fresh = await self.bindings.lookup(aor, self.wall())
        except StorageError:
            return  # it gets the message at its next registration
        for b in fresh:
            old = asleep.get(b.device_key)
            moved = old is not None and b.flow != old.flow
            if b.device_key in devices and moved and not self.sleeping(b):
                self._drain_soon(aor, b)

    async def _send_watched(self, b: Binding, message: StoredMessage) -> None:
        """A live device without a push target: one try, nothing stored for it."""
        self._settled(message.id, delivery_result(await self._send(b, message)))

    def _settled(self, message_id: str, result: str) -> None:
        watch = self._watches.get(message_id)
        if watch is not None:
            watch.done(result == DELIVERED)

    async def _push(self, b: Binding, message: StoredMessage, req: Request) -> None:
        dispatcher, target = self.dispatcher, b.push
        if dispatcher is None or target is None:
            return
        display = req.from_.display or ""
        preview = message_preview(message.content_type, req.body) if self.cfg.preview else ""
        text = message_alert_text(display or message.sender, preview)
        host, port, transport = self.sip_address
        try:
            payload = build_message_payload(
                message_id=message.id,
                sip_call_id=message.call_id,
                sender_uri=message.sender,
                sender_display=display,
                recipient=req.ruri.aor(),
                sent_at=self.wall(),
                expires_at=message.expires_at,
                sip_host=host,
                sip_port=port,
                sip_transport=transport,
                content_type=message.content_type,
                preview=preview,
                # What the provider adds: APNs' aps dictionary, FCM's "alert" entry.
                reserve=64 + len(json.dumps(text)),
            )
        except PayloadTooLarge as exc:
            log.warning("message %s: no push, payload too large: %s", message.id, exc)
            return
        request = PushRequest(
            target=target,
            payload=payload,
            kind="alert",
            expires_at=message.expires_at,
            collapse_id=message.id,
            alert_text=text,
            urgent=True,
        )
        started = self.clock()
        outcome: PushOutcome = await dispatcher.send(request)
        family = provider_family(target.provider)
        family = family if family in ("apns", "fcm", "webpush") else "webhook"
        kind = _OUTCOMES.get(
            type(outcome), "permanent" if isinstance(outcome, Permanent) else "transient"
        )
        self.metrics.push(family, kind, self.clock() - started)
        if not isinstance(outcome, Delivered):
            # The message stays stored: the device gets it at its next registration.
            log.info("message %s: alert push to %s not sent: %s", message.id, b.device_key, outcome)

    # -- a device registered: deliver what waits for it --------------------------------------
    def on_registered(self, aor: str, added: tuple[Binding, ...]) -> None:
        """Registrar hook (runs after the 200 went out)."""
        for b in added:
            if b.push is not None and b.flow is not None:
                # Nothing is ever stored for a device without a push target.
                self._drain_soon(aor, b)

    def _drain_soon(self, aor: str, b: Binding) -> None:
        key = (aor, b.device_key)
        if key in self._draining:
            self._draining[key] = b  # again once done, over the newest registration
            return
        self._draining[key] = None
        self._tasks.spawn(self._drain(aor, b))

    async def _drain(self, aor: str, b: Binding) -> None:
        key = (aor, b.device_key)
        try:
            current: Binding | None = b
            while current is not None:
                self._draining[key] = None
                await self._deliver_pending(aor, current)
                current = self._draining.get(key)
        finally:
            self._draining.pop(key, None)

    async def _deliver_pending(self, aor: str, b: Binding) -> None:
        device = b.device_key
        try:
            pending = await self.store.pending(aor, device, self.wall())
        except StorageError as exc:
            log.warning("%s: pending messages not read: %s", aor, exc)
            return
        for message in pending:  # one at a time: in order, even over UDP
            result = delivery_result(await self._send(b, message))
            self._settled(message.id, result)
            if result == RETRY:
                return  # the rest waits for the next registration, still in order
            try:
                await self.store.settle(aor, message.id, device, self.wall())
            except StorageError as exc:
                log.warning("%s: message %s not settled: %s", aor, message.id, exc)
                return
            self.metrics.instant_message(result)

    async def _send(self, b: Binding, message: StoredMessage) -> int:
        """Send one stored message to ``b``; its final status (408: no answer)."""
        try:
            stored = parse_message(message.data)
        except ParseError:
            log.warning("message %s: stored copy unreadable, dropped", message.id)
            return 400
        if not isinstance(stored, Request):
            return 400
        target = self.target_of(b)
        proxy = self.proxy
        try:
            flow = await proxy.flows.target_flow(target)
        except (OSError, ValueError) as exc:
            log.info("message %s: %s unreachable: %s", message.id, b.contact, exc)
            return 408
        via = proxy.via_for(flow, make_branch(self.id_source(), "msg"))
        request = delivery_copy(stored, b.contact, via, target.path)
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        txn_id = proxy.engine.send_request(request, flow)
        self._deliveries[txn_id] = fut
        try:
            return await fut
        finally:
            self._deliveries.pop(txn_id, None)

    # -- the timer source (app/engine.py fires it) ---------------------------------------------
    def get_timer(self) -> float | None:
        return self._deadlines.earliest()

    def handle_timer(self, now: float) -> None:
        """No live device said 2xx within ANSWER_WITHIN: the sender gets its 202."""
        for message_id in self._deadlines.pop_due(now):
            watch = self._watches.get(message_id)
            if watch is not None and not watch.accepted.done():
                watch.accepted.set_result(False)

    # -- transaction events (the router passes ours here first) ------------------------------
    def on_response(self, response: Response, txn_id: str) -> bool:
        fut = self._deliveries.get(txn_id)
        if fut is None:
            return False
        if response.status >= 200 and not fut.done():
            fut.set_result(response.status)
        return True

    def on_timeout(self, txn_id: str) -> bool:
        fut = self._deliveries.get(txn_id)
        if fut is None:
            return False
        if not fut.done():
            fut.set_result(408)  # Timer F (RFC 3261 §17.1.2.2): as a 408
        return True

    def on_terminated(self, txn_id: str) -> bool:
        fut = self._deliveries.get(txn_id)
        if fut is None:
            return False
        if not fut.done():
            fut.set_result(408)  # ended without a final answer (transport failure)
        return True

    async def close(self) -> None:
        await self._tasks.close()
