"""ssl.SSLContext builders for SIP over TLS (RFC 3261 §26.2, RFC 5630) and WSS (RFC 7118).

TLS 1.2 is the floor (RFC 8996 deprecates 1.0/1.1; RFC 7525 §3.1.1). Keys are loaded once,
here, at start-up, not per connection.
"""

from __future__ import annotations

import ssl


def server_context(
    cert_file: str,
    key_file: str,
    ca_file: str | None = None,
    verify_client: bool = False,
) -> ssl.SSLContext:
    """Context for our TLS/WSS listeners.

    ``verify_client`` requires a client certificate signed by ``ca_file`` (or the system
    store), as SIP peers doing mutual TLS expect (RFC 5922 §7.1); phones and browsers
    normally present none, so it is off by default.
    """
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    if ca_file is not None:
        ctx.load_verify_locations(cafile=ca_file)
    if verify_client:
        if ca_file is None:
            ctx.load_default_certs(ssl.Purpose.CLIENT_AUTH)
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def client_context(ca_file: str | None = None, verify: bool = True) -> ssl.SSLContext:
    """Context for outbound TLS/WSS connections.

    With ``verify`` the peer's certificate must chain to ``ca_file`` (or the system store)
    and match the host name we dialled (RFC 5922 §7.2). ``verify=False`` is for tests and
    closed networks only.
    """
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
