"""The registrar decision (RFC 3261 §10.3, RFC 5626 §6, RFC 3327, RFC 8599 §5.6.1)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipwake.policy.bindings import Binding, FlowRef, PushTarget
from sipwake.policy.pushparams import parse_push_target
from sipwake.policy.registrar import (
    RegisterOutcome,
    RegistrarPolicy,
    aor_of,
    contact_header_values,
    decide_register,
    same_contact_uri,
)
from sipwake.sip.codec import parse_message
from sipwake.sip.errors import ParseError
from sipwake.sip.message import Request
from sipwake.sip.uri import URI, NameAddr, Params

AOR = "sip:alice@example.com"
FLOW = FlowRef("TCP", "192.0.2.10", 40000, conn_id=7)
NOW = 1_000_000.0
INSTANCE = "urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6"


def fake_push_parser(uri: URI, params: Params) -> PushTarget | None:
    """Reads pn-provider/pn-prid from the URI; ``pn-prid=bad`` is malformed."""
    prid = uri.params.get("pn-prid")
    if prid is None:
        return None
    if prid == "bad":
        raise ParseError("pn-prid: not a token")
    return PushTarget(uri.params.get("pn-provider") or "", prid)


POLICY = RegistrarPolicy()
PUSH = RegistrarPolicy(push_parser=fake_push_parser, supported_providers=frozenset({"apns", "fcm"}))


def register(
    *contacts: str,
    call_id: str = "call-1",
    cseq: int = 1,
    expires: int | None = None,
    extra: Sequence[str] = (),
) -> Request:
    lines = [
        "REGISTER sip:example.com SIP/2.0",
        "Via: SIP/2.0/TCP 192.0.2.10:40000;branch=z9hG4bK776asdhds",
        "Max-Forwards: 70",
        "From: <sip:alice@example.com>;tag=456248",
        "To: <sip:alice@example.com>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        "User-Agent: TestPhone/1.0",
        *(f"Contact: {c}" for c in contacts),
        *([f"Expires: {expires}"] if expires is not None else []),
        *extra,
        "Content-Length: 0",
    ]
    msg = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(msg, Request)
    return msg


def decide(
    current: list[Binding],
    request: Request,
    policy: RegistrarPolicy = POLICY,
    now: float = NOW,
    flow: FlowRef = FLOW,
) -> tuple[list[Binding], RegisterOutcome]:
    return decide_register(policy, current, request, AOR, flow, now)


def one(request: Request, policy: RegistrarPolicy = POLICY, now: float = NOW) -> Binding:
    new, outcome = decide([], request, policy, now)
    assert outcome.status == 200, outcome.reason
    assert len(new) == 1
    return new[0]


def contacts_of(bindings: Sequence[Binding]) -> list[str]:
    return [b.contact for b in bindings]


# -- contact list forms ---------------------------------------------------------------------


def test_query_without_contact_lists_bindings_and_changes_nothing() -> None:
    current = [one(register("<sip:alice@192.0.2.10:5060>"))]
    new, outcome = decide(current, register(cseq=2), now=NOW + 10)
    assert outcome.status == 200
    assert new == current
    assert outcome.bindings == tuple(current)
    assert (outcome.added, outcome.removed) == ((), ())


def test_new_binding_stores_everything() -> None:
    b = one(
        register(
            '"Alice" <sip:alice@192.0.2.10:40000;transport=tcp>;q=0.5'
            f';+sip.instance="<{INSTANCE}>";reg-id=1;+sip.pnsreg;foo=Bar',
            call_id="cid",
            cseq=7,
            expires=600,
        )
    )
    assert b.aor == AOR
    assert b.contact == "sip:alice@192.0.2.10:40000;transport=tcp"
    assert b.expires_at == NOW + 600
    assert (b.call_id, b.cseq, b.q) == ("cid", 7, 0.5)
    assert (b.instance, b.reg_id) == (INSTANCE, 1)
    assert b.flow == FLOW
    assert b.user_agent == "TestPhone/1.0"
    assert b.registered_at == NOW
    assert b.extra == (("+sip.pnsreg", ""), ("foo", "Bar"))
    assert b.push is None


def test_several_contacts_on_lines_and_in_comma_lists() -> None:
    new, outcome = decide(
        [],
        register(
            "<sip:a@192.0.2.1>, <sip:b@192.0.2.2>;expires=120",
            "<sip:c@192.0.2.3>",
            expires=300,
        ),
    )
    assert outcome.status == 200
    assert contacts_of(new) == ["sip:a@192.0.2.1", "sip:b@192.0.2.2", "sip:c@192.0.2.3"]
    assert [b.expires_at - NOW for b in new] == [300, 120, 300]
    assert outcome.added == tuple(new)


def test_expires_param_beats_header_beats_default() -> None:
    policy = RegistrarPolicy(default_expires=900)
    assert one(register("<sip:a@h>;expires=100", expires=200), policy).expires_at == NOW + 100
    assert one(register("<sip:a@h>", expires=200), policy).expires_at == NOW + 200
    assert one(register("<sip:a@h>"), policy).expires_at == NOW + 900


def test_expires_zero_removes_only_that_binding() -> None:
    current, _ = decide([], register("<sip:a@h1>", "<sip:b@h2>"))
    new, outcome = decide(current, register("<sip:a@h1>;expires=0", cseq=2))
    assert contacts_of(new) == ["sip:b@h2"]
    assert outcome.removed == (current[0],)
    assert outcome.added == ()


def test_removing_an_unknown_contact_is_a_no_op() -> None:
    current = [one(register("<sip:a@h1>"))]
    new, outcome = decide(current, register("<sip:zz@h9>", expires=0, cseq=2))
    assert outcome.status == 200
    assert new == current


def test_wildcard_with_expires_zero_removes_all() -> None:
    current, _ = decide([], register("<sip:a@h1>", "<sip:b@h2>"))
    new, outcome = decide(current, register("*", expires=0, cseq=2))
    assert (outcome.status, new, outcome.bindings) == (200, [], ())
    assert outcome.removed == tuple(current)


@pytest.mark.parametrize(
    ("contacts", "expires"),
    [(("*",), None), (("*",), 60), (("*", "<sip:a@h>"), 0), (("*, <sip:a@h>",), 0)],
)
def test_wildcard_not_alone_or_without_expires_zero_is_400(
    contacts: tuple[str, ...], expires: int | None
) -> None:
    current = [one(register("<sip:a@h1>"))]
    new, outcome = decide(current, register(*contacts, expires=expires, cseq=2))
    assert outcome.status == 400
    assert new == current


def test_wildcard_checks_call_id_and_cseq_of_every_binding() -> None:
    current = [one(register("<sip:a@h1>", call_id="x", cseq=5))]
    new, outcome = decide(current, register("*", expires=0, call_id="x", cseq=5))
    assert outcome.status == 500
    assert new == current
    # Another Call-ID removes regardless of CSeq (§10.3 step 6).
    new, outcome = decide(current, register("*", expires=0, call_id="y", cseq=1))
    assert (outcome.status, new) == (200, [])


# -- expiry --------------------------------------------------------------------------------


def test_too_brief_is_423_with_min_expires_and_nothing_changes() -> None:
    current = [one(register("<sip:a@h1>"))]
    new, outcome = decide(current, register("<sip:b@h2>;expires=30", cseq=2))
    assert outcome.status == 423
    assert ("Min-Expires", "60") in outcome.headers
    assert new == current
    assert outcome.bindings == tuple(current)


def test_423_only_below_one_hour() -> None:
    # RFC 3261 §10.3: 423 only when the requested interval is under an hour.
    policy = RegistrarPolicy(min_expires=7200, max_expires=10000)
    assert one(register("<sip:a@h>;expires=3600"), policy).expires_at == NOW + 3600
    _, outcome = decide([], register("<sip:a@h>;expires=3599"), policy)
    assert outcome.status == 423


def test_long_expiry_is_clamped_to_max() -> None:
    assert one(register("<sip:a@h>", expires=86400)).expires_at == NOW + 3600
    # Beyond 2**32-1 (RFC 3261 §20.19) still clamps rather than failing.
    assert one(register("<sip:a@h>;expires=99999999999999")).expires_at == NOW + 3600


def test_push_binding_is_clamped_to_push_max() -> None:
    b = one(register("<sip:a@h;pn-provider=apns;pn-prid=tok>", expires=30 * 86400), PUSH)
    assert b.expires_at == NOW + 7 * 86400
    assert b.push == PushTarget("apns", "tok")


@pytest.mark.parametrize("contact", ["<sip:a@h>;expires=abc", "<sip:a@h>;expires"])
def test_bad_expires_param_is_400(contact: str) -> None:
    _, outcome = decide([], register(contact))
    assert outcome.status == 400
    assert "expires" in (outcome.reason or "")


def test_expired_bindings_in_current_are_ignored() -> None:
    old = one(register("<sip:a@h1>", call_id="x", cseq=9, expires=100))
    later = NOW + 200
    # Expired: same Call-ID with a lower CSeq is no reordering, it is a new binding.
    new, outcome = decide([old], register("<sip:a@h1>", call_id="x", cseq=1), now=later)
    assert outcome.status == 200
    assert outcome.replaced == ()
    assert new == list(outcome.added)
    _, query = decide([old], register(cseq=10), now=later)
    assert query.bindings == ()


# -- ordering (§10.3 step 7) -----------------------------------------------------------------


def test_refresh_with_higher_cseq_updates() -> None:
    old = one(register("<sip:a@h1>", call_id="x", cseq=1))
    new, outcome = decide([old], register("<sip:a@h1>", call_id="x", cseq=2), now=NOW + 5)
    assert outcome.status == 200
    assert len(new) == 1
    assert new[0].expires_at == NOW + 5 + 3600
    assert new[0].cseq == 2
    assert outcome.replaced == (old,)


@pytest.mark.parametrize("cseq", [1, 0])
def test_same_call_id_without_higher_cseq_is_500(cseq: int) -> None:
    old = one(register("<sip:a@h1>", call_id="x", cseq=1))
    new, outcome = decide([old], register("<sip:a@h1>", "<sip:b@h2>", call_id="x", cseq=cseq))
    assert outcome.status == 500
    assert new == [old]  # the other Contact is not added either: all or nothing


def test_different_call_id_updates_whatever_the_cseq() -> None:
    old = one(register("<sip:a@h1>", call_id="x", cseq=50))
    new, outcome = decide([old], register("<sip:a@h1>", call_id="y", cseq=1))
    assert outcome.status == 200
    assert (new[0].call_id, new[0].cseq) == ("y", 1)


def test_same_contact_twice_in_one_request_keeps_the_last() -> None:
    new, outcome = decide([], register("<sip:a@h1>;expires=100", "<sip:a@h1>;expires=200"))
    assert outcome.status == 200
    assert [b.expires_at - NOW for b in new] == [200]
    assert outcome.added == tuple(new)


# -- binding identity --------------------------------------------------------------------------


def test_instance_and_reg_id_replace_even_with_another_contact() -> None:
    old = one(register(f'<sip:a@192.0.2.1:5060>;+sip.instance="<{INSTANCE}>";reg-id=1'))
    new, outcome = decide(
        [old],
        register(f'<sip:a@198.51.100.7:6000>;+sip.instance="<{INSTANCE}>";reg-id=1', cseq=2),
    )
    assert contacts_of(new) == ["sip:a@198.51.100.7:6000"]
    assert outcome.replaced == (old,)
    assert ("Require", "outbound") in outcome.headers


def test_instance_without_reg_id_replaces_the_device_binding() -> None:
    # A woken phone re-registers from a new port and with a new Call-ID.
    other = one(register("<sip:bob@192.0.2.99>", call_id="other"))
    old = one(register(f'<sip:a@192.0.2.1:5060>;+sip.instance="<{INSTANCE}>"'))
    new, outcome = decide(
        [other, old],
        register(f'<sip:a@192.0.2.1:41234>;+sip.instance="{INSTANCE}"', call_id="after-wake"),
    )
    assert contacts_of(new) == ["sip:bob@192.0.2.99", "sip:a@192.0.2.1:41234"]
    assert new[1].instance == INSTANCE
    assert outcome.replaced == (old,)
    assert ("Require", "outbound") not in outcome.headers


def test_distinct_instances_coexist() -> None:
    a = one(register('<sip:a@h>;+sip.instance="<urn:uuid:1>"'))
    new, _ = decide([a], register('<sip:a@h>;+sip.instance="<urn:uuid:2>"', call_id="2"))
    assert [b.instance for b in new] == ["urn:uuid:1", "urn:uuid:2"]


def test_reg_ids_are_separate_flows_when_configured() -> None:
    policy = RegistrarPolicy(one_flow_per_instance=False)
    f1 = f'<sip:a@h:1>;+sip.instance="<{INSTANCE}>";reg-id=1'
    f2 = f'<sip:a@h:2>;+sip.instance="<{INSTANCE}>";reg-id=2'
    current, _ = decide([], register(f1), policy)
    new, _ = decide(current, register(f2, cseq=2), policy)
    assert [b.reg_id for b in new] == [1, 2]
    # The default keeps one binding per instance (one branch per device when forking).
    new, _ = decide(current, register(f2, cseq=2))
    assert [b.reg_id for b in new] == [2]


def test_reg_id_without_instance_is_ignored() -> None:
    b = one(register("<sip:a@h>;reg-id=1"))
    assert b.reg_id == 0


def test_reg_id_with_several_contacts_is_400() -> None:
    _, outcome = decide(
        [], register(f'<sip:a@h:1>;+sip.instance="<{INSTANCE}>";reg-id=1', "<sip:b@h:2>")
    )
    assert outcome.status == 400


def test_reg_id_behind_proxy_without_ob() -> None:
    contact = f'<sip:a@h>;+sip.instance="<{INSTANCE}>";reg-id=1'
    path = "Path: <sip:edge.example.com;lr>"
    _, outcome = decide([], register(contact, extra=[path, "Supported: outbound, path"]))
    assert outcome.status == 439
    # Without outbound in Supported the reg-id is ignored instead (RFC 5626 §6).
    new, outcome = decide([], register(contact, extra=[path]))
    assert (outcome.status, new[0].reg_id) == (200, 0)
    new, outcome = decide(
        [], register(contact, extra=["Path: <sip:edge.example.com;lr;ob>", "Supported: outbound"])
    )
    assert (outcome.status, new[0].reg_id) == (200, 1)


def test_same_push_token_without_instance_is_the_same_device() -> None:
    old = one(register("<sip:a@192.0.2.1:5060;pn-provider=apns;pn-prid=tok>"), PUSH)
    new, outcome = decide(
        [old], register("<sip:a@203.0.113.5:1111;pn-provider=apns;pn-prid=tok>", cseq=2), PUSH
    )
    assert contacts_of(new) == ["sip:a@203.0.113.5:1111;pn-provider=apns;pn-prid=tok"]
    assert outcome.replaced == (old,)


def test_push_token_matches_across_instance_and_no_instance() -> None:
    old = one(register("<sip:a@h1;pn-provider=fcm;pn-prid=tok>"), PUSH)
    new, _ = decide(
        [old],
        register(f'<sip:a@h2;pn-provider=fcm;pn-prid=tok>;+sip.instance="<{INSTANCE}>"', cseq=2),
        PUSH,
    )
    assert [b.device_key for b in new] == [f"instance:{INSTANCE}"]


def test_rotated_token_with_same_uri_is_not_merged() -> None:
    # RFC 3261 §19.1.4: pn-prid in both URIs with different values -> different URIs.
    old = one(register("<sip:a@h;pn-provider=fcm;pn-prid=t1>"), PUSH)
    new, _ = decide([old], register("<sip:a@h;pn-provider=fcm;pn-prid=t2>", cseq=2), PUSH)
    assert [b.push.prid for b in new if b.push] == ["t1", "t2"]


def test_uri_comparison_without_instance_or_push() -> None:
    old = one(register("<sip:a@HOST.example:5060;transport=TCP>"))
    new, outcome = decide([old], register("<sip:a@host.example:5060;transport=tcp;x=1>", cseq=2))
    assert len(new) == 1
    assert outcome.replaced == (old,)
    new, _ = decide([old], register("<sip:a@host.example;transport=tcp>", cseq=2))  # no port
    assert len(new) == 2


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        ("sip:a@h", "sip:a@H", True),
        ("sip:a@h", "sip:A@h", False),
        ("sip:a@h", "sip:a@h:5060", False),
        ("sip:a@h", "sips:a@h", False),
        ("sip:a@h;transport=udp", "sip:a@h", False),
        ("sip:a@h;maddr=x", "sip:a@h", False),
        ("sip:a@h;foo=1", "sip:a@h", True),
        ("sip:a@h;foo=1", "sip:a@h;foo=2", False),
        ("sip:a@h;foo=ABC", "sip:a@h;FOO=abc", True),
        ("sip:a@h?subject=x", "sip:a@h", False),
        ("tel:+123", "tel:+123", True),
        ("not a uri", "sip:a@h", False),
    ],
)
def test_same_contact_uri(a: str, b: str, equal: bool) -> None:
    assert same_contact_uri(a, b) is equal
    assert same_contact_uri(b, a) is equal


# -- Path (RFC 3327) -----------------------------------------------------------------------------


def test_path_stored_in_order_and_echoed_when_supported() -> None:
    paths = ["Path: <sip:p1.example.com;lr>", "Path: <sip:p2.example.com;lr>"]
    new, outcome = decide([], register("<sip:a@h>", extra=[*paths, "Supported: path"]))
    assert new[0].path == ("<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>")
    assert [v for k, v in outcome.headers if k == "Path"] == list(new[0].path)


def test_path_stored_but_not_echoed_without_support() -> None:
    new, outcome = decide([], register("<sip:a@h>", extra=["Path: <sip:p1;lr>, <sip:p2;lr>"]))
    assert new[0].path == ("<sip:p1;lr>", "<sip:p2;lr>")
    assert all(k != "Path" for k, _ in outcome.headers)


def test_refresh_without_path_drops_the_old_path() -> None:
    old = one(register("<sip:a@h>", extra=["Path: <sip:p1;lr>"]))
    new, _ = decide([old], register("<sip:a@h>", cseq=2))
    assert new[0].path == ()


# -- push (RFC 8599) -------------------------------------------------------------------------------


def test_push_binding_gets_feature_caps_with_its_provider() -> None:
    new, outcome = decide([], register("<sip:a@h;pn-provider=fcm;pn-prid=tok;pn-param=proj>"), PUSH)
    assert outcome.status == 200
    assert new[0].push == PushTarget("fcm", "tok")
    assert [v for k, v in outcome.headers if k == "Feature-Caps"] == ['*;+sip.pns="fcm"']


def test_plain_binding_with_push_configured_gets_no_feature_caps() -> None:
    _, outcome = decide([], register("<sip:a@h>"), PUSH)
    assert outcome.status == 200
    assert all(k != "Feature-Caps" for k, _ in outcome.headers)


def test_unsupported_provider_is_555_and_bindings_stay() -> None:
    current = [one(register("<sip:a@h1>"))]
    new, outcome = decide(current, register("<sip:a@h2;pn-provider=hms;pn-prid=t>"), PUSH)
    assert outcome.status == 555
    assert new == current
    assert all(k != "Feature-Caps" for k, _ in outcome.headers)  # RFC 8599 §8.1


def test_push_not_configured_is_555() -> None:
    policy = RegistrarPolicy(push_parser=fake_push_parser)
    _, outcome = decide([], register("<sip:a@h;pn-provider=apns;pn-prid=t>"), policy)
    assert outcome.status == 555


def test_without_push_parser_pn_params_are_just_uri_params() -> None:
    b = one(register("<sip:a@h;pn-provider=hms;pn-prid=t>"))
    assert b.push is None


def test_malformed_push_param_is_400_naming_it() -> None:
    current = [one(register("<sip:a@h1>"))]
    new, outcome = decide(current, register("<sip:a@h2;pn-provider=apns;pn-prid=bad>"), PUSH)
    assert outcome.status == 400
    assert "pn-prid" in (outcome.reason or "")
    assert new == current


def test_removal_is_never_refused_for_an_unsupported_provider() -> None:
    old = one(register("<sip:a@h;pn-provider=apns;pn-prid=t>"), PUSH)
    policy = dataclasses.replace(PUSH, supported_providers=frozenset({"fcm"}))
    new, outcome = decide(
        [old], register("<sip:a@h;pn-provider=apns;pn-prid=t>;expires=0", cseq=2), policy
    )
    assert (outcome.status, new) == (200, [])


def test_query_for_all_providers() -> None:
    _, outcome = decide([], register("<sip:a@h;pn-provider>"), PUSH)
    assert outcome.status == 200
    caps = [v for k, v in outcome.headers if k == "Feature-Caps"]
    assert caps == ['*;+sip.pns="apns"', '*;+sip.pns="fcm"']


def test_query_for_one_provider() -> None:
    _, outcome = decide([], register("<sip:a@h;pn-provider=FCM>"), PUSH)
    assert [v for k, v in outcome.headers if k == "Feature-Caps"] == ['*;+sip.pns="fcm"']
    _, outcome = decide([], register("<sip:a@h;pn-provider=webpush>"), PUSH)
    assert outcome.status == 555
    _, outcome = decide(
        [], register("<sip:a@h;pn-provider>"), RegistrarPolicy(push_parser=fake_push_parser)
    )
    assert outcome.status == 555


def test_refresh_without_pn_params_drops_the_push_target() -> None:
    # Issue 10 item 3: an app that turned push off re-registers without pn-*; a REGISTER
    # replaces the binding's contact and its push target (RFC 3261 §10.3 step 7).
    contact = f'<sip:a@h:1;pn-provider=apns;pn-prid=tok>;+sip.instance="<{INSTANCE}>"'
    old = one(register(contact, expires=86400), PUSH)
    new, outcome = decide(
        [old], register(f'<sip:a@h:2>;+sip.instance="<{INSTANCE}>"', cseq=2, expires=86400), PUSH
    )
    assert len(new) == 1 and new[0].push is None
    assert new[0].contact == "sip:a@h:2"
    assert new[0].expires_at == NOW + 3600  # no longer a push binding: the plain cap
    assert outcome.replaced == (old,)
    # Pushes back on: the next REGISTER with pn-* makes it a push binding again.
    again, _ = decide(new, register(contact, cseq=3, expires=86400), PUSH)
    assert (again[0].push, again[0].expires_at) == (PushTarget("apns", "tok"), NOW + 86400)
    # pn-provider without pn-prid: the UA turns pushes off (RFC 8599 §4.1.2).
    new, _ = decide(
        [old], register(f'<sip:a@h:2;pn-provider=apns>;+sip.instance="<{INSTANCE}>"', cseq=2), PUSH
    )
    assert new[0].push is None


def test_real_push_parser_wiring() -> None:
    policy = RegistrarPolicy(push_parser=parse_push_target, supported_providers=frozenset({"apns"}))
    token = "ab" * 32
    contact = f"<sip:a@h;pn-provider=apns.dev;pn-prid={token};pn-param=TEAM.org.app.voip>"
    new, outcome = decide([], register(contact), policy)
    assert outcome.status == 200
    assert new[0].push is not None and new[0].push.prid == token
    assert ("Feature-Caps", '*;+sip.pns="apns.dev"') in outcome.headers
    _, outcome = decide([], register("<sip:a@h;pn-provider=apns;pn-prid=zz>"), policy)
    assert outcome.status == 400
    assert "pn-prid" in (outcome.reason or "")


# -- per-AoR cap -----------------------------------------------------------------------------------


def test_over_the_cap_evicts_the_oldest_non_push_binding() -> None:
    policy = dataclasses.replace(PUSH, max_bindings_per_aor=3)
    current: list[Binding] = []
    for i, contact in enumerate(
        ["<sip:push@h1;pn-provider=apns;pn-prid=t>", "<sip:old@h2>", "<sip:mid@h3>"]
    ):
        current, _ = decide(current, register(contact, call_id=str(i)), policy, now=NOW + i)
    new, outcome = decide(current, register("<sip:new@h4>", call_id="n"), policy, now=NOW + 10)
    assert contacts_of(new) == [
        "sip:push@h1;pn-provider=apns;pn-prid=t",
        "sip:mid@h3",
        "sip:new@h4",
    ]
    assert outcome.evicted == (current[1],)
    assert outcome.removed == outcome.evicted


def test_push_bindings_are_evicted_only_when_nothing_else_is_left() -> None:
    policy = dataclasses.replace(PUSH, max_bindings_per_aor=2)
    current, _ = decide(
        [],
        register("<sip:a@h1;pn-provider=fcm;pn-prid=1>", "<sip:b@h2;pn-provider=fcm;pn-prid=2>"),
        policy,
    )
    new, outcome = decide(current, register("<sip:c@h3>", call_id="n"), policy, now=NOW + 1)
    assert len(new) == 2
    assert outcome.evicted == (current[0],)


def test_more_contacts_in_one_request_than_the_cap_is_403() -> None:
    policy = RegistrarPolicy(max_bindings_per_aor=1)
    _, outcome = decide([], register("<sip:a@h1>", "<sip:b@h2>"), policy)
    assert outcome.status == 403


# -- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "contact", ["<sip:a@h>;q=1.5", "<sip:a@h>;q=abc", "<sip:a@h>;q=0.1234", "<sip:a@h>;q"]
)
def test_bad_q_is_400(contact: str) -> None:
    _, outcome = decide([], register(contact))
    assert outcome.status == 400
    assert "q" in (outcome.reason or "")


@pytest.mark.parametrize("q", ["0", "0.5", "1", "1.000", "0.125"])
def test_good_q(q: str) -> None:
    assert one(register(f"<sip:a@h>;q={q}")).q == float(q)


@pytest.mark.parametrize(
    "contact",
    ["<sip:a@h>;+sip.instance", '<sip:a@h>;+sip.instance="<>"', "<sip:a@h>;reg-id=0", "<sip:a@h"],
)
def test_bad_contact_params_are_400(contact: str) -> None:
    _, outcome = decide([], register(contact))
    assert outcome.status == 400


def test_bad_expires_header_is_400() -> None:
    request = register("<sip:a@h>")
    request.headers.add("Expires", "soon")
    _, outcome = decide([], request)
    assert outcome.status == 400


# -- response helpers ------------------------------------------------------------------------------


def test_contact_header_values() -> None:
    new, _ = decide(
        [],
        register(
            f'<sip:a@h;transport=tcp>;q=0.5;+sip.instance="<{INSTANCE}>";reg-id=1;+sip.pnsreg',
            expires=600,
        ),
    )
    values = contact_header_values(new, NOW + 100.4)
    assert values == [
        f'<sip:a@h;transport=tcp>;expires=500;q=0.5;+sip.instance="<{INSTANCE}>"'
        ";reg-id=1;+sip.pnsreg"
    ]
    # Each value parses back to the registered URI (RFC 3261 §10.2.4: the UA finds its own).
    assert str(NameAddr.parse(values[0]).uri) == new[0].contact
    assert contact_header_values(new, NOW + 600) == []
    assert contact_header_values(new, NOW + 599.9) == [values[0].replace("=500", "=1")]


@pytest.mark.parametrize(
    ("to", "aor"),
    [
        ("<sip:alice@Example.COM:5070;transport=tcp>", "sip:alice@example.com"),
        ('"A" <sips:alice@example.com>;tag=1', "sip:alice@example.com"),
        ("<sip:%61lice@example.com>", "sip:alice@example.com"),
        ("<sip:a%3bb@example.com>", "sip:a%3Bb@example.com"),
        ("sip:Alice@example.com", "sip:Alice@example.com"),
    ],
)
def test_aor_of(to: str, aor: str) -> None:
    request = register()
    request.headers.set("To", to)
    assert aor_of(request) == aor


# -- property ------------------------------------------------------------------------------

_contact = st.builds(
    lambda user, port, inst, prid, exp: (
        f"<sip:{user}@192.0.2.1:{port}"
        + (f";pn-provider=apns;pn-prid={prid}" if prid else "")
        + ">"
        + (f';+sip.instance="<urn:uuid:{inst}>"' if inst else "")
        + (f";expires={exp}" if exp is not None else "")
    ),
    st.sampled_from(["a", "b", "c"]),
    st.sampled_from([5060, 5061, 6000]),
    st.sampled_from(["", "1", "2"]),
    st.sampled_from(["", "t1", "t2"]),
    st.sampled_from([None, 0, 30, 120, 3600, 10**6]),
)
_register = st.tuples(
    st.lists(_contact, max_size=4),
    st.sampled_from(["c1", "c2", "c3"]),
    st.integers(min_value=1, max_value=6),
    st.sampled_from([0.0, 1.0, 200.0, 5000.0]),
    st.booleans(),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_register, min_size=1, max_size=12))
def test_property_no_duplicate_devices_no_expired_never_over_cap(
    steps: list[tuple[list[str], str, int, float, bool]],
) -> None:
    policy = dataclasses.replace(PUSH, max_bindings_per_aor=3, min_expires=60)
    state: list[Binding] = []
    now = NOW
    for contacts, call_id, cseq, advance, wildcard in steps:
        now += advance
        request = register("*", expires=0) if wildcard else register(*contacts)
        request.headers.set("Call-ID", call_id)
        request.headers.set("CSeq", f"{cseq} REGISTER")
        live = [b for b in state if b.expires_at > now]
        new, outcome = decide_register(policy, state, request, AOR, FLOW, now)
        keys = [b.device_key for b in new]
        assert len(keys) == len(set(keys))
        assert all(b.expires_at > now for b in new)
        assert len(new) <= policy.max_bindings_per_aor
        assert outcome.bindings == tuple(new)
        if outcome.status != 200:
            assert new == live
            assert outcome.added == outcome.removed == ()
        state = new


def test_webpush_feature_caps_carry_our_vapid_key() -> None:
    # RFC 8599 §5.6.1.1, §12 (issue 10 item 8): the browser app learns the key to subscribe
    # with; other providers never get it, and without a key nothing is invented.
    key = "BC3u" + "A" * 83
    policy = RegistrarPolicy(
        push_parser=fake_push_parser,
        supported_providers=frozenset({"apns", "webpush"}),
        vapid_public_key=key,
    )
    _, outcome = decide([], register("<sip:a@h;pn-provider=webpush;pn-prid=p1>"), policy)
    assert ("Feature-Caps", f'*;+sip.pns="webpush";+sip.vapid="{key}"') in outcome.headers
    _, outcome = decide([], register("<sip:a@h;pn-provider>"), policy)  # query: every type
    assert ("Feature-Caps", '*;+sip.pns="apns"') in outcome.headers
    assert ("Feature-Caps", f'*;+sip.pns="webpush";+sip.vapid="{key}"') in outcome.headers
    no_key = dataclasses.replace(policy, vapid_public_key="")
    _, outcome = decide([], register("<sip:a@h;pn-provider=webpush;pn-prid=p1>"), no_key)
    assert ("Feature-Caps", '*;+sip.pns="webpush"') in outcome.headers


def test_pnsreg_offered_only_to_a_ua_that_can_refresh_by_itself() -> None:
    # RFC 8599 §5.6.1.1 (issue 10 item 5): +sip.pnsreg tag in the Contact -> the 200's
    # Feature-Caps carries +sip.pnsreg="<seconds>".
    policy = dataclasses.replace(PUSH, pnsreg=130)
    contact = "<sip:a@h;pn-provider=apns;pn-prid=t1>;+sip.pnsreg"
    _, outcome = decide([], register(contact), policy)
    assert ("Feature-Caps", '*;+sip.pns="apns";+sip.pnsreg="130"') in outcome.headers
    _, outcome = decide([], register("<sip:a@h;pn-provider=apns;pn-prid=t1>"), policy)
    assert ("Feature-Caps", '*;+sip.pns="apns"') in outcome.headers
    _, outcome = decide([], register(contact), dataclasses.replace(policy, pnsreg=0))
    assert ("Feature-Caps", '*;+sip.pns="apns"') in outcome.headers


def test_flow_timer_only_for_an_outbound_registration() -> None:
    # RFC 5626 §5.4: Flow-Timer goes with Require: outbound (a REGISTER with reg-id).
    policy = dataclasses.replace(POLICY, flow_timer=25)
    outbound = f'<sip:a@h>;+sip.instance="<{INSTANCE}>";reg-id=1'
    _, outcome = decide([], register(outbound), policy)
    assert ("Require", "outbound") in outcome.headers
    assert ("Flow-Timer", "25") in outcome.headers
    _, outcome = decide([], register("<sip:a@h>"), policy)
    assert not [h for h in outcome.headers if h[0] == "Flow-Timer"]
    _, outcome = decide([], register(outbound), POLICY)
    assert not [h for h in outcome.headers if h[0] == "Flow-Timer"]
