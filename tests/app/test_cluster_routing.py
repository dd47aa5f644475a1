"""ClusterNode's routing decisions, without sockets: which bindings go through the node
that owns their connection, with what Route, and which count as reachable."""

from __future__ import annotations

from sipwake.app.cluster import ClusterNode
from sipwake.policy.bindings import FlowRef, evolve
from sipwake.policy.flowtoken import decode_owner
from sipwake.sip.flows import Flow
from sipwake.sip.uri import URI
from sipwake.storage.cluster import LocalCluster
from tests.storage.util import binding

SECRET = b"k" * 32


class SharedCluster(LocalCluster):
    shared = True  # stands in for Redis: node ids in bindings mean something


def node(shared: bool = True, alive: bool = True) -> ClusterNode:
    c = ClusterNode(
        SharedCluster() if shared else LocalCluster(),
        node_id="node-b",
        route="10.0.0.2:5060;transport=tcp",
        secret=SECRET,
        is_alive=lambda ref: alive,
    )
    c.peers = {"node-a": "10.0.0.1:5070;transport=tcp", "node-b": c.route}
    return c


def test_foreign_flow_goes_through_its_owner() -> None:
    b = binding()  # reg-id and a flow owned by node-a
    t = node().target(b)
    assert t.flow is None
    hop = URI.parse(t.path[0].strip("<>"))
    assert (hop.host, hop.port, hop.transport) == ("10.0.0.1", 5070, "tcp")
    assert "lr" in hop.params
    assert decode_owner(SECRET, hop.user) == Flow(
        "TCP", ("10.0.0.1", 5060), ("192.0.2.1", 40000), 7
    )
    assert t.path[1:] == b.path  # the binding's own Path follows
    assert t.uri == b.contact and t.device == b.device_key


def test_own_flow_and_single_node_use_the_flow_directly() -> None:
    mine = binding(flow=FlowRef("TCP", "192.0.2.1", 40000, "10.0.0.2", 5060, 9, "node-b"))
    assert node().target(mine).flow is not None
    assert node().target(mine).path == mine.path
    # One node (SQLite/memory): a node id left from another name routes nowhere else.
    assert node(shared=False).target(binding()).flow is not None


def test_contact_reachable_directly_needs_no_owner() -> None:
    # UDP, no reg-id, and the Contact is another listener on the host the REGISTER came
    # from (app/router.py binding_flow): RFC 3261 sends to the Contact, which any node can.
    b = binding(
        reg_id=0,
        contact="sip:alice@192.0.2.1:5080",
        flow=FlowRef("UDP", "192.0.2.1", 40000, "10.0.0.1", 5060, 0, "node-a"),
    )
    t = node().target(b)
    assert t.flow is None and t.path == b.path


def test_connection_binding_goes_through_its_owner_whatever_the_contact() -> None:
    # Over TCP the registration's connection is the way to the device (issue 10 item 1).
    b = binding(reg_id=0, contact="sip:alice@192.0.2.1:5080;transport=tcp")
    t = node().target(b)
    assert t.flow is None and len(t.path) == len(b.path) + 1


def test_owner_gone_means_no_route_and_not_alive() -> None:
    announced = binding().flow
    assert announced is not None
    gone = evolve(announced, node_id="node-z")
    b = evolve(binding(), flow=gone)
    n = node()
    t = n.target(b)
    assert t.flow is None and t.path == b.path
    assert not n.flow_alive(gone)
    assert n.flow_alive(announced)  # node-a is in the registry


def test_local_liveness_is_asked_of_the_transport() -> None:
    mine = FlowRef("TCP", "192.0.2.1", 40000, "10.0.0.2", 5060, 9, "node-b")
    assert node(alive=True).flow_alive(mine)
    assert not node(alive=False).flow_alive(mine)
