"""The one push-provider interface (Sygnal's ``Pushkin`` shape) and its outcome values.

Every adapter (APNs, FCM, Web Push, webhook) takes a :class:`PushRequest` and answers with
one of four outcomes; the wake-up logic only ever branches on these:

- :class:`Delivered`: the push service accepted the push (not a delivery receipt).
- :class:`TokenRejected`: the device token is dead for this app (APNs 410 / BadDeviceToken /
  DeviceTokenNotForTopic, FCM UNREGISTERED...): drop the binding's push target, answer the
  branch 480/404 (RFC 8599 §5.4).
- :class:`Transient`: try again later (429, 5xx, network trouble), honouring
  ``retry_after`` when the service said so.
- :class:`Permanent`: our fault or our configuration (bad JWT, topic, payload): retrying
  cannot help, and the token must *not* be dropped.

Foreign exceptions (h2, ssl, OSError, JSON) are mapped inside the adapters: ``send`` never
raises for network or service trouble.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from sipwake.policy.bindings import PushTarget

# "refresh": a binding-refresh push (RFC 8599 §5.5) that must wake the app without
# ringing or showing anything: APNs background push, FCM normal-priority data message.
PushKind = Literal["voip", "alert", "refresh"]


@dataclass(frozen=True, slots=True)
class PushRequest:
    """One push to one device."""

    target: PushTarget  # from the binding
    payload: dict[str, Any] = field(hash=False)  # app-facing payload (payload.build_payload)
    kind: PushKind = "voip"  # "alert" for a missed-call notification
    expires_at: float = 0.0  # wall clock; APNs apns-expiration / FCM ttl derive from it
    collapse_id: str = ""  # the call UUID
    alert_text: str = ""  # the visible text of a kind="alert" push
    # Deliver now even to a dozing device: FCM priority high, Web Push Urgency high. Calls
    # always are; an alert only when the user expects it at once (a chat message).
    urgent: bool = False


@dataclass(frozen=True, slots=True)
class Delivered:
    provider_id: str = ""  # apns-id, FCM message name, ...


@dataclass(frozen=True, slots=True)
class TokenRejected:
    reason: str  # "Unregistered", "BadDeviceToken", "DeviceTokenNotForTopic", ...


@dataclass(frozen=True, slots=True)
class Transient:
    reason: str
    retry_after: float | None = None  # seconds, when the service said


@dataclass(frozen=True, slots=True)
class Permanent:
    reason: str  # "InvalidProviderToken", "BadTopic", "PayloadTooLarge", ...


PushOutcome = Delivered | TokenRejected | Transient | Permanent


class PushProvider(Protocol):
    """What the dispatcher calls. ``now`` is wall-clock seconds (JWT ``iat``, expiry)."""

    name: str

    async def send(self, request: PushRequest, now: float) -> PushOutcome: ...

    async def close(self) -> None: ...
