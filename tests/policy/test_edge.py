"""Edge mode's pure REGISTER rules (policy/edge.py): binding ids, throttling, the relayed
REGISTER, the upstream's expiry and the de-REGISTER we originate."""

from __future__ import annotations

from sipwake.policy import edge as rules
from sipwake.policy.bindings import Binding, FlowRef, evolve
from sipwake.policy.registrar import RegisterOutcome, RegistrarPolicy, decide_register
from sipwake.sip.codec import parse_message
from sipwake.sip.message import Request, Response
from tests.policy.test_registrar import AOR, INSTANCE, PUSH, register

SECRET = b"k" * 32
NOW = 1_000_000.0
TCP = FlowRef("TCP", "192.0.2.10", 40000, "198.51.100.1", 5060, conn_id=7)
UDP = FlowRef("UDP", "192.0.2.10", 40000, "198.51.100.1", 5060)
DEVICE = f'<sip:alice@192.0.2.10:40000;transport=tcp>;+sip.instance="<{INSTANCE}>"'
US = ("198.51.100.1", 5060, "UDP")


def decide(
    current: list[Binding],
    request: Request,
    flow: FlowRef = TCP,
    now: float = NOW,
    policy: RegistrarPolicy = PUSH,
) -> tuple[list[Binding], RegisterOutcome]:
    return decide_register(policy, current, request, AOR, flow, now)


def stored(
    flow: FlowRef = TCP, call_id: str = "call-1", cseq: int = 1, upstream: float = 3600
) -> Binding:
    """The device's binding as edge mode keeps it: the upstream's lifetime."""
    new, outcome = decide([], register(DEVICE, call_id=call_id, cseq=cseq, expires=600), flow)
    kept, _ = rules.with_upstream_expiry(
        new, outcome, {outcome.added[0].device_key: NOW + upstream}
    )
    return kept[0]


def response(text: str) -> Response:
    msg = parse_message(text.replace("\n", "\r\n").encode())
    assert isinstance(msg, Response)
    return msg


# -- binding ids ------------------------------------------------------------------------------


def test_binding_id_round_trips_and_rejects_forgeries() -> None:
    user = rules.binding_id(SECRET, AOR, "instance:" + INSTANCE)
    assert rules.parse_binding_id(SECRET, user) == (AOR, rules.device_hash("instance:" + INSTANCE))
    assert rules.parse_binding_id(b"x" * 32, user) is None  # another node's key
    assert rules.parse_binding_id(SECRET, user[:-1] + ("0" if user[-1] != "0" else "1")) is None
    assert rules.parse_binding_id(SECRET, "bob") is None
    assert rules.parse_binding_id(SECRET, None) is None


def test_binding_id_is_stable_per_device_and_differs_between_devices() -> None:
    a = rules.binding_id(SECRET, AOR, "instance:a")
    assert a == rules.binding_id(SECRET, AOR, "instance:a")
    assert a != rules.binding_id(SECRET, AOR, "instance:b")
    assert a != rules.binding_id(SECRET, "sip:bob@example.com", "instance:a")


def test_binding_of_finds_the_device_by_its_hash() -> None:
    b = stored()
    assert rules.binding_of([b], rules.device_hash(b.device_key)) is b
    assert rules.binding_of([b], rules.device_hash("instance:other")) is None


# -- throttling -------------------------------------------------------------------------------


def test_refresh_over_the_same_connection_is_answered_locally() -> None:
    old = stored()
    _, trial = decide([old], register(DEVICE, call_id="other", cseq=1, expires=600))
    assert rules.throttled(trial, register(DEVICE), TCP, NOW + 10, 300, use_path=False) is old


def test_refresh_same_call_id_higher_cseq_same_udp_address_is_local() -> None:
    old = stored(UDP, cseq=5)
    req = register(DEVICE, call_id="call-1", cseq=6, expires=600)
    _, trial = decide([old], req, UDP)
    assert rules.throttled(trial, req, UDP, NOW + 10, 300, use_path=False) is old


def test_same_cseq_or_other_call_id_over_udp_goes_upstream() -> None:
    old = stored(UDP, cseq=5)
    for req in (register(DEVICE, call_id="call-2", cseq=9), register(DEVICE, cseq=5)):
        assert not rules.may_answer_locally(old, req, UDP, NOW + 10, 300)


