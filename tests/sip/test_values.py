"""sip/values.py: the immutable plain classes compare, hash and print by their fields, as
the frozen dataclasses they replaced did (run on the pure and the compiled build)."""

from __future__ import annotations

from sipwake.app.targets import Target
from sipwake.policy.proxying import ForwardPlan
from sipwake.policy.pushparams import ApnsParam


def test_equal_by_fields_and_hashable() -> None:
    a = Target("sip:bob@192.0.2.1", "dev-1", path=("<sip:p1>",))
    b = Target("sip:bob@192.0.2.1", "dev-1", path=("<sip:p1>",))
    assert a == b
    assert (a != b) is False  # __ne__ follows __eq__
    assert hash(a) == hash(b) and {a: 1}[b] == 1
    assert a != Target("sip:bob@192.0.2.1", "dev-2", path=("<sip:p1>",))


def test_different_classes_with_the_same_fields_differ() -> None:
    plan = ForwardPlan("sip:x@h", "SIP/2.0/UDP h;branch=z9hG4bK1")
    assert plan != ApnsParam("sip:x@h", "SIP/2.0/UDP h;branch=z9hG4bK1", ())
    assert plan != ("sip:x@h", "SIP/2.0/UDP h;branch=z9hG4bK1", (), ())


def test_repr_names_the_fields_in_constructor_order() -> None:
    assert repr(ApnsParam("TEAM1", "com.example.app", ("voip",))) == (
        "ApnsParam(team_id='TEAM1', bundle_id='com.example.app', services=('voip',))"
    )
