"""Registration bindings and the push targets they carry (RFC 3261 §10, RFC 5626, RFC 8599).

Pure values: the registrar computes new ones, the stores persist them, the router reads
them. Every field is plain data so a binding serialises the same way to SQLite and Redis.

Plain classes with a hand-written ``__init__`` and ``Final`` attributes, not frozen
dataclasses: every REGISTER builds three bindings and every lookup unpacks the stored
ones, and a frozen dataclass's generated ``__init__`` (one ``object.__setattr__`` per
field) stays interpreted when mypyc compiles this module: 21,000 instructions per
``Binding`` against ~1,000 (bench_inproc.py, callgrind). ``Value`` gives them equality,
a hash and a repr by fields; ``fields_of`` and ``as_dict`` serve the stores and the admin
API what ``dataclasses.fields`` and ``asdict`` did.
"""

from __future__ import annotations

import inspect
from typing import Any, Final, TypeVar

from sipwake.sip.values import Value

V = TypeVar("V", bound=Value)

REQUIRED: Final[Any] = inspect.Parameter.empty  # fields_of: a field without a default


def fields_of(cls: type[Value]) -> tuple[tuple[str, Any], ...]:
    """(name, default or ``REQUIRED``) of each field, in constructor order, read from
    ``cls.__init__``'s signature (it names every field, see ``_items``)."""
    params = list(inspect.signature(cls).parameters.values())
    return tuple((p.name, p.default) for p in params)


def evolve(value: V, **changes: Any) -> V:
    """A copy of ``value`` with ``changes`` applied (what ``dataclasses.replace`` did)."""
    fields: dict[str, Any] = dict(value._items())
    unknown = changes.keys() - fields.keys()
    if unknown:
        raise TypeError(f"{type(value).__name__} has no field {sorted(unknown)[0]!r}")
    fields.update(changes)
    return type(value)(**fields)


def as_dict(value: Value) -> dict[str, Any]:
    """Fields by name, nested values as dicts too (what ``dataclasses.asdict`` did)."""
    return {
        name: as_dict(field) if isinstance(field, Value) else field
        for name, field in value._items()
    }


class PushTarget(Value):
    """Where and how to push a sleeping device (RFC 8599 §4.1).

    ``provider`` is the ``pn-provider`` value (``apns``, ``fcm``, ``webpush``, or an operator
    name for a webhook); ``prid`` the ``pn-prid`` (APNs device token, FCM registration
    token, Web Push endpoint); ``param`` the ``pn-param`` (APNs: ``TEAMID.bundle.voip``
    style topic, FCM: project id). Legacy clients register separate VoIP and alert tokens
    (``TOKEN:voip&TOKEN:remote``): the VoIP one is ``prid``, the other ``alert_prid``.
    """

    __slots__ = ("alert_prid", "app_id", "param", "prid", "provider", "purr")

    provider: Final[str]
    prid: Final[str]
    param: Final[str]
    purr: Final[str]  # pn-purr, opaque (RFC 8599 §4.1.4)
    alert_prid: Final[str]  # non-VoIP token for missed-call alerts, when the app gave one
    app_id: Final[str]  # bundle id / app package, when the client said so (legacy app-id)

    def __init__(  # noqa: PLR0917 - positional, as the dataclass's was (storage/packed.py)
        self,
        provider: str,
        prid: str,
        param: str = "",
        purr: str = "",
        alert_prid: str = "",
        app_id: str = "",
    ) -> None:
        self.provider = provider
        self.prid = prid
        self.param = param
        self.purr = purr
        self.alert_prid = alert_prid
        self.app_id = app_id

    def _items(self) -> tuple[tuple[str, object], ...]:
        return (
            ("provider", self.provider),
            ("prid", self.prid),
            ("param", self.param),
            ("purr", self.purr),
            ("alert_prid", self.alert_prid),
            ("app_id", self.app_id),
        )


