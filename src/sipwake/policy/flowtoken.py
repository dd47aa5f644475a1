"""Flow tokens in our Record-Route user part (RFC 5626 §5.2 style).

A phone behind NAT registers over a connection; the Contact it puts in its dialogs is often
unreachable. So when we forward an initial request, the Record-Route we insert carries both
flows of the hop pair, the one the request came in on and the one it went out on, signed so
nobody can make us send over a flow of their choosing. An in-dialog request that comes back
on one of them goes out on the other.
"""

from __future__ import annotations

import base64
import hmac

from sipwake.sip.flows import Flow


def _enc(f: Flow) -> str:
    return f"{f.transport},{f.local[0]},{f.local[1]},{f.remote[0]},{f.remote[1]},{f.conn_id}"


def _dec(text: str) -> Flow:
    t, lh, lp, rh, rp, cid = text.split(",")
    return Flow(t, (lh, int(lp)), (rh, int(rp)), int(cid))


_PREFIX = "sw-"


def _mac(secret: bytes, data: bytes) -> str:
    # One-shot hmac.digest: OpenSSL's HMAC in one call, without an HMAC object per token.
    return hmac.digest(secret, data, "sha256").hex()[:16]


def _sign(secret: bytes, prefix: str, payload: bytes, domain: bytes) -> str:
    """``<prefix><base64url(payload)>-<mac>``; ``domain`` keeps one kind of token from
    verifying as another."""
    mac = _mac(secret, domain + payload)
    b64 = base64.urlsafe_b64encode(payload).rstrip(b"=").decode()
    return f"{prefix}{b64}-{mac}"


def _verify(secret: bytes, prefix: str, user: str | None, domain: bytes) -> str | None:
    """The payload of a token signed by ``_sign``, or None (not ours, forged, garbled)."""
    if not user or not user.startswith(prefix):
        return None
    body, _, mac = user[len(prefix) :].rpartition("-")
    try:
        payload = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (ValueError, TypeError):
        return None
    want = _mac(secret, domain + payload)
    if not hmac.compare_digest(want, mac):
        return None
    try:
        return payload.decode()
    except UnicodeDecodeError:
        return None


def encode_pair(secret: bytes, inbound: Flow, outbound: Flow) -> str:
    """User part for our Record-Route: ``sw-<base64url(payload)>-<mac>``."""
    return _sign(secret, _PREFIX, f"{_enc(inbound)}|{_enc(outbound)}".encode(), b"")


def decode_pair(secret: bytes, user: str | None) -> tuple[Flow, Flow] | None:
    """The two flows of a token we issued; None for anything else (forged, foreign)."""
    payload = _verify(secret, _PREFIX, user, b"")
    if payload is None:
        return None
    try:
        a, b = payload.split("|")
        return _dec(a), _dec(b)
    except ValueError:
        return None


def other_side(pair: tuple[Flow, Flow], arrived: Flow) -> Flow | None:
    """The flow to forward on, given the one the request arrived on."""
    a, b = pair
    if arrived.same_path(a):
        return b
    if arrived.same_path(b):
        return a
    return None


# A different prefix from the pair tokens: an owner-route token names one flow on the node
# that owns it, and a request carrying it is an initial request to forward over that flow
# (a Route towards the owner, RFC 3327 §5.2 style), not an in-dialog request.
_OWNER_PREFIX = "sf-"


def encode_owner(secret: bytes, flow: Flow) -> str:
    """User part of the Route a node puts towards the node that owns ``flow`` (scale-out:
    a device's connection lives on one node; every other node reaches it through that
    node). Signed like the pair tokens, with the cluster's shared secret."""
    return _sign(secret, _OWNER_PREFIX, _enc(flow).encode(), b"owner|")


def decode_owner(secret: bytes, user: str | None) -> Flow | None:
    """The flow named by an owner-route token we (or a peer node) issued; None otherwise."""
    payload = _verify(secret, _OWNER_PREFIX, user, b"owner|")
    if payload is None:
        return None
    try:
        return _dec(payload)
    except ValueError:
        return None


# Edge mode (policy/edge.py): the per-binding id in the Contact we register upstream,
# as OpenSIPS mid_registrar's ctid. Another prefix and MAC domain again, so neither kind of
# token above can be passed off as a binding id or the other way round.
_BINDING_PREFIX = "se-"


def encode_binding_id(secret: bytes, aor: str, device: str) -> str:
    """User part naming one device's binding of ``aor`` (``device``: a short hash)."""
    return _sign(secret, _BINDING_PREFIX, f"{device}|{aor}".encode(), b"edge|")


def decode_binding_id(secret: bytes, user: str | None) -> tuple[str, str] | None:
    """(aor, device hash) of a binding id we issued; None for anything else."""
    payload = _verify(secret, _BINDING_PREFIX, user, b"edge|")
    if payload is None:
        return None
    device, sep, aor = payload.partition("|")
    return (aor, device) if sep and device and aor else None
