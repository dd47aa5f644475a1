"""Registration bindings and the push targets they carry (RFC 3261 §10, RFC 5626, RFC 8599).

Pure values: the registrar computes new ones, the stores persist them, the router reads
them. Every field is plain data so a binding serialises the same way to SQLite and Redis.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class PushTarget:
    """Where and how to push a sleeping device (RFC 8599 §4.1).

    ``provider`` is the ``pn-provider`` value (``apns``, ``fcm``, ``webpush``, or an operator
    name for a webhook); ``prid`` the ``pn-prid`` (APNs device token, FCM registration
    token, Web Push endpoint); ``param`` the ``pn-param`` (APNs: ``TEAMID.bundle.voip``
    style topic, FCM: project id). Legacy clients register separate VoIP and alert tokens
    (``TOKEN:voip&TOKEN:remote``): the VoIP one is ``prid``, the other ``alert_prid``.
    """

    provider: str
    prid: str
    param: str = ""
    purr: str = ""  # pn-purr, opaque (RFC 8599 §4.1.4)
    alert_prid: str = ""  # non-VoIP token for missed-call alerts, when the app gave one
    app_id: str = ""  # bundle id / app package, when the client said so (legacy app-id)


@dataclass(frozen=True, slots=True)
class FlowRef:
    """The connection a binding arrived on, so requests go back over it (RFC 5626 §5.3)."""

    transport: str  # UDP | TCP | TLS | WS | WSS
    remote_host: str
    remote_port: int
    local_host: str = ""
    local_port: int = 0
    conn_id: int = 0  # 0 for UDP
    node_id: str = ""  # the node that owns the connection (multi-node, issue: scale-out)


@dataclass(frozen=True, slots=True)
class Binding:
    """One contact of an address-of-record."""

    aor: str  # canonical sip:user@domain
    contact: str  # the Contact URI as registered (with its parameters)
    expires_at: float  # absolute, same clock as the registrar's ``now``
    call_id: str  # RFC 3261 §10.3 step 7: refresh ordering
    cseq: int
    q: float = 1.0
    instance: str = ""  # +sip.instance (RFC 5626 §4.1), without the angle brackets
    reg_id: int = 0  # RFC 5626 reg-id, 0 when absent
    path: tuple[str, ...] = ()  # Path header values (RFC 3327), in order
    flow: FlowRef | None = None
    push: PushTarget | None = None
    user_agent: str = ""
    registered_at: float = 0.0
    extra: tuple[tuple[str, str], ...] = field(default=())  # other Contact header params

    @property
    def device_key(self) -> str:
        """Identity of the device behind this binding: one branch per (call, device).
        ``+sip.instance``, else the push token, else the contact (ARCHITECTURE.md)."""
        if self.instance:
            return "instance:" + self.instance
        if self.push is not None:
            return f"push:{self.push.provider}:{self.push.prid}"
        return "contact:" + self.contact

    def expires_in(self, now: float) -> int:
        return max(0, int(self.expires_at - now + 0.5))