class FlowRef(Value):
    """The connection a binding arrived on, so requests go back over it (RFC 5626 §5.3)."""

    __slots__ = (
        "conn_id", "local_host", "local_port", "node_id", "remote_host", "remote_port",
        "transport",
    )  # fmt: skip

    transport: Final[str]  # UDP | TCP | TLS | WS | WSS
    remote_host: Final[str]
    remote_port: Final[int]
    local_host: Final[str]
    local_port: Final[int]
    conn_id: Final[int]  # 0 for UDP
    node_id: Final[str]  # the node that owns the connection (multi-node, issue: scale-out)

    def __init__(  # noqa: PLR0917 - positional, as the dataclass's was (storage/packed.py)
        self,
        transport: str,
        remote_host: str,
        remote_port: int,
        local_host: str = "",
        local_port: int = 0,
        conn_id: int = 0,
        node_id: str = "",
    ) -> None:
        self.transport = transport
        self.remote_host = remote_host
        self.remote_port = remote_port
        self.local_host = local_host
        self.local_port = local_port
        self.conn_id = conn_id
        self.node_id = node_id

    def _items(self) -> tuple[tuple[str, object], ...]:
        return (
            ("transport", self.transport),
            ("remote_host", self.remote_host),
            ("remote_port", self.remote_port),
            ("local_host", self.local_host),
            ("local_port", self.local_port),
            ("conn_id", self.conn_id),
            ("node_id", self.node_id),
        )


class Binding(Value):
    """One contact of an address-of-record."""

    __slots__ = (
        "aor", "call_id", "contact", "cseq", "expires_at", "extra", "flow", "instance", "path",
        "push", "q", "reg_id", "registered_at", "user_agent",
    )  # fmt: skip

    aor: Final[str]  # canonical sip:user@domain
    contact: Final[str]  # the Contact URI as registered (with its parameters)
    expires_at: Final[float]  # absolute, same clock as the registrar's ``now``
    call_id: Final[str]  # RFC 3261 §10.3 step 7: refresh ordering
    cseq: Final[int]
    q: Final[float]
    instance: Final[str]  # +sip.instance (RFC 5626 §4.1), without the angle brackets
    reg_id: Final[int]  # RFC 5626 reg-id, 0 when absent
    path: Final[tuple[str, ...]]  # Path header values (RFC 3327), in order
    flow: Final[FlowRef | None]
    push: Final[PushTarget | None]
    user_agent: Final[str]
    registered_at: Final[float]
    extra: Final[tuple[tuple[str, str], ...]]  # other Contact header params

    def __init__(  # noqa: PLR0917 - positional, as the dataclass's was (packed.py)
        self,
        aor: str,
        contact: str,
        expires_at: float,
        call_id: str,
        cseq: int,
        q: float = 1.0,
        instance: str = "",
        reg_id: int = 0,
        path: tuple[str, ...] = (),
        flow: FlowRef | None = None,
        push: PushTarget | None = None,
        user_agent: str = "",
        registered_at: float = 0.0,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.aor = aor
        self.contact = contact
        self.expires_at = expires_at
        self.call_id = call_id
        self.cseq = cseq
        self.q = q
        self.instance = instance
        self.reg_id = reg_id
        self.path = path
        self.flow = flow
        self.push = push
        self.user_agent = user_agent
        self.registered_at = registered_at
        self.extra = extra

    def _items(self) -> tuple[tuple[str, object], ...]:
        return (
            ("aor", self.aor),
            ("contact", self.contact),
            ("expires_at", self.expires_at),
            ("call_id", self.call_id),
            ("cseq", self.cseq),
            ("q", self.q),
            ("instance", self.instance),
            ("reg_id", self.reg_id),
            ("path", self.path),
            ("flow", self.flow),
            ("push", self.push),
            ("user_agent", self.user_agent),
            ("registered_at", self.registered_at),
            ("extra", self.extra),
        )

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
