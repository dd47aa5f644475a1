"""The binding values (policy/bindings.py) as plain classes: what the frozen dataclasses
gave them (fields, equality, hash, replace, asdict) still holds."""

from __future__ import annotations

import pytest

from sipwake.policy.bindings import (
    REQUIRED,
    Binding,
    FlowRef,
    PushTarget,
    as_dict,
    evolve,
    fields_of,
)
from sipwake.sip.values import Value

FLOW = FlowRef("TCP", "192.0.2.1", 40000, "127.0.0.1", 5060, conn_id=7, node_id="n1")
PUSH = PushTarget("apns", "token", "TEAM.app.voip", alert_prid="alert")
BINDING = Binding(
    "sip:alice@example.com",
    "sip:alice@192.0.2.1:40000;transport=tcp",
    1000.0,
    "call-1",
    5,
    instance="urn:uuid:1",
    reg_id=1,
    path=("<sip:edge.example.com;lr>",),
    flow=FLOW,
    push=PUSH,
    user_agent="ua",
    registered_at=900.0,
    extra=(("+sip.ice", ""),),
)


@pytest.mark.parametrize("value", [FLOW, PUSH, BINDING])
def test_fields_follow_the_constructor_and_items(value: Value) -> None:
    # The stores read the fields from the constructor (fields_of); evolve and as_dict from
    # _items(): both must name every field in the same order, or a stored binding would
    # lose one.
    names = [name for name, _ in fields_of(type(value))]
    assert names == [name for name, _ in value._items()]
    assert type(value)(**dict(value._items())) == value


def test_required_fields_and_defaults() -> None:
    fields = dict(fields_of(Binding))
    assert [n for n, d in fields.items() if d is REQUIRED] == [
        "aor", "contact", "expires_at", "call_id", "cseq",
    ]  # fmt: skip
    assert fields["q"] == 1.0 and fields["flow"] is None and fields["extra"] == ()


def test_equality_and_hash_by_fields() -> None:
    same = evolve(BINDING)
    assert same == BINDING and same is not BINDING
    assert hash(same) == hash(BINDING)
    assert len({BINDING, same, evolve(BINDING, cseq=6)}) == 2
    assert evolve(BINDING, flow=evolve(FLOW, conn_id=8)) != BINDING
    assert FlowRef("UDP", "h", 1) != PushTarget("UDP", "h")


def test_evolve_changes_only_what_it_is_told() -> None:
    moved = evolve(BINDING, flow=None, push=None)
    assert moved.flow is None and moved.push is None
    assert moved.contact == BINDING.contact and moved.extra == BINDING.extra
    assert BINDING.flow == FLOW  # the original is untouched
    with pytest.raises(TypeError, match="no field 'flwo'"):
        evolve(BINDING, flwo=None)


def test_as_dict_nests_the_flow_and_push_target() -> None:
    row = as_dict(BINDING)
    assert row["flow"] == {
        "transport": "TCP", "remote_host": "192.0.2.1", "remote_port": 40000,
        "local_host": "127.0.0.1", "local_port": 5060, "conn_id": 7, "node_id": "n1",
    }  # fmt: skip
    assert row["push"]["alert_prid"] == "alert"
    assert row["cseq"] == 5 and row["path"] == ("<sip:edge.example.com;lr>",)
    assert as_dict(evolve(BINDING, flow=None))["flow"] is None


def test_repr_names_the_fields() -> None:
    assert repr(FLOW).startswith("FlowRef(transport='TCP', remote_host='192.0.2.1'")
