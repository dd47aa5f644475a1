"""Where a branch goes: the target a binding names, and the flow that reaches it.

``binding_target`` turns a stored binding into a ``Target`` (Request-URI, device, flow,
Path); ``Flows.flow_for`` picks the transport flow to send over: the registered one while
it works, else one to the URI (RFC 3261 §18.1.1, §19.1.2 defaults).
"""

from __future__ import annotations

import asyncio
import socket
from typing import Final, Protocol

from sipwake.policy.bindings import Binding, FlowRef
from sipwake.sip.errors import ParseError
from sipwake.sip.flows import DEFAULT_PORTS
from sipwake.sip.uri import URI
from sipwake.sip.values import Value
from sipwake.transport.flow import Flow


class Target(Value):
    """Where one branch goes: the Request-URI, the device it reaches, and the flow it
    registered over (None: resolve the URI). An immutable value. A plain class, not a
    dataclass: one is made per branch, and mypyc compiles a hand-written ``__init__``
    where a dataclass's stays interpreted (sip/flows.py Flow)."""

    __slots__ = ("contact_fallback", "device", "flow", "path", "uri")

    uri: Final[str]
    device: Final[str]
    flow: Final[Flow | None]
    path: Final[tuple[str, ...]]
    # False: when ``flow`` is closed do not open a new one to ``uri`` (a push binding:
    # it is pushed instead, binding_target).
    contact_fallback: Final[bool]

    def __init__(
        self,
        uri: str,
        device: str,
        flow: Flow | None = None,
        path: tuple[str, ...] = (),
        contact_fallback: bool = True,
    ) -> None:
        self.uri = uri
        self.device = device
        self.flow = flow
        self.path = path
        self.contact_fallback = contact_fallback

    def _items(self) -> tuple[tuple[str, object], ...]:
        return (
            ("uri", self.uri),
            ("device", self.device),
            ("flow", self.flow),
            ("path", self.path),
            ("contact_fallback", self.contact_fallback),
        )


def ref_flow(ref: FlowRef) -> Flow:
    """The transport flow a stored binding names."""
    return Flow(
        ref.transport,
        (ref.local_host, ref.local_port),
        (ref.remote_host, ref.remote_port),
        ref.conn_id,
    )


def binding_flow(b: Binding) -> Flow | None:
    """The flow to reach a binding over, or None to send to its Contact URI.

    Over TCP, TLS, WS and WSS the connection the binding registered on is used for as long
    as it is open, whatever the Contact says: the Contact of a phone behind NAT, or of a
    woken app that listens on nothing, names an address nobody can connect to (RFC 5923
    §1 and RFC 5626 §5.3 reuse the connection; Kamailio fix_nated_register, OpenSIPS
    tcp_persistent_flag do the same). Flows.flow_for falls back to the Contact when the
    connection is gone, and only for a binding without a push target (binding_target).

    Over UDP RFC 3261 sends to the Contact. The registration's own flow is used instead
    when the UA asked for it (RFC 5626 outbound: reg-id), the contact names another host
    than the packet came from (NAT, as nathelper does), or the contact is the very address
    the REGISTER came from. A UA that registers on behalf of another listener on its host
    gets the Contact."""
    ref = b.flow
    if ref is None:
        return None
    flow = ref_flow(ref)
    if b.reg_id or ref.transport != "UDP":
        return flow
    try:
        uri = URI.parse(b.contact)
    except ParseError:
        return flow
    if uri.host.strip("[]").lower() != ref.remote_host.strip("[]").lower():
        return flow
    transport = (uri.transport or ("tls" if uri.scheme == "sips" else "udp")).upper()
    port = uri.port or DEFAULT_PORTS.get(transport, 5060)
    if port == ref.remote_port and transport == ref.transport:
        return flow
    return None


def binding_target(b: Binding) -> Target:
    # A push binding whose connection is gone is pushed (Pusher.sleeping), never reached
    # by a new connection to its Contact: a woken app listens on nothing.
    return Target(
        uri=b.contact,
        device=b.device_key,
        flow=binding_flow(b),
        path=b.path,
        contact_fallback=b.push is None,
    )


class Connector(Protocol):
    """What flow lookup needs of the transport layer."""

    def is_alive(self, flow: Flow) -> bool: ...

    async def connect(self, transport: str, host: str, port: int) -> Flow: ...


class Flows:
    """Flow lookup: the registered flow when it still works, else a flow to the URI."""

    def __init__(self, connector: Connector, advertised: dict[str, tuple[str, int]]) -> None:
        self.connector = connector
        self.advertised = advertised  # transport -> (host, port) we put in Via / RR

    def usable(self, flow: Flow) -> bool:
        return flow.transport == "UDP" or self.connector.is_alive(flow)

    async def flow_for(self, flow: Flow | None, uri_text: str, *, fallback: bool = True) -> Flow:
        """The registered flow when it still works, else a flow to the URI (§18.1.1),
        unless ``fallback`` is False (ValueError: the registered connection is gone)."""
        ready = self._ready(flow, uri_text, fallback=fallback)
        if ready is not None:
            return ready
        transport, host, port = _next_hop(uri_text)
        ip = await _resolve(host, port)
        if transport == "UDP":
            return Flow("UDP", self.advertised_local("UDP"), (ip, port))
        return await self.connector.connect(transport, ip, port)

    async def target_flow(self, target: Target) -> Flow:
        hop = target.path[0] if target.path else target.uri
        return await self.flow_for(target.flow, hop, fallback=target.contact_fallback)

    def known_flow(self, target: Target) -> Flow | None:
        """``target_flow`` when it needs no wait (the registered flow still works, or UDP
        to an IP address), else None: a name to resolve or a connection to open."""
        hop = target.path[0] if target.path else target.uri
        return self._ready(target.flow, hop, fallback=target.contact_fallback)

    def _ready(self, flow: Flow | None, uri_text: str, *, fallback: bool) -> Flow | None:
        if flow is not None and self.usable(flow):
            return flow
        if flow is not None and not fallback:
            raise ValueError("its connection is closed")
        transport, host, port = _next_hop(uri_text)
        if transport == "UDP" and _is_ip(host):
            return Flow("UDP", self.advertised_local("UDP"), (host, port))
        return None

    def advertised_local(self, transport: str) -> tuple[str, int]:
        try:
            return self.advertised[transport]
        except KeyError:
            raise ValueError(f"no {transport} listener to send from") from None


def _next_hop(uri_text: str) -> tuple[str, str, int]:
    """Transport, host and port to send to for a URI (§18.1.1, RFC 3263 without DNS)."""
    uri = URI.parse(uri_text.strip("<>").split(">")[0] if uri_text.startswith("<") else uri_text)
    transport = (uri.transport or ("tls" if uri.scheme == "sips" else "udp")).upper()
    return transport, uri.host.strip("[]"), uri.port or DEFAULT_PORTS.get(transport, 5060)


def _is_ip(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except OSError:
        return False
    return True


async def _resolve(host: str, port: int) -> str:
    if _is_ip(host):
        return host
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    if not infos:
        raise OSError(f"cannot resolve {host}")
    return str(infos[0][4][0])