def test_new_connection_goes_upstream_even_with_the_same_call_id() -> None:
    """The wake REGISTER: a new connection; the upstream must authenticate it."""
    old = stored(TCP, cseq=5)
    new_conn = evolve(TCP, conn_id=8, remote_port=40001)
    req = register(DEVICE, call_id="call-1", cseq=6, expires=600)
    assert not rules.may_answer_locally(old, req, new_conn, NOW + 10, 300)


def test_other_udp_port_or_transport_or_node_goes_upstream() -> None:
    old = stored(UDP, cseq=5)
    req = register(DEVICE, call_id="call-1", cseq=6)
    for flow in (
        evolve(UDP, remote_port=40001),
        evolve(UDP, remote_host="192.0.2.11"),
        evolve(UDP, transport="TCP"),
        evolve(UDP, node_id="n2"),
    ):
        assert not rules.may_answer_locally(old, req, flow, NOW + 10, 300), flow


def test_close_to_the_upstream_expiry_goes_upstream() -> None:
    old = stored(upstream=3600)
    assert rules.may_answer_locally(old, register(DEVICE), TCP, NOW + 3299, 300)
    assert not rules.may_answer_locally(old, register(DEVICE), TCP, NOW + 3300, 300)


def test_de_register_new_device_or_two_contacts_are_never_throttled() -> None:
    old = stored()
    other = '<sip:alice@192.0.2.10:40002;transport=tcp>;+sip.instance="<urn:uuid:other>"'
    for req in (register(DEVICE, expires=0), register(other), register(DEVICE, other)):
        _, trial = decide([old], req)
        assert rules.throttled(trial, req, TCP, NOW + 10, 300, use_path=False) is None, req


def test_with_path_a_changed_contact_goes_upstream() -> None:
    old = stored()
    moved = f'<sip:alice@192.0.2.10:40009;transport=tcp>;+sip.instance="<{INSTANCE}>"'
    req = register(moved, cseq=2)
    _, trial = decide([old], req)
    assert rules.throttled(trial, req, TCP, NOW + 10, 300, use_path=False) is old
    assert rules.throttled(trial, req, TCP, NOW + 10, 300, use_path=True) is None


# -- stored expiry ----------------------------------------------------------------------------


def test_only_upstream_confirmed_bindings_are_stored_with_the_upstream_lifetime() -> None:
    other = '<sip:alice@192.0.2.10:40002;transport=tcp>;+sip.instance="<urn:uuid:other>"'
    new, outcome = decide([], register(DEVICE, other, expires=600))
    keys = [b.device_key for b in outcome.added]
    kept, out = rules.with_upstream_expiry(new, outcome, {keys[0]: NOW + 90})
    assert [b.device_key for b in kept] == [keys[0]]
    assert kept[0].expires_at == NOW + 90
    assert out.added == tuple(kept) and out.bindings == tuple(kept)


def test_device_is_told_the_shorter_of_its_own_and_the_upstream_lifetime() -> None:
    b = stored(upstream=3600)
    asked = evolve(b, expires_at=NOW + 600)
    assert rules.shown_expiry(asked, b).expires_at == NOW + 600
    assert rules.shown_expiry(b, asked).expires_at == NOW + 600


def test_upstream_expiry_read_from_the_2xx_contact_then_expires_then_default() -> None:
    _, trial = decide([], register(DEVICE, expires=600))
    [c] = rules.upstream_contacts(SECRET, AOR, trial, us=US, expires=3600, use_path=False)
    ok = "SIP/2.0 200 OK\nVia: SIP/2.0/UDP x;branch=z9hG4bK1\nFrom: <sip:a@b>;tag=1\n"
    ok += "To: <sip:a@b>;tag=2\nCall-ID: c\nCSeq: 1 REGISTER\n"
    ours = c.value.replace("=3600", "=1800")
    listed = ok + f"Contact: <sip:other@h>;expires=50, {ours}\n"
    got = rules.upstream_expiries(response(listed + "Content-Length: 0\n\n"), [c], NOW, 3600)
    assert got == {c.device_key: NOW + 1800}
    header = ok + "Expires: 120\nContent-Length: 0\n\n"
    assert rules.upstream_expiries(response(header), [c], NOW, 3600) == {c.device_key: NOW + 120}
    bare = ok + "Content-Length: 0\n\n"
    assert rules.upstream_expiries(response(bare), [c], NOW, 3600) == {c.device_key: NOW + 3600}


