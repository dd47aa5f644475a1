"""Edge mode: the REGISTER rules when sipwake sits in front of a registrar it cannot change.

Pure, like ``policy/registrar.py`` whose decision it wraps: the device's REGISTER is first
checked by the local registrar policy (malformed, push parameters, Min-Expires), then
either answered here (throttling, :func:`may_answer_locally`) or relayed to the upstream
registrar with one Contact per device that names us (:func:`upstream_register`). Only the
upstream's 2xx stores a binding, and then with the upstream's lifetime
(:func:`with_upstream_expiry`), so the binding ends here and upstream at the same moment.

Identifying a device towards the upstream (OpenSIPS mid_registrar's ``ctid``): the user
part of the Contact we register is a signed id of (AoR, device) (``policy/flowtoken.py``),
so an INVITE the upstream sends to that Contact names the binding without any table,
on every node. With ``use_path`` the device's own Contact goes upstream and the id rides
in a Path entry instead (RFC 3327 §5.2); the upstream then sends the INVITE with a Route
to us carrying it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sipwake.policy.bindings import Binding, FlowRef, evolve
from sipwake.policy.flowtoken import decode_binding_id, encode_binding_id
from sipwake.policy.registrar import RegisterOutcome
from sipwake.sip.errors import ParseError
from sipwake.sip.headers import Headers, header_key
from sipwake.sip.message import Request, Response
from sipwake.sip.uri import NameAddr

# Headers of the device's REGISTER that are ours to set on the relayed copy: the hop
# headers (§16.6: Via, Max-Forwards, Route/Record-Route), what names the device (Contact,
# Path: replaced by ours), the lifetime (we ask ``upstream_expires``), and option tags
# that promise what only the device or we could do (outbound, gruu).
_NOT_RELAYED = frozenset(
    {
        "via", "max-forwards", "route", "record-route", "contact", "path", "expires",
        "require", "supported", "proxy-require", "content-length", "content-type",
    }
)  # fmt: skip
# What of the upstream's non-2xx answer the device needs to act on it: the challenge
# (§22.2, §22.3), Min-Expires (§10.2.8), Retry-After (§21.5.4), diagnostics.
RELAYED_BACK = ("www-authenticate", "proxy-authenticate", "min-expires", "retry-after",
                "warning", "unsupported", "error-info")  # fmt: skip


def device_hash(device_key: str) -> str:
    """A short stable name for a device in the binding id (the push token itself would
    make the URI long and show it to the upstream)."""
    return hashlib.sha256(device_key.encode()).hexdigest()[:16]


def binding_id(secret: bytes, aor: str, device_key: str) -> str:
    return encode_binding_id(secret, aor, device_hash(device_key))


def parse_binding_id(secret: bytes, user: str | None) -> tuple[str, str] | None:
    """(aor, device hash) from the user part of a URI the upstream sent to, else None."""
    return decode_binding_id(secret, user)


def binding_of(bindings: Iterable[Binding], device: str) -> Binding | None:
    """The binding whose device hashes to ``device``."""
    for b in bindings:
        if device_hash(b.device_key) == device:
            return b
    return None


def our_uri(user: str, host: str, port: int, transport: str, *, lr: bool = False) -> str:
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    tparam = "" if transport.upper() == "UDP" else f";transport={transport.lower()}"
    return f"sip:{user}@{shown}:{port}{tparam}{';lr' if lr else ''}"


def may_answer_locally(
    old: Binding, request: Request, flow: FlowRef, now: float, refresh_before: float
) -> bool:
    """Can a re-REGISTER of ``old``'s device be answered here without the upstream
    seeing it (throttling)? Only when we can tell it comes from the device the upstream
    authenticated for ``old`` -- over the same connection, or with the same Call-ID and a
    higher CSeq (RFC 3261 §10.2.4: a UA keeps both across refreshes) from the same
    transport address -- and the upstream registration still has more than
    ``refresh_before`` to run (otherwise the REGISTER is the refresh the upstream needs).
    A wake REGISTER comes over a new connection: it always goes upstream."""
    ref = old.flow
    if ref is None or old.expires_at - now <= refresh_before:
        return False
    if ref.transport != flow.transport or ref.node_id != flow.node_id:
        return False
    if ref.transport != "UDP" and ref.conn_id and ref.conn_id == flow.conn_id:
        return True
    return (
        request.call_id == old.call_id
        and request.cseq.seq > old.cseq
        and (ref.remote_host, ref.remote_port) == (flow.remote_host, flow.remote_port)
    )


def throttled(
    trial: RegisterOutcome,
    request: Request,
    flow: FlowRef,
    now: float,
    refresh_before: float,
    *,
    use_path: bool,
) -> Binding | None:
    """The stored binding a REGISTER only refreshes, when it may be answered locally;
    None when it must go upstream. ``trial`` is the local registrar's decision against
    the current bindings: exactly one binding refreshed, none removed. With Path the
    upstream holds the device's own Contact, so a changed Contact must go there too."""
    if not trial.ok or len(trial.added) != 1 or trial.removed or len(trial.replaced) != 1:
        return None
    new, old = trial.added[0], trial.replaced[0]
    if old.device_key != new.device_key:
        return None
    if use_path and old.contact != new.contact:
        return None
    return old if may_answer_locally(old, request, flow, now, refresh_before) else None


