"""Binding blob codec: lossless, compact, tolerant of schema evolution, strict on junk."""

from __future__ import annotations

import inspect
import typing

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipwake.policy.bindings import REQUIRED, Binding, FlowRef, PushTarget, fields_of
from sipwake.sip.values import Value
from sipwake.storage.base import StorageError
from sipwake.storage.codec import FORMAT_VERSION, decode_bindings, encode_bindings, key_clashes
from sipwake.storage.codec_fields import BindingFields, FlowRefFields, PushTargetFields

from .util import binding

text = st.text(max_size=20)
flows = st.builds(
    FlowRef,
    transport=st.sampled_from(["UDP", "TCP", "TLS", "WS", "WSS"]),
    remote_host=text,
    remote_port=st.integers(0, 65535),
    local_host=text,
    local_port=st.integers(0, 65535),
    conn_id=st.integers(0, 2**40),
    node_id=text,
)
pushes = st.builds(
    PushTarget,
    provider=text,
    prid=text,
    param=text,
    purr=text,
    alert_prid=text,
    app_id=text,
)
finite = st.floats(allow_nan=False, allow_infinity=False)
bindings = st.builds(
    Binding,
    aor=st.just("sip:a@example.com"),
    contact=text,
    expires_at=finite,
    call_id=text,
    cseq=st.integers(0, 2**31),
    q=finite,
    instance=text,
    reg_id=st.integers(0, 2**31),
    path=st.lists(text, max_size=3).map(tuple),
    flow=st.none() | flows,
    push=st.none() | pushes,
    user_agent=text,
    registered_at=finite,
    extra=st.lists(st.tuples(text, text), max_size=3).map(tuple),
)


@given(st.lists(bindings, max_size=4))
def test_round_trip(items: list[Binding]) -> None:
    assert decode_bindings("sip:a@example.com", encode_bindings(items)) == items


@pytest.mark.parametrize(
    ("cls", "shape"),
    [(Binding, BindingFields), (FlowRef, FlowRefFields), (PushTarget, PushTargetFields)],
)
def test_decoded_shape_follows_the_class(cls: type[Value], shape: type) -> None:
    """The TypedDict msgspec checks stored bindings against names every field of the
    class, requires exactly those without a default and, where the constructor's own
    annotations survive (pure Python; mypyc erases them), gives each the same type."""
    fields = fields_of(cls)
    assert set(typing.get_type_hints(shape)) == {name for name, _ in fields}
    required = {name for name, default in fields if default is REQUIRED}
    assert shape.__required_keys__ == required  # type: ignore[attr-defined]
    params = inspect.signature(cls).parameters
    if all(isinstance(p.annotation, str) for p in params.values()):
        nested = {
            "FlowRef | None": FlowRefFields | None,
            "PushTarget | None": PushTargetFields | None,
        }
        hints = typing.get_type_hints(shape)
        own = typing.get_type_hints(cls.__init__)
        for name, _ in fields:
            want = nested.get(params[name].annotation)
            assert hints[name] == (want or own[name]), name


def test_every_stored_key_is_unique() -> None:
    assert key_clashes() == []


def test_defaults_and_aor_are_not_stored() -> None:
    minimal = Binding("sip:a@example.com", "sip:a@192.0.2.1", 10.0, "c", 1)
    blob = encode_bindings([minimal])
    assert msgspec.msgpack.decode(blob) == [
        FORMAT_VERSION,
        [{"c": "sip:a@192.0.2.1", "e": 10.0, "i": "c", "n": 1}],
    ]
    assert len(encode_bindings([binding()])) < 400


def test_unknown_keys_ignored_missing_keys_defaulted() -> None:
    """A blob written by a newer version (extra field) or an older one (fewer fields)."""
    blob = msgspec.msgpack.encode(
        [FORMAT_VERSION, [{"c": "sip:x", "e": 5.0, "i": "id", "n": 2, "future_field": [1, 2]}]]
    )
    assert decode_bindings("sip:a@b", blob) == [Binding("sip:a@b", "sip:x", 5.0, "id", 2)]


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"\xc1",
        msgspec.msgpack.encode([FORMAT_VERSION + 1, []]),
        msgspec.msgpack.encode([FORMAT_VERSION, [{"c": "sip:x"}]]),  # required fields missing
        msgspec.msgpack.encode([FORMAT_VERSION, [{"c": 1, "e": 5.0, "i": "x", "n": 1}]]),
    ],
)
def test_junk_is_a_storage_error(blob: bytes) -> None:
    with pytest.raises(StorageError):
        decode_bindings("sip:a@b", blob)
