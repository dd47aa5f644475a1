"""Which flow a call to a binding goes over (app/targets.py binding_flow, binding_target):
issue 10 item 1, the connection a binding registered on wins over its Contact."""

from __future__ import annotations

import pytest

from sipwake.app.targets import binding_flow, binding_target
from sipwake.policy.bindings import FlowRef, PushTarget
from sipwake.transport.flow import Flow
from tests.storage.util import binding


def conn(transport: str, port: int = 40000, conn_id: int = 9) -> FlowRef:
    return FlowRef(transport, "192.0.2.1", port, "10.0.0.1", 5061, conn_id)


@pytest.mark.parametrize("transport", ["TCP", "TLS", "WS", "WSS"])
def test_connection_is_used_whatever_the_contact_says(transport: str) -> None:
    # linphone over TLS: Contact port 5071 (nobody listens there once the app was woken),
    # REGISTER from an ephemeral port. The INVITE must go back over that connection.
    for contact in (
        f"sip:alice@192.0.2.1:5071;transport={transport.lower()}",  # same host, other port
        "sip:alice@198.51.100.7:5071;transport=tls",  # another host (NAT)
        "sip:alice@192.0.2.1;transport=tcp",  # default port
    ):
        b = binding(reg_id=0, contact=contact, flow=conn(transport))
        assert binding_flow(b) == Flow(transport, ("10.0.0.1", 5061), ("192.0.2.1", 40000), 9)


def test_udp_contact_on_another_listener_of_the_host_gets_the_contact() -> None:
    b = binding(reg_id=0, contact="sip:alice@192.0.2.1:5080", flow=conn("UDP", 5060, 0))
    assert binding_flow(b) is None
    # ...but the very address the REGISTER came from, or reg-id, or NAT: the flow.
    same = binding(reg_id=0, contact="sip:alice@192.0.2.1:5060", flow=conn("UDP", 5060, 0))
    assert binding_flow(same) is not None
    natted = binding(reg_id=0, contact="sip:alice@10.1.1.1:5060", flow=conn("UDP", 5060, 0))
    assert binding_flow(natted) is not None
    outbound = binding(reg_id=1, contact="sip:alice@192.0.2.1:5080", flow=conn("UDP", 5060, 0))
    assert binding_flow(outbound) is not None


def test_no_flow_means_the_contact() -> None:
    assert binding_flow(binding(flow=None)) is None


def test_only_a_binding_without_push_target_falls_back_to_its_contact() -> None:
    # A push binding whose connection is gone is pushed (Pusher.sleeping), never
    # reached by a new connection to a Contact a sleeping app does not serve.
    pushed = binding(reg_id=0, flow=conn("TLS"), push=PushTarget("apns", "ab" * 32))
    plain = binding(reg_id=0, flow=conn("TLS"), push=None)
    assert binding_target(pushed).contact_fallback is False
    assert binding_target(plain).contact_fallback is True
    assert binding_target(pushed).flow == binding_target(plain).flow is not None