def with_upstream_expiry(
    bindings: Sequence[Binding], outcome: RegisterOutcome, expiry: dict[str, float]
) -> tuple[list[Binding], RegisterOutcome]:
    """The registrar's new binding list with each binding this REGISTER added living
    exactly as long as its upstream registration (``expiry``: device key -> absolute
    time). A binding the upstream did not confirm is left out (never stored)."""
    added_ids = {id(b) for b in outcome.added}
    kept: list[Binding] = []
    added: list[Binding] = []
    for b in bindings:
        if id(b) not in added_ids:
            kept.append(b)
            continue
        until = expiry.get(b.device_key)
        if until is None:
            continue
        fixed = evolve(b, expires_at=until)
        kept.append(fixed)
        added.append(fixed)
    fixed_outcome = RegisterOutcome(
        outcome.status,
        outcome.reason,
        tuple(kept),
        outcome.headers,
        added=tuple(added),
        removed=outcome.removed,
        replaced=outcome.replaced,
        evicted=outcome.evicted,
    )
    return kept, fixed_outcome


def shown_expiry(new: Binding, stored: Binding) -> Binding:
    """The binding as the device is told about it: its own granted lifetime (``new``,
    from the local policy) when shorter than the upstream's, so a device keeps its refresh
    rhythm and we absorb it (throttling); never longer than the upstream registration."""
    return evolve(stored, expires_at=min(new.expires_at, stored.expires_at))


@dataclass(frozen=True, slots=True)
class UpstreamContact:
    """One Contact of the REGISTER we send upstream and the device it stands for."""

    device_key: str
    user: str  # the binding id
    value: str  # the Contact header value


def upstream_contacts(
    secret: bytes,
    aor: str,
    trial: RegisterOutcome,
    *,
    us: tuple[str, int, str],
    expires: int,
    use_path: bool,
) -> list[UpstreamContact]:
    """Contacts for the relayed REGISTER: each device this REGISTER adds or refreshes
    with ``expires``, each device it removes with 0. Ours (binding id at ``us``), or the
    device's own Contact when the id travels in Path."""
    host, port, transport = us
    out: list[UpstreamContact] = []
    evicted = {id(b) for b in trial.evicted}
    gone = [b for b in trial.removed if id(b) not in evicted]
    for b, lifetime in [(b, expires) for b in trial.added] + [(b, 0) for b in gone]:
        user = binding_id(secret, aor, b.device_key)
        uri = b.contact if use_path else our_uri(user, host, port, transport)
        out.append(UpstreamContact(b.device_key, user, f"<{uri}>;expires={lifetime}"))
    return out


def upstream_register(
    request: Request,
    *,
    target: str,
    via: str,
    contacts: Sequence[str],
    path: Sequence[str] = (),
) -> Request:
    """The device's REGISTER as we relay it: same Request-URI, From, To, Call-ID, CSeq
    and credentials (the upstream checks the device's digest, RFC 3261 §22.4: the digest
    covers the method and the URI, both unchanged), our Via, our Contacts, and Path when
    the device's Contact goes upstream (RFC 3327 §5.2, with ``Supported: path``)."""
    headers = Headers()
    headers.add("Via", via)
    mf = request.max_forwards
    headers.add("Max-Forwards", str(mf - 1) if mf is not None else "70")
    for name, value in request.headers:
        if header_key(name) not in _NOT_RELAYED:
            headers.add(name, value)
    for value in path:
        headers.add("Path", value)
    if path:
        headers.add("Supported", "path")
    for value in contacts:
        headers.add("Contact", value)
    headers.add("Content-Length", "0")
    return Request("REGISTER", target or request.uri, headers)


def deregister_request(
    binding: Binding, *, target: str, via: str, contact: str, from_tag: str
) -> Request:
    """A REGISTER removing ``binding``'s Contact upstream (RFC 3261 §10.2.2), sent by us
    when the binding ends here first (push token rejected, evicted). It continues the
    device's Call-ID with the next CSeq, so the upstream takes it as the newest request
    for that Contact (§10.3 step 7)."""
    headers = Headers()
    headers.add("Via", via)
    headers.add("Max-Forwards", "70")
    headers.add("From", f"<{binding.aor}>;tag={from_tag}")
    headers.add("To", f"<{binding.aor}>")
    headers.add("Call-ID", binding.call_id)
    headers.add("CSeq", f"{binding.cseq + 1} REGISTER")
    headers.add("Contact", f"<{contact}>;expires=0")
    headers.add("Expires", "0")
    headers.add("Content-Length", "0")
    return Request("REGISTER", target, headers)


def upstream_expiries(
    response: Response, contacts: Sequence[UpstreamContact], now: float, default: int
) -> dict[str, float]:
    """Device key -> absolute end of its upstream registration, from the 2xx (§10.3 step
    8: the registrar lists every binding with its ``expires``; a Contact we asked for is
    found by our binding id, or whole with Path). A Contact the 2xx does not list with a
    lifetime falls back on the Expires header, then on what we asked for."""
    header = response.headers.get("Expires")
    fallback = int(header) if header is not None and header.isdigit() else default
    listed: dict[str, int] = {}
    for value in response.headers.get_all("Contact"):
        try:
            na = NameAddr.parse(value)
        except ParseError:
            continue
        exp = na.params.get("expires")
        if exp is not None and exp.isdigit() and na.uri.user:
            listed[na.uri.user] = int(exp)
            listed[str(na.uri)] = int(exp)
    out: dict[str, float] = {}
    for c in contacts:
        uri = c.value[1 : c.value.index(">")]
        seconds = listed.get(c.user, listed.get(uri, fallback))
        if seconds > 0:
            out[c.device_key] = now + seconds
    return out


def relayed_back(response: Response) -> list[tuple[str, str]]:
    """Headers of the upstream's answer that go back to the device with its status."""
    return [(n, v) for n, v in response.headers if header_key(n) in RELAYED_BACK]
