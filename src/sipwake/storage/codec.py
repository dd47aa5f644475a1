"""Binding list <-> bytes, shared by the SQLite and Redis backends.

Format: msgpack ``[FORMAT_VERSION, [binding-map, ...]]``, one blob per AoR.

* Maps keyed by field name rather than positional arrays: stored bindings outlive the code
  that wrote them (rolling upgrades, a downgrade after a bad release), and a map decodes
  correctly after fields are added, removed or reordered in ``Binding`` (unknown keys are
  ignored, missing ones take their defaults). Positional arrays would be ~30 % smaller but
  silently misread after any reordering.
* Keys are short codes from the tables below; a field missing from a table (added to
  ``Binding`` later) is written under its full name, so new fields work before anyone
  gives them a code. Codes are never reused for a different field.
* Fields equal to their default are left out and ``aor`` is not repeated (it is the key
  the blob is stored under). Together with the short keys this makes a typical push
  binding ~330 bytes instead of ~550.
* A leading format number leaves room for a different encoding later.
"""

from __future__ import annotations

import sys
from typing import Any

import msgspec

from sipwake.policy.bindings import REQUIRED, Binding, FlowRef, PushTarget, fields_of
from sipwake.sip.values import Value

from .base import StorageError
from .codec_fields import BindingFields

FORMAT_VERSION = 1

_MISSING = REQUIRED


# Stored key codes. Append only: never change or reuse a code (old blobs hold them).
BINDING_CODES = {
    "contact": "c",
    "expires_at": "e",
    "call_id": "i",
    "cseq": "n",
    "q": "q",
    "instance": "s",
    "reg_id": "r",
    "path": "p",
    "flow": "f",
    "push": "k",
    "user_agent": "u",
    "registered_at": "t",
    "extra": "x",
}
FLOW_CODES = {
    "transport": "t",
    "remote_host": "h",
    "remote_port": "p",
    "local_host": "lh",
    "local_port": "lp",
    "conn_id": "c",
    "node_id": "n",
}
PUSH_CODES = {
    "provider": "v",
    "prid": "p",
    "param": "m",
    "purr": "u",
    "alert_prid": "a",
    "app_id": "i",
}

# (field name, stored key, default or _MISSING) per class, computed once.
_Fields = tuple[tuple[str, str, Any], ...]


def _fields(cls: type[Value], codes: dict[str, str]) -> _Fields:
    return tuple((name, codes.get(name, name), default) for name, default in fields_of(cls))


_BINDING_FIELDS = _fields(Binding, BINDING_CODES)
_FLOW_FIELDS = _fields(FlowRef, FLOW_CODES)
_PUSH_FIELDS = _fields(PushTarget, PUSH_CODES)


def key_clashes() -> list[str]:
    """Stored keys used by two fields of one class (tests assert this is empty, so a
    field added to Binding whose name equals another field's code is caught)."""
    clashes: list[str] = []
    for table in (_BINDING_FIELDS, _FLOW_FIELDS, _PUSH_FIELDS):
        keys = [key for _, key, _ in table]
        clashes.extend(sorted({k for k in keys if keys.count(k) > 1}))
    return clashes


# Fields whose values repeat across thousands of bindings (one app, one server, a few
# user agents). The SQLite backend keeps every binding in memory, so sharing one string
# object per distinct value saves ~20 % of its RSS (bench/bench_store.py).
_INTERNED = frozenset({"user_agent", "transport", "local_host", "node_id", "provider", "param"})


def _expand(data: dict[str, Any], table: _Fields) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, key, _ in table:
        if key in data:
            value = data[key]
            if name in _INTERNED and type(value) is str:
                value = sys.intern(value)
            out[name] = value
    return out


_encoder = msgspec.msgpack.Encoder()
_raw_decoder = msgspec.msgpack.Decoder(tuple[int, list[dict[str, Any]]])


# What encoding writes per field, in field order: (name, stored key, default, plan of a
# nested dataclass or None). Computed once, so the per-binding loop below does no
# isinstance test and no name comparison; ``aor`` is left out (it is the row's key).
_EncodePlan = tuple[tuple[str, str, Any, Any], ...]


def _plan(table: _Fields, nested: dict[str, _EncodePlan], skip: str = "") -> _EncodePlan:
    return tuple(
        (name, key, default, nested.get(name)) for name, key, default in table if name != skip
    )


_FLOW_PLAN = _plan(_FLOW_FIELDS, {})
_PUSH_PLAN = _plan(_PUSH_FIELDS, {})
_BINDING_PLAN = _plan(_BINDING_FIELDS, {"flow": _FLOW_PLAN, "push": _PUSH_PLAN}, "aor")


def _compact(obj: Any, plan: _EncodePlan) -> dict[str, Any]:
    """``obj``'s fields by stored key, without those equal to their default (a nested
    binding class is left out when None, its default)."""
    out: dict[str, Any] = {}
    for name, key, default, nested in plan:
        value = getattr(obj, name)
        if nested is not None:
            if value is not None:
                out[key] = _compact(value, nested)
        elif default is _MISSING or value != default:
            out[key] = value
    return out


def encode_bindings(bindings: list[Binding] | tuple[Binding, ...]) -> bytes:
    """Encode the bindings of one AoR (all must share the same ``aor``)."""
    return _encoder.encode((FORMAT_VERSION, [_compact(b, _BINDING_PLAN) for b in bindings]))


def decode_bindings(aor: str, data: bytes) -> list[Binding]:
    """Inverse of ``encode_bindings``; a corrupt blob raises ``StorageError``."""
    try:
        version, items = _raw_decoder.decode(data)
        if version != FORMAT_VERSION:
            raise StorageError(f"binding blob format {version} not supported (aor {aor!r})")
        expanded = []
        for item in items:
            b = _expand(item, _BINDING_FIELDS)
            b["aor"] = aor
            if isinstance(flow := b.get("flow"), dict):
                b["flow"] = _expand(flow, _FLOW_FIELDS)
            if isinstance(push := b.get("push"), dict):
                b["push"] = _expand(push, _PUSH_FIELDS)
            expanded.append(b)
        checked: list[dict[str, Any]] = msgspec.convert(expanded, list[BindingFields])
        return [_binding(b) for b in checked]
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise StorageError(f"corrupt binding record for {aor!r}: {exc}") from exc


def _binding(fields: dict[str, Any]) -> Binding:
    """A Binding from fields msgspec has checked against ``BindingFields``."""
    flow = fields.get("flow")
    if flow is not None:
        fields["flow"] = FlowRef(**flow)
    push = fields.get("push")
    if push is not None:
        fields["push"] = PushTarget(**push)
    return Binding(**fields)
