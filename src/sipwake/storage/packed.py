"""Stored bindings as plain tuples: what the in-memory stores keep between requests.

The SQLite store keeps every binding in memory (sqlite.py), the memory store too. Kept as
``Binding`` objects, each binding is three objects the cyclic GC tracks (the binding, its
FlowRef, the tuple holding them), and every full collection walks them all: with the
bindings of a REGISTER ladder stored, full passes of 67-140 ms stalled the event loop,
long enough for the UDP queue to hold datagrams past ``overload.max_udp_delay`` and for
REGISTERs to be refused 503. A tuple holding only strings, numbers, None and such tuples
is untracked by the collector once it has seen it (CPython untracks such tuples in every
young collection), so bindings kept packed cost no collection anything, at any count.

A packed binding is its fields in ``Binding``'s field order without ``aor`` (the store's
key), its FlowRef and PushTarget packed the same way. The field lists are read from the
classes (``fields_of``), so a field added there is packed without a change here.
"""

from __future__ import annotations

from operator import attrgetter
from typing import Any

from sipwake.policy.bindings import Binding, FlowRef, PushTarget, fields_of

Packed = tuple[Any, ...]  # one binding, without its AoR
Stored = tuple[Packed, ...]  # the bindings of one AoR

_NAMES = tuple(name for name, _ in fields_of(Binding))
assert _NAMES[0] == "aor", "Binding(aor, *packed) needs aor first"
_get = attrgetter(*_NAMES[1:])
_get_flow = attrgetter(*(name for name, _ in fields_of(FlowRef)))
_get_push = attrgetter(*(name for name, _ in fields_of(PushTarget)))
_FLOW = _NAMES.index("flow") - 1
_PUSH = _NAMES.index("push") - 1
EXPIRES = _NAMES.index("expires_at") - 1  # a packed binding's expiry, read without unpacking


def pack(bindings: list[Binding] | tuple[Binding, ...]) -> Stored:
    return tuple(_pack(b) for b in bindings)


def _pack(b: Binding) -> Packed:
    row: Packed = _get(b)
    flow, push = row[_FLOW], row[_PUSH]
    if flow is None and push is None:
        return row
    out = list(row)
    if flow is not None:
        out[_FLOW] = _get_flow(flow)
    if push is not None:
        out[_PUSH] = _get_push(push)
    return tuple(out)


def unpack(aor: str, stored: Stored, now: float | None = None) -> list[Binding]:
    """The bindings of ``aor``; with ``now``, only those still valid then (RFC 3261 §10.3:
    a binding whose expiration has passed is removed), the others not even unpacked."""
    return [_unpack(aor, row) for row in stored if now is None or row[EXPIRES] > now]


def _unpack(aor: str, row: Packed) -> Binding:
    flow, push = row[_FLOW], row[_PUSH]
    if flow is None and push is None:
        return Binding(aor, *row)
    out = list(row)
    if flow is not None:
        out[_FLOW] = FlowRef(*flow)
    if push is not None:
        out[_PUSH] = PushTarget(*push)
    return Binding(aor, *out)


def expired(stored: Stored, now: float) -> int:
    """How many of these bindings have expired at ``now`` (purge_expired), none unpacked."""
    return sum(1 for row in stored if row[EXPIRES] <= now)
