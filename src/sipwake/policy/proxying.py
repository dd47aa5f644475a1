"""Proxy request handling rules, pure (RFC 3261 §16.3 validation, §16.4 route
information preprocessing, §16.6 request forwarding transforms)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final

from sipwake.sip.errors import ProtocolError
from sipwake.sip.headers import Via
from sipwake.sip.message import Request
from sipwake.sip.uri import URI
from sipwake.sip.values import Value

# Option tags we implement (RFC 3261 §19.2); anything else in Proxy-Require gets 420.
SUPPORTED_OPTIONS = frozenset({"path", "outbound", "gruu"})


class TooManyHops(ProtocolError):
    STATUS = 483
    REASON = "Too Many Hops"


class LoopDetected(ProtocolError):
    STATUS = 482
    REASON = "Loop Detected"


class BadExtension(ProtocolError):
    STATUS = 420
    REASON = "Bad Extension"

    def __init__(self, unsupported: list[str]) -> None:
        super().__init__(", ".join(unsupported))
        self.unsupported = unsupported


@dataclass(frozen=True, slots=True)
class Me:
    """How this proxy recognises itself in URIs and Vias."""

    hosts: frozenset[str]  # lower-case hosts/addresses that are us (no brackets)
    ports: frozenset[int]  # ports we listen on

    def is_me(self, uri: URI) -> bool:
        if uri.host.strip("[]").lower() not in self.hosts:
            return False
        return uri.port is None or uri.port in self.ports

    def via_is_me(self, via: Via) -> bool:
        return via.host.strip("[]").lower() in self.hosts and (
            via.port is None or via.port in self.ports
        )


def loop_hash(request: Request) -> str:
    """Hash of the fields a loop leaves unchanged (RFC 3261 §16.6 step 8: To tag, From tag,
    Call-ID, CSeq number, Request-URI, Route and Proxy-Require), carried in our branch so
    a request that comes back with them unchanged is a loop, not a spiral (§16.3 step 4)."""
    h = hashlib.blake2s(digest_size=6)
    h.update(request.uri.encode())
    h.update(request.call_id.encode())
    h.update(str(request.cseq.seq).encode())
    h.update((request.from_.tag or "").encode())
    h.update((request.to.tag or "").encode())
    for key in ("route", "proxy-require"):
        for v in request.headers.get_lines(key):
            h.update(v.encode())
    return h.hexdigest()


def validate_request(request: Request, me: Me, lhash: str) -> None:
    """§16.3 steps 3-5: Max-Forwards, loop detection, Proxy-Require. ``lhash`` is
    ``loop_hash`` of the request as received (before any route preprocessing)."""
    mf = request.max_forwards
    if mf is not None and mf <= 0:
        raise TooManyHops("Max-Forwards exhausted")
    vias = request.vias
    if len(vias) > 1 and any(me.via_is_me(v) for v in vias):
        # Our Via is in the request: a loop if the request is the same as when we sent it
        # (spiral otherwise: the Request-URI or route changed, §16.3 step 4).
        for v in vias:
            branch = v.branch or ""
            if me.via_is_me(v) and branch.endswith("." + lhash):
                raise LoopDetected("request came back unchanged")
    required = [
        tag.strip()
        for line in request.headers.get_lines("proxy-require")
        for tag in line.split(",")
        if tag.strip()
    ]
    unsupported = [t for t in required if t.lower() not in SUPPORTED_OPTIONS]
    if unsupported:
        raise BadExtension(unsupported)


class ForwardPlan(Value):
    """What to put on a forwarded copy (§16.6). An immutable value. A plain class, not a
    dataclass: one is made per forwarded request, and mypyc compiles a hand-written
    ``__init__`` where a dataclass's stays interpreted (sip/flows.py Flow)."""

    __slots__ = ("path", "record_route", "target", "via")

    target: Final[str]  # new Request-URI (None: keep)
    via: Final[str]  # our Via value, with the branch already in it
    record_route: Final[tuple[str, ...]]  # our Record-Route value(s), topmost first
    path: Final[tuple[str, ...]]  # Route set to push towards the target (RFC 3327)

    def __init__(
        self,
        target: str,
        via: str,
        record_route: tuple[str, ...] = (),
        path: tuple[str, ...] = (),
    ) -> None:
        self.target = target
        self.via = via
        self.record_route = record_route
        self.path = path

    def _items(self) -> tuple[tuple[str, object], ...]:
        return (
            ("target", self.target),
            ("via", self.via),
            ("record_route", self.record_route),
            ("path", self.path),
        )


def forward_copy(request: Request, plan: ForwardPlan) -> Request:
    """A copy of ``request`` transformed for one target (§16.6 steps 1-8)."""
    headers = request.headers.copy()
    fwd = Request(request.method, request.uri, headers, request.body, request.version)
    if plan.target and plan.target != request.uri:
        fwd.set_uri(plan.target)
    mf = request.max_forwards
    headers.set("Max-Forwards", str(mf - 1) if mf is not None else "70")
    for rr in reversed(plan.record_route):
        headers.prepend("Record-Route", rr)
    if plan.path:
        existing = headers.get_all("route")
        headers.remove("Route")
        for value in (*plan.path, *existing):
            headers.add("Route", value)
    headers.prepend("Via", plan.via)
    return fwd


def make_branch(unique: str, lhash: str) -> str:
    """RFC 3261 branch (magic cookie) with the loop hash appended after a dot."""
    return f"z9hG4bK{unique}.{lhash}"