# -- the relayed REGISTER and our de-REGISTER -------------------------------------------------


def test_relayed_register_keeps_credentials_and_names_us_per_device() -> None:
    auth = (
        'Authorization: Digest username="alice", realm="example.com", nonce="n", '
        'uri="sip:example.com", response="r"'
    )
    req = register(
        DEVICE, expires=600, extra=[auth, "Supported: outbound, path", "Route: <sip:x;lr>"]
    )
    _, trial = decide([], req)
    contacts = rules.upstream_contacts(SECRET, AOR, trial, us=US, expires=3600, use_path=False)
    out = rules.upstream_register(
        req,
        target=str(req.uri),
        via="SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bKx",
        contacts=[c.value for c in contacts],
    )
    text = out.serialise().decode()
    assert text.startswith("REGISTER sip:example.com SIP/2.0\r\n")
    assert out.headers.get_all("Via") == ["SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bKx"]
    assert out.headers.get("Authorization") == auth.split(": ", 1)[1]
    assert (out.call_id, out.cseq.seq) == (req.call_id, req.cseq.seq)
    assert out.max_forwards == 69
    assert "route" not in out.headers and "supported" not in out.headers
    assert "expires" not in out.headers
    [contact] = out.contacts
    assert contact.params["expires"] == "3600"
    assert rules.parse_binding_id(SECRET, contact.uri.user) is not None
    assert (contact.uri.host, contact.uri.port) == ("198.51.100.1", 5060)
    assert "pn-prid" not in str(contact.uri)  # the legacy box never sees push tokens


def test_path_mode_sends_the_device_contact_and_our_path() -> None:
    req = register(DEVICE, expires=600)
    _, trial = decide([], req)
    [c] = rules.upstream_contacts(SECRET, AOR, trial, us=US, expires=3600, use_path=True)
    assert c.value.startswith("<sip:alice@192.0.2.10:40000;transport=tcp>")
    path = f"<{rules.our_uri(c.user, *US, lr=True)}>"
    out = rules.upstream_register(
        req,
        target="sip:example.com",
        via="SIP/2.0/UDP h;branch=z9hG4bKy",
        contacts=[c.value],
        path=[path],
    )
    assert out.headers.get("Path") == path and out.headers.get("Supported") == "path"


def test_de_register_relays_expires_zero_for_each_removed_device() -> None:
    old = stored()
    req = register("*", expires=0, cseq=2)
    _, trial = decide([old], req)
    [c] = rules.upstream_contacts(SECRET, AOR, trial, us=US, expires=3600, use_path=False)
    assert c.value.endswith(";expires=0") and c.device_key == old.device_key


def test_our_de_register_continues_the_device_call_id() -> None:
    b = stored(cseq=7)
    req = rules.deregister_request(
        b,
        target="sip:example.com",
        via="SIP/2.0/UDP h;branch=z9hG4bKz",
        contact="sip:se-1@h",
        from_tag="t",
    )
    assert (req.call_id, req.cseq.seq, req.expires) == (b.call_id, 8, 0)
    assert req.contacts[0].params["expires"] == "0"
    assert req.to.uri.aor() == AOR == req.from_.uri.aor()


def test_challenge_and_min_expires_go_back_to_the_device() -> None:
    r = response(
        "SIP/2.0 401 Unauthorized\nVia: SIP/2.0/UDP x;branch=z9hG4bK1\nFrom: <sip:a@b>;tag=1\n"
        "To: <sip:a@b>;tag=2\nCall-ID: c\nCSeq: 1 REGISTER\n"
        'WWW-Authenticate: Digest realm="r", nonce="n"\n'
        "Min-Expires: 60\nServer: legacy\nContent-Length: 0\n\n"
    )
    assert [n.lower() for n, _ in rules.relayed_back(r)] == ["www-authenticate", "min-expires"]
