"""The flow table on its own: ids, reuse keys, aliases, removal."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from sipwake.transport.connections import FlowTable, flow_key, normalise_host
from sipwake.transport.flow import Flow


@dataclass
class Conn:
    """A stand-in connection: the table only reads these attributes."""

    flow: Flow
    last_activity: float = 0.0
    closing: bool = False

    def write(self, data: bytes) -> bool:
        return not self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing


def _conn(
    table: FlowTable, transport: str = "TCP", remote: tuple[str, int] = ("10.0.0.1", 5060)
) -> Conn:
    conn = Conn(Flow(transport, ("127.0.0.1", 5060), remote, table.new_id()))
    table.add(conn)
    return conn


def test_normalise_host() -> None:
    assert normalise_host("[::1]") == "::1"
    assert normalise_host("0:0::1") == "::1"
    assert normalise_host("Example.COM") == "example.com"
    assert normalise_host("127.0.0.1") == "127.0.0.1"
    assert flow_key("TCP", "[0::1]", 5060) == ("TCP", "::1", 5060)


def test_lookup_get_and_remove() -> None:
    table = FlowTable()
    a = _conn(table)
    assert table.get(a.flow.conn_id) is a
    assert table.lookup("TCP", "10.0.0.1", 5060) is a
    assert table.lookup("TLS", "10.0.0.1", 5060) is None  # transport is part of the key
    assert table.is_alive(a.flow)
    a.close()
    assert table.get(a.flow.conn_id) is None and not table.is_alive(a.flow)
    assert table.remove(a) and not table.remove(a)
    assert len(table) == 0 and table.lookup("TCP", "10.0.0.1", 5060) is None


def test_newest_live_connection_wins() -> None:
    table = FlowTable()
    old = _conn(table)
    new = _conn(table)
    assert old.flow.conn_id != new.flow.conn_id
    assert table.lookup("TCP", "10.0.0.1", 5060) is new
    new.close()  # closing, not yet removed: the older live one is used
    assert table.lookup("TCP", "10.0.0.1", 5060) is old
    table.remove(new)
    assert table.lookup("TCP", "10.0.0.1", 5060) is old
    table.remove(old)
    assert table.lookup("TCP", "10.0.0.1", 5060) is None


def test_alias_by_dialled_name() -> None:
    table = FlowTable()
    conn = _conn(table, remote=("::1", 5061), transport="TLS")
    table.alias(flow_key("TLS", "Proxy.Example.com", 5061), conn.flow.conn_id)
    assert table.lookup("TLS", "proxy.example.com", 5061) is conn
    assert table.lookup("TLS", "[::1]", 5061) is conn
    table.alias(flow_key("TLS", "other", 1), 999)  # unknown id: ignored
    assert table.lookup("TLS", "other", 1) is None
    table.remove(conn)
    assert table.lookup("TLS", "proxy.example.com", 5061) is None


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 3)), max_size=40))
def test_table_matches_a_model(ops: list[tuple[bool, int]]) -> None:
    # Add (True) or remove the oldest (False) connection to one of four peers; the table
    # must always map a peer to its newest remaining connection, as a dict of lists would.
    table = FlowTable()
    model: dict[int, list[Conn]] = {}
    for add, peer in ops:
        remote = ("192.0.2.1", 5000 + peer)
        conns = model.setdefault(peer, [])
        if add:
            conns.append(_conn(table, remote=remote))
        elif conns:
            table.remove(conns.pop(0))
        assert table.lookup("TCP", *remote) is (conns[-1] if conns else None)
        assert len(table) == sum(len(c) for c in model.values())
