"""The registrar's decision (RFC 3261 §10.3, RFC 5626 §6, RFC 3327 §5.3, RFC 8599 §5.6.1).

Pure: the live bindings of one AoR, a parsed REGISTER, the flow it came on and ``now`` in;
the AoR's new binding list and a :class:`RegisterOutcome` out. The app layer runs it
inside ``BindingStore.update`` (which may retry it), then answers with the outcome::

    new, outcome = decide_register(policy, current, request, aor, flow, now)

Errors never escape as exceptions: a malformed REGISTER (400, including a malformed push
parameter from the injected parser, whose reason phrase names the parameter), a too-short
expiry (423 + Min-Expires), an unsupported push service (555), a re-ordered refresh (500)
or too many contacts in one request (403) all come back as an outcome whose ``bindings``
are the unchanged live ones, so every rejection commits nothing (§10.3 step 7: "all
binding updates MUST be aborted"). Only bugs raise.

Binding identity (who replaces whom), first rule that applies:

1. both carry ``+sip.instance``: same instance. With ``reg-id`` on both, RFC 5626 §6 keys
   the flow by (instance, reg-id) and ignores the Contact URI; ``one_flow_per_instance``
   (default) goes further and keeps one binding per instance whatever the reg-id, so a
   woken phone re-registering on a new connection or port replaces its stale binding
   and forking sees one branch per device (ARCHITECTURE.md "The wake-up flow");
2. only one side carries an instance: same push service and pn-prid (the device token
   identifies the device, RFC 8599 §5.3 "MAY" applied to bindings as OpenSIPS does);
3. neither: same push token, else the Contact URIs are equal (:func:`same_contact_uri`).

Every binding whose ``device_key`` equals the new one's is matched by these rules, so the
list never holds two bindings of one device (in the default mode).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Final

from sipwake.policy.bindings import Binding, FlowRef, PushTarget, evolve
from sipwake.policy.pushparams import check_provider_supported
from sipwake.sip.errors import ParseError, ProtocolError
from sipwake.sip.message import Request
from sipwake.sip.uri import URI, NameAddr, Params, aor_key
from sipwake.sip.values import Value

PushParser = Callable[[URI, Params], PushTarget | None]

# RFC 3261 §10.3 step 7: 423 is allowed only for a requested interval below one hour.
_ONE_HOUR = 3600
# RFC 3261 §20.19: values above 2**32-1 are taken as 2**32-1.
_MAX_DELTA = 2**32 - 1
_REG_ID_MAX = 2**31 - 1  # RFC 5626 §4.2.1: reg-id is 1 to 2**31-1
_QVALUE_RE = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?")  # RFC 3261 §25.1 qvalue
# Contact header params the registrar interprets; the rest are kept in Binding.extra.
_KNOWN_PARAMS = frozenset({"expires", "q", "+sip.instance", "reg-id"})
# RFC 3261 §19.1.4: these URI params must match even when only one URI has them. We add
# transport: a conservative comparison, so a UDP and a TLS contact are never merged.
_STRICT_URI_PARAMS = ("user", "ttl", "method", "maddr", "transport")


@dataclass(frozen=True, slots=True)
class RegistrarPolicy:
    min_expires: int = 60  # 423 + Min-Expires below this (RFC 3261 §10.3 step 7)
    max_expires: int = 3600  # clamp for ordinary bindings
    default_expires: int = 3600
    push_max_expires: int = 7 * 86400  # bindings with a push target may live this long
    max_bindings_per_aor: int = 20
    push_parser: PushParser | None = None  # None: no push parsing, no Feature-Caps, no 555
    supported_providers: frozenset[str] = frozenset()  # empty: push not configured -> 555
    one_flow_per_instance: bool = True  # False: RFC 5626 multiple flows (reg-ids) coexist
    # Our VAPID public key (base64url P-256 point): webpush Feature-Caps carry it as
    # +sip.vapid (RFC 8599 §5.6.1.1, §12); "" when no [[push.webpush]] is configured.
    vapid_public_key: str = ""
    # +sip.pnsreg="<n>" for a UA whose Contact carries the +sip.pnsreg tag: it can refresh
    # by itself, at least n seconds before expiry (RFC 8599 §5.6.1.1); 0: never offered.
    pnsreg: int = 0
    # RFC 5626 §5.4: Flow-Timer in the 2xx of an outbound (reg-id) REGISTER, the seconds
    # within which the UA must send a keep-alive (CRLF or STUN); 0: none (UA's default).
    flow_timer: int = 0


class RegisterOutcome(Value):
    """What one REGISTER did. An immutable value. A plain class, not a dataclass: one is
    made per REGISTER, and mypyc compiles a hand-written ``__init__`` where a dataclass's
    stays interpreted (sip/flows.py Flow)."""

    __slots__ = (
        "added", "bindings", "evicted", "headers", "reason", "removed", "replaced", "status",
    )  # fmt: skip

    status: Final[int]  # 200, 400, 403, 423, 439, 500, 555
    reason: Final[str | None]  # None: the default phrase for ``status``
    bindings: Final[
        tuple[Binding, ...]
    ]  # what the AoR holds after this REGISTER (200 Contact list)
    headers: Final[tuple[tuple[str, str], ...]]  # e.g. Min-Expires, Path, Require, Feature-Caps
    added: Final[tuple[Binding, ...]]  # new or refreshed by this request (wake-up matching)
    removed: Final[tuple[Binding, ...]]  # gone without a successor (expires 0, *, evicted)
    replaced: Final[tuple[Binding, ...]]  # old versions superseded by an entry of ``added``
    evicted: Final[tuple[Binding, ...]]  # subset of ``removed`` dropped by the per-AoR cap

    def __init__(  # noqa: PLR0917 - positional, as the dataclass's was
        self,
        status: int,
        reason: str | None,
        bindings: tuple[Binding, ...],
        headers: tuple[tuple[str, str], ...],
        added: tuple[Binding, ...] = (),
        removed: tuple[Binding, ...] = (),
        replaced: tuple[Binding, ...] = (),
        evicted: tuple[Binding, ...] = (),
    ) -> None:
        self.status = status
        self.reason = reason
        self.bindings = bindings
        self.headers = headers
        self.added = added
        self.removed = removed
        self.replaced = replaced
        self.evicted = evicted

    def _items(self) -> tuple[tuple[str, object], ...]:
        return (
            ("status", self.status),
            ("reason", self.reason),
            ("bindings", self.bindings),
            ("headers", self.headers),
            ("added", self.added),
            ("removed", self.removed),
            ("replaced", self.replaced),
            ("evicted", self.evicted),
        )

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class _Reject(ProtocolError):
    """A rejection with extra response headers (423 needs Min-Expires)."""

    def __init__(
        self, detail: str, status: int, reason: str, headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        super().__init__(detail, status=status, reason=reason)
        self.headers = tuple(headers)


@dataclass(frozen=True, slots=True)
class _Candidate:
    """One Contact of the REGISTER, parsed, before it meets the stored bindings."""

    binding: Binding  # expires_at/registered_at not final yet
    requested: int  # seconds asked for (0 removes)
    query: tuple[str, ...] | None  # RFC 8599 §4.1.5 query: providers asked (() = all)


def decide_register(  # noqa: PLR0917 - positional by the app/store contract
    policy: RegistrarPolicy,
    current: list[Binding],
    request: Request,
    aor: str,
    flow: FlowRef,
    now: float,
) -> tuple[list[Binding], RegisterOutcome]:
    """New binding list of ``aor`` and the answer to ``request`` (RFC 3261 §10.3 steps 6-8).

    ``current`` may contain expired bindings: they are treated as absent."""
    live = [b for b in current if b.expires_at > now]
    try:
        return _decide(policy, live, request, aor=aor, flow=flow, now=now)
    except ProtocolError as exc:
        headers = exc.headers if isinstance(exc, _Reject) else ()
        outcome = RegisterOutcome(exc.status, exc.response_reason(), tuple(live), headers)
        return live, outcome


def contact_header_values(bindings: Iterable[Binding], now: float) -> list[str]:
    """Contact values for a REGISTER 2xx: every live binding with its remaining ``expires``
    (RFC 3261 §10.3 step 8), and the instance/reg-id the UA needs to recognise its own
    (RFC 5626 §6)."""
    out: list[str] = []
    for b in bindings:
        if b.expires_at <= now:
            continue
        # A live binding never shows expires=0, which would read as "removed".
        parts = [f"<{b.contact}>;expires={max(1, b.expires_in(now))}"]
        if b.q != 1.0:
            parts.append(f";q={_format_q(b.q)}")
        if b.instance:
            parts.append(f';+sip.instance="<{b.instance}>"')
        if b.reg_id:
            parts.append(f";reg-id={b.reg_id}")
        parts.extend(f";{k}={v}" if v else f";{k}" for k, v in b.extra)
        out.append("".join(parts))
    return out


def aor_of(request: Request) -> str:
    """The address-of-record of a REGISTER: its To URI reduced to ``sip:user@host``
    (RFC 3261 §10.3 step 5). sips becomes sip, the host is lower-cased (by the URI parser),
    the user keeps its case but %-escapes of unreserved characters are decoded, since
    §19.1.4 makes them equal to the literal character. Raises ParseError on a bad To."""
    return aor_key(request.to.uri)


def same_contact_uri(a: str, b: str) -> bool:
    """RFC 3261 §19.1.4 comparison of two Contact URIs, simplified and conservative:
    scheme, userinfo, host (case-insensitive), port (absent != 5060) and headers must be
    equal; user/ttl/method/maddr/transport must agree even if only one URI has them
    (transport is stricter than §19.1.4); other parameters are compared when both have
    them, case-insensitively. Unparseable text is compared literally."""
    if a == b:
        return True
    try:
        ua, ub = URI.parse(a), URI.parse(b)
    except ParseError:
        return False
    if ua.opaque is not None or ub.opaque is not None:
        return ua.scheme == ub.scheme and ua.opaque == ub.opaque
    if (ua.scheme, ua.user, ua.password, ua.host, ua.port, ua.headers) != (
        ub.scheme,
        ub.user,
        ub.password,
        ub.host,
        ub.port,
        ub.headers,
    ):
        return False
    for name in _STRICT_URI_PARAMS:
        if _lower(ua.params.get(name, "")) != _lower(ub.params.get(name, "")):
            return False
    return all(
        _lower(value) == _lower(ub.params[name])
        for name, value in ua.params.items()
        if name in ub.params
    )


# -- the decision ---------------------------------------------------------------------------


def _decide(
    policy: RegistrarPolicy,
    live: list[Binding],
    request: Request,
    *,
    aor: str,
    flow: FlowRef,
    now: float,
) -> tuple[list[Binding], RegisterOutcome]:
    call_id = request.call_id
    cseq = request.cseq.seq
    header_expires = request.expires
    contacts = request.contacts
    supported = _option_tags(request, "supported")
    path = tuple(request.headers.get_all("path"))
    headers: list[tuple[str, str]] = []
    if path and "path" in supported:
        # RFC 3327 §5.3: echo the stored Path when the UA said it understands it. Without
        # "path" in Supported we still store it (the edge proxy needs it to reach the UA)
        # but do not return it.
        headers.extend(("Path", value) for value in path)

    if not contacts:  # §10.3 step 8 query: list the bindings, change nothing
        return live, RegisterOutcome(200, None, tuple(live), tuple(headers))

    if any(c.wildcard for c in contacts):
        # §10.3 step 6: "*" only alone and with Expires: 0; each removal obeys the
        # Call-ID/CSeq rule, and one failure aborts the whole request.
        if len(contacts) != 1 or header_expires != 0:
            raise ParseError("Contact: * needs Expires: 0 and no other Contact")
        for b in live:
            _check_order(b, call_id, cseq)
        return [], RegisterOutcome(200, None, (), tuple(headers), removed=tuple(live))

    base = Binding(
        aor=aor,
        contact="",
        expires_at=now,
        call_id=call_id,
        cseq=cseq,
        path=path,
        flow=flow,
        user_agent=request.headers.get("user-agent", "") or "",
        registered_at=now,
    )
    candidates = [_candidate(policy, c, base, header_expires) for c in contacts]
    candidates = _apply_outbound(candidates, path, supported, headers, policy.flow_timer)
    for c in candidates:
        _check_interval(policy, c.requested)
    headers.extend(_push_checks(policy, candidates))
    return _merge(policy, live, candidates, now=now, headers=headers)


def _candidate(
    policy: RegistrarPolicy, contact: NameAddr, base: Binding, header_expires: int | None
) -> _Candidate:
    params = contact.params
    # §10.3 step 7: the Contact's expires parameter, else the Expires header, else ours.
    if "expires" in params:
        requested = _delta_seconds(params["expires"], "expires")
    elif header_expires is not None:
        requested = min(header_expires, _MAX_DELTA)
    else:
        requested = policy.default_expires
    q = 1.0
    if "q" in params:
        q_text = params["q"] or ""
        if not _QVALUE_RE.fullmatch(q_text):
            raise ParseError("bad q")
        q = float(q_text)
    instance = ""
    if "+sip.instance" in params:
        instance = (params["+sip.instance"] or "").strip().strip('"').strip()
        instance = instance.removeprefix("<").removesuffix(">").strip()
        if not instance:
            raise ParseError("bad +sip.instance")
    reg_id = 0
    if "reg-id" in params:
        reg_id = _delta_seconds(params["reg-id"], "reg-id")
        if not 1 <= reg_id <= _REG_ID_MAX:
            raise ParseError("bad reg-id")
        if not instance:
            reg_id = 0  # RFC 5626 §6: reg-id without +sip.instance is ignored
    uri = contact.uri
    push = policy.push_parser(uri, params) if policy.push_parser is not None else None
    query = None
    if policy.push_parser is not None and push is None:
        query = _push_query(uri.params, params)
    extra = tuple((k, v or "") for k, v in params.items() if k not in _KNOWN_PARAMS)
    # Built field by field: evolve() costs ~2.5x more on this hot path.
    binding = Binding(
        aor=base.aor,
        contact=str(uri),
        expires_at=base.expires_at,
        call_id=base.call_id,
        cseq=base.cseq,
        q=q,
        instance=instance,
        reg_id=reg_id,
        path=base.path,
        flow=base.flow,
        push=push,
        user_agent=base.user_agent,
        registered_at=base.registered_at,
        extra=extra,
    )
    return _Candidate(binding, requested, query)


def _apply_outbound(
    candidates: list[_Candidate],
    path: tuple[str, ...],
    supported: frozenset[str],
    headers: list[tuple[str, str]],
    flow_timer: int = 0,
) -> list[_Candidate]:
    """RFC 5626 §6 rules for reg-id; adds ``Require: outbound`` when reg-id is honoured,
    and ``Flow-Timer`` when configured (§5.4: how often we want the flow's keep-alives)."""
    if not any(c.binding.reg_id for c in candidates):
        return candidates
    if sum(1 for c in candidates if c.requested) > 1:
        raise ParseError("reg-id with more than one Contact")
    # Behind an edge proxy (Path present) outbound needs that proxy's "ob" Path URI.
    if path and "ob" not in NameAddr.parse(path[0]).uri.params:
        if "outbound" in supported:
            raise _Reject("first hop lacks outbound", 439, "First Hop Lacks Outbound Support")
        return [replace(c, binding=evolve(c.binding, reg_id=0)) for c in candidates]
    headers.append(("Require", "outbound"))
    if flow_timer:
        headers.append(("Flow-Timer", str(flow_timer)))
    return candidates


def _check_interval(policy: RegistrarPolicy, requested: int) -> None:
    """423 when too short (RFC 3261 §10.3 step 7); 0 (removal) is always fine."""
    if 0 < requested < policy.min_expires and requested < _ONE_HOUR:
        raise _Reject(
            f"expires {requested} below {policy.min_expires}",
            423,
            "Interval Too Brief",
            [("Min-Expires", str(policy.min_expires))],
        )


def _granted(policy: RegistrarPolicy, requested: int, push: PushTarget | None) -> int:
    """The registrar may shorten the interval (§10.3 step 7). Push bindings may live long:
    a sleeping app cannot refresh in the background (RFC 8599 §5.5, ARCHITECTURE.md "Push
    bindings are long-lived")."""
    return min(requested, policy.push_max_expires if push is not None else policy.max_expires)


def _push_checks(policy: RegistrarPolicy, candidates: list[_Candidate]) -> list[tuple[str, str]]:
    """555 for an unsupported push service, else the Feature-Caps of the 2xx.

    RFC 8599 §5.6.1.1: a REGISTER asking for pushes gets one ``Feature-Caps:
    *;+sip.pns="<its pn-provider>"`` (the UA's own spelling: it trusts pushes only when
    they match, §4.1.1); §5.6.1.2: a query gets the type it named, or every supported type
    for an empty pn-provider. As the co-located registrar we know no proxy beyond us will
    push, so unsupported means 555 (§8.1). Removals (expires 0) are never refused."""
    if policy.push_parser is None:
        return []
    supported = set(policy.supported_providers)
    providers: list[str] = []
    pnsreg: set[str] = set()  # providers whose binding offered to refresh by itself
    for c in candidates:
        if not c.requested:
            continue
        if c.binding.push is not None:
            check_provider_supported(c.binding.push, supported)
            providers.append(c.binding.push.provider)
            if policy.pnsreg and any(k.lower() == "+sip.pnsreg" for k, _ in c.binding.extra):
                pnsreg.add(c.binding.push.provider)
        elif c.query is not None:
            asked = c.query or tuple(sorted(supported))
            if not asked:
                raise ProtocolError(
                    "no push service configured",
                    status=555,
                    reason="Push Notification Service Not Supported",
                )
            for provider in asked:
                check_provider_supported(provider, supported)
            providers.extend(asked)
    return [
        ("Feature-Caps", _feature_caps(policy, p, p in pnsreg)) for p in dict.fromkeys(providers)
    ]


def _feature_caps(policy: RegistrarPolicy, provider: str, pnsreg: bool) -> str:
    value = f'*;+sip.pns="{provider}"'
    if provider == "webpush" and policy.vapid_public_key:
        # §12: the browser app may restrict its subscription to the key we sign with.
        value += f';+sip.vapid="{policy.vapid_public_key}"'
    if pnsreg:
        # §5.6.1.1: the UA said it can wake itself; it must refresh this long before expiry.
        value += f';+sip.pnsreg="{policy.pnsreg}"'
    return value


def _merge(
    policy: RegistrarPolicy,
    live: list[Binding],
    candidates: list[_Candidate],
    *,
    now: float,
    headers: list[tuple[str, str]],
) -> tuple[list[Binding], RegisterOutcome]:
    result = list(live)
    added: list[Binding] = []
    removed: list[Binding] = []
    replaced: list[Binding] = []
    for c in candidates:
        new = c.binding
        removing = c.requested == 0
        matches = [b for b in result if _same_device(b, new, policy.one_flow_per_instance)]
        for old in matches:
            if _contains(added, old):
                # The same device twice in one REGISTER: the later Contact wins.
                added = [b for b in added if b is not old]
            else:
                _check_order(old, new.call_id, new.cseq)
                (removed if removing else replaced).append(old)
        if removing:  # §10.3 step 7: expires 0 removes (a missing binding: no-op)
            result = [b for b in result if not _contains(matches, b)]
            continue
        # The REGISTER replaces the contact and the push target: no pn-* means no pushes
        # (issue 10: an app that turned push off must get its calls at once).
        seconds = _granted(policy, c.requested, new.push)
        new = _granted_binding(new, now + seconds, new.push)
        added.append(new)
        result = _put(result, matches, new)
    evicted = _evict(result, added, policy.max_bindings_per_aor)
    if evicted:
        result = [b for b in result if not _contains(evicted, b)]
        removed.extend(evicted)
    outcome = RegisterOutcome(
        200,
        None,
        tuple(result),
        tuple(headers),
        added=tuple(added),
        removed=tuple(removed),
        replaced=tuple(replaced),
        evicted=tuple(evicted),
    )
    return result, outcome


def _granted_binding(b: Binding, expires_at: float, push: PushTarget | None) -> Binding:
    return Binding(
        b.aor, b.contact, expires_at, b.call_id, b.cseq, b.q, b.instance, b.reg_id,
        b.path, b.flow, push, b.user_agent, b.registered_at, b.extra,
    )  # fmt: skip


def _evict(result: list[Binding], added: list[Binding], cap: int) -> list[Binding]:
    """Bindings to drop so the AoR holds at most ``cap``: the least recently registered
    ones without a push target first (a push binding is a sleeping device that cannot
    re-register by itself), never one this request just wrote; 403 if that is not enough."""
    excess = len(result) - cap
    if excess <= 0:
        return []
    others = [b for b in result if not _contains(added, b)]
    if len(others) < excess:
        raise _Reject(f"more than {cap} contacts", 403, "Forbidden")
    others.sort(key=lambda b: (b.push is not None, b.registered_at))
    return others[:excess]


# -- small helpers --------------------------------------------------------------------------


def _check_order(old: Binding, call_id: str, cseq: int) -> None:
    """RFC 3261 §10.3 steps 6-7: with the same Call-ID a binding may be updated or removed
    only by a higher CSeq; otherwise "the update MUST be aborted and the request fails",
    and a failed update answers 500."""
    if old.call_id == call_id and cseq <= old.cseq:
        raise ProtocolError(f"CSeq {cseq} not above {old.cseq} for this Call-ID", status=500)


def _same_device(old: Binding, new: Binding, one_flow_per_instance: bool) -> bool:
    """Whether ``new`` replaces ``old`` (see the module docstring for the rules)."""
    if old.instance and new.instance:
        if old.instance != new.instance:
            return False
        if one_flow_per_instance or not old.reg_id or not new.reg_id:
            return True
        return old.reg_id == new.reg_id  # RFC 5626 §6: (AoR, instance, reg-id)
    if _same_push(old, new):
        return True
    if old.instance or new.instance:
        return False
    return same_contact_uri(old.contact, new.contact)


def _same_push(a: Binding, b: Binding) -> bool:
    return (
        a.push is not None
        and b.push is not None
        and a.push.provider == b.push.provider
        and a.push.prid == b.push.prid
    )


def _put(result: list[Binding], matches: list[Binding], new: Binding) -> list[Binding]:
    """``result`` without ``matches``, with ``new`` in the place of the first match (a
    refresh keeps its position) or at the end."""
    if not matches:
        return [*result, new]
    out: list[Binding] = []
    placed = False
    for b in result:
        if _contains(matches, b):
            if not placed:
                out.append(new)
                placed = True
        else:
            out.append(b)
    return out


def _contains(items: list[Binding], item: Binding) -> bool:
    # Identity, not equality: two stored bindings may compare equal field by field.
    return any(x is item for x in items)


def _push_query(uri_params: Params, header_params: Params) -> tuple[str, ...] | None:
    """RFC 8599 §4.1.5: pn-provider without pn-prid asks which services we support.
    Returns the provider named (lower-cased), ``()`` for "all", None if not a query."""
    for params in (uri_params, header_params):
        if "pn-provider" in params:
            if "pn-prid" in uri_params or "pn-prid" in header_params:
                return None
            value = (params["pn-provider"] or "").strip('"').lower()
            return (value,) if value else ()
    return None


def _option_tags(request: Request, name: str) -> frozenset[str]:
    return frozenset(t.strip().lower() for t in request.headers.get_all(name))


def _delta_seconds(value: str | None, name: str) -> int:
    text = (value or "").strip()
    if not text.isdigit():
        raise ParseError(f"bad {name}")
    return _MAX_DELTA if len(text) > 10 else min(int(text), _MAX_DELTA)


def _format_q(q: float) -> str:
    return f"{q:.3f}".rstrip("0").rstrip(".") or "0"


def _lower(value: str | None) -> str:
    return (value or "").lower()
