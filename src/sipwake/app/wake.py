"""Push wake-up, the sending side: which bindings sleep, the push for one device of a held
call (payload, decline link, outcome), a dead token's binding removed, the missed-call
alert. What a push result means for the call is ``policy.call.Call``'s to decide; the
runner (app/calls.py) feeds it the ``DeviceState`` returned here."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from sipwake.app.engine import Clock
from sipwake.app.ports import MetricsPort, NullMetrics
from sipwake.config import PushConfig
from sipwake.policy import decline as tokens
from sipwake.policy.bindings import Binding, FlowRef
from sipwake.policy.parking import DeviceState
from sipwake.policy.pushparams import provider_family
from sipwake.push.base import (
    Delivered,
    Permanent,
    PushOutcome,
    PushRequest,
    TokenRejected,
    Transient,
)
from sipwake.push.dispatcher import PushDispatcher
from sipwake.push.payload import build_payload
from sipwake.sip.message import Request
from sipwake.storage.base import BindingStore, StorageError

log = logging.getLogger("sipwake.wake")

_OUTCOME: dict[type, str] = {
    Delivered: "delivered",
    TokenRejected: "token_rejected",
    Transient: "transient",
    Permanent: "permanent",
}
_FAMILIES = ("apns", "fcm", "webpush")


def family(provider: str) -> str:
    f = provider_family(provider)
    return f if f in _FAMILIES else "webhook"


class Pusher:
    def __init__(
        self,
        *,
        dispatcher: PushDispatcher,
        store: BindingStore,
        cfg: PushConfig,
        clock: Clock,
        flow_alive: Callable[[FlowRef], bool],
        sip_address: tuple[str, int, str],
        secret: bytes,
        decline_base: str = "",
    ) -> None:
        self.dispatcher = dispatcher
        self.store = store
        self.cfg = cfg
        self.clock = clock
        self.flow_alive = flow_alive
        self.sip_address = sip_address
        self.secret = secret
        self.decline_base = decline_base.rstrip("/")
        self.metrics: MetricsPort = NullMetrics()
        # Called with a binding removed because its push token was rejected (edge mode
        # de-REGISTERs it upstream).
        self.on_binding_removed: list[Callable[[Binding], None]] = []
        self.stats: dict[str, int] = {
            "pushed": 0, "push_failed": 0, "tokens_rejected": 0,
        }  # fmt: skip

    def sleeping(self, b: Binding) -> bool:
        """A binding with a push target and no connection we know to be alive: push it.
        UDP gives no such knowledge, so a UDP push binding is always pushed (RFC 8599
        §5.3.2 leaves this to the proxy; a foreground app just re-registers sooner)."""
        if b.push is None:
            return False
        ref = b.flow
        if ref is None or ref.transport == "UDP":
            return True
        return not self.flow_alive(ref)

    def request(
        self, call_id: str, aor: str, invite: Request, b: Binding, expires_at: float
    ) -> PushRequest:
        """The push for one device; ``expires_at`` (wall clock) is the end of the hold
        window, which the app checks and APNs enforces (stale-push guard)."""
        assert b.push is not None
        caller = invite.from_
        host, port, transport = self.sip_address
        payload = build_payload(
            type="call",
            call_id=call_id,
            caller_uri=str(caller.uri),
            caller_display=caller.display or "",
            callee=aor,
            sent_at=self.clock.wall(),
            expires_at=expires_at,
            sip_host=host,
            sip_port=port,
            sip_transport=transport,
            sip_call_id=invite.call_id,
            decline_url=self.decline_url(call_id, b.device_key, expires_at),
        )
        return PushRequest(
            target=b.push, payload=payload, kind="voip", expires_at=expires_at, collapse_id=call_id
        )

    def decline_url(self, call_id: str, device: str, deadline: float) -> str:
        if not self.decline_base:
            return ""
        token = tokens.make_token(self.secret, call_id, device, deadline, os.urandom(6).hex())
        return self.decline_base + tokens.decline_path(call_id, token)

    async def push(
        self, call_id: str, aor: str, invite: Request, b: Binding, expires_at: float
    ) -> tuple[DeviceState, str, str]:
        """Send one device its push; the device's state for the call, the outcome and the
        provider's reason (``""`` when delivered)."""
        assert b.push is not None
        try:
            outcome: PushOutcome = await self.dispatcher.send(
                self.request(call_id, aor, invite, b, expires_at)
            )
        except (ValueError, OSError) as exc:
            # A payload that cannot be built (PayloadTooLarge) or a provider bug: this
            # device cannot be pushed, so stop waiting for it rather than for the window.
            outcome = Permanent(f"{type(exc).__name__}: {exc}")
        label = _OUTCOME[type(outcome)]  # the dispatcher counts it (sipwake_pushes_total)
        if isinstance(outcome, Delivered):
            self.stats["pushed"] += 1
            return DeviceState.PUSHED, label, ""
        if isinstance(outcome, TokenRejected):
            # The app is gone from that device (APNs 410, FCM UNREGISTERED...). The binding
            # was pushed because it had no live connection, so with its token dead nothing
            # can reach it: remove the binding itself, not just its push target.
            self.stats["tokens_rejected"] += 1
            log.info("%s: push token rejected (%s), removing the binding", aor, outcome.reason)
            device = b.device_key
            try:
                await self.store.update(
                    aor,
                    lambda cur: ([x for x in cur if x.device_key != device], None),
                    self.clock.wall(),
                )
            except StorageError as exc:
                log.warning("could not remove a binding with a dead push token: %s", exc)
            for hook in self.on_binding_removed:
                hook(b)
            return DeviceState.REJECTED, label, outcome.reason
        self.stats["push_failed"] += 1
        log.warning("%s: push failed for good: %s", aor, outcome)
        return DeviceState.FAILED, label, outcome.reason

    async def missed_call(
        self, call_id: str, aor: str, invite: Request, bindings: list[Binding], deadline: float
    ) -> None:
        """The alert push to the app's non-VoIP token when nobody took the call."""
        who = invite.from_.display or str(invite.from_.uri)
        for b in bindings:
            if b.push is None or not b.push.alert_prid:
                continue
            expires = self.clock.wall() + 86400
            payload = self.request(call_id, aor, invite, b, deadline).payload | {"type": "missed"}
            await self.dispatcher.send(
                PushRequest(
                    target=b.push,
                    payload=payload,
                    kind="alert",
                    expires_at=expires,
                    collapse_id=call_id,
                    alert_text=f"Missed call from {who}",
                )
            )

    async def close(self) -> None:
        await self.dispatcher.close()
