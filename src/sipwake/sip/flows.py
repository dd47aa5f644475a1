"""Where requests came from and where responses go (RFC 3261 §18.2, RFC 3581)."""

from __future__ import annotations

from sipwake.sip.headers import TOP_VIA, Via
from sipwake.sip.message import Request

DEFAULT_PORTS = {"UDP": 5060, "TCP": 5060, "SCTP": 5060, "TLS": 5061, "WS": 80, "WSS": 443}


def _same_host(a: str, b: str) -> bool:
    return a.strip("[]").lower() == b.strip("[]").lower()


def stamp_received(request: Request, source_host: str, source_port: int) -> Via:
    """Add ``received`` when the sent-by host differs from the packet's source (RFC 3261
    §18.2.1) and fill an empty ``rport`` with the source port (RFC 3581 §4). Rewrites the
    top Via only when something changed, so an untouched message is forwarded verbatim."""
    via = request.top_via
    changed = False
    if not _same_host(via.host, source_host):
        via.params["received"] = source_host
        changed = True
    if "rport" in via.params and not via.params["rport"]:
        via.params["rport"] = str(source_port)
        via.params.setdefault("received", source_host)
        changed = True
    if changed:
        # Replace only the first value; the header may hold several comma-separated Vias.
        headers = request.headers
        headers.pop_first_value("via")
        headers.prepend("Via", str(via))
        headers.seed(TOP_VIA, via)  # the parsed view is still right: no second parse
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
