"""Where requests came from and where responses go (RFC 3261 §18.2, RFC 3581), and the
one value that names such a path: ``Flow`` (what the transport hands the engine, what a
Record-Route flow token carries, what a stored binding's FlowRef converts to).

A Flow names the exact path a message came in on, so the answer can go back over it: the
same UDP socket to the same source address and port (RFC 3261 §18.2.2 with rport, RFC 3581),
or the very same TCP/TLS/WebSocket connection (RFC 3261 §18.2.2, RFC 5626 §5.3, RFC 7118 §5).
"""

from __future__ import annotations

from sipwake.sip.headers import TOP_VIA, Via
from sipwake.sip.message import Request


class Flow:
    """How a message arrived, or how to send one back. An immutable value (equal and
    hashed by its four fields). A plain class, not a dataclass: one is made per message,
    and mypyc compiles a hand-written ``__init__`` where a dataclass's stays interpreted."""

    __slots__ = ("conn_id", "local", "remote", "transport")

    transport: str  # "UDP" | "TCP" | "TLS" | "WS" | "WSS"
    local: tuple[str, int]  # our listening/local address
    remote: tuple[str, int]  # peer address as seen on the socket
    conn_id: int  # 0 for UDP; unique per stream/WS connection

    def __init__(
        self, transport: str, local: tuple[str, int], remote: tuple[str, int], conn_id: int = 0
    ) -> None:
        self.transport = transport
        self.local = local
        self.remote = remote
        self.conn_id = conn_id

    def with_remote(self, remote: tuple[str, int]) -> Flow:
        return Flow(self.transport, self.local, remote, self.conn_id)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Flow):
            return NotImplemented
        return (
            self.transport == other.transport
            and self.remote == other.remote
            and self.local == other.local
            and self.conn_id == other.conn_id
        )

    def __hash__(self) -> int:
        return hash((self.transport, self.local, self.remote, self.conn_id))

    def __repr__(self) -> str:
        return (
            f"Flow(transport={self.transport!r}, local={self.local!r}, "
            f"remote={self.remote!r}, conn_id={self.conn_id!r})"
        )

    @property
    def reliable(self) -> bool:
        # Only UDP needs retransmissions (RFC 3261 §17.1.1.2 Timer A is not started on a
        # reliable transport).
        return self.transport != "UDP"

    @property
    def secure(self) -> bool:
        # A request over TLS/WSS may be sips: (RFC 3261 §26.2.2, RFC 7118 §5.2).
        return self.transport in ("TLS", "WSS")

    def same_path(self, other: Flow) -> bool:
        """Same flow: the same connection, or for UDP the same peer address and socket."""
        if self.transport != other.transport:
            return False
        if self.transport == "UDP":
            return self.remote == other.remote and self.local[1] == other.local[1]
        return self.conn_id == other.conn_id


DEFAULT_PORTS = {"UDP": 5060, "TCP": 5060, "SCTP": 5060, "TLS": 5061, "WS": 80, "WSS": 443}


def _same_host(a: str, b: str) -> bool:
    return a.strip("[]").lower() == b.strip("[]").lower()


def stamp_via(via: Via, source_host: str, source_port: int) -> bool:
    """Add ``received`` when the sent-by host differs from the packet's source (RFC 3261
    §18.2.1) and fill an empty ``rport`` with the source port (RFC 3581 §4); True when
    ``via`` changed."""
    changed = False
    if not _same_host(via.host, source_host):
        via.params["received"] = source_host
        changed = True
    if "rport" in via.params and not via.params["rport"]:
        via.params["rport"] = str(source_port)
        via.params.setdefault("received", source_host)
        changed = True
    return changed


def stamp_received(request: Request, source_host: str, source_port: int) -> Via:
    """``stamp_via`` on the request's top Via. Rewrites the top Via only when something
    changed, so an untouched message is forwarded verbatim."""
    via = request.top_via
    if stamp_via(via, source_host, source_port):
        # Replace only the first value; the header may hold several comma-separated Vias.
        headers = request.headers
        vias = request.vias  # parsed by validate(), which comes first: from the cache
        headers.pop_first_value("via")
        headers.prepend("Via", str(via))
        # The parsed views are still right: no second parse of any Via (loop detection
        # reads them all, RFC 3261 §16.3 step 4).
        headers.seed(TOP_VIA, via)
        headers.seed("via", [via, *vias[1:]])
    return via


def response_address(via: Via) -> tuple[str, int]:
    """Address a response to this Via goes to over an unreliable transport (§18.2.2 with
    RFC 3581 §4): ``received`` (or sent-by) host, and the ``rport`` value if present, else
    the sent-by port, else the transport's default port."""
    host = via.params.get("received") or via.host
    rport = via.params.get("rport")
    if rport and rport.isdigit():
        return host.strip("[]"), int(rport)
    port = via.port if via.port is not None else DEFAULT_PORTS.get(via.transport, 5060)
    return host.strip("[]"), port
