"""The ``[auth]`` and ``[overload]`` sections of the configuration: what guards the server
against guessing and overload (split from config.py, which re-exports them; the same
Struct options and ``_Invalid`` checks, see its docstring)."""

from __future__ import annotations

import ipaddress

from msgspec import Struct

from sipwake.config_providers import _Invalid


class AuthConfig(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """[auth]: digest authentication of local users (RFC 3261 §22, RFC 8760)."""

    enabled: bool = True  # challenge REGISTER (401) and INVITE from our domains (407)
    realm: str = ""  # "" means the first of server.domains
    # HMAC key for nonces and Record-Route flow tokens. "" draws a random one at start:
    # nonces then die with the process and nodes cannot share them; set it for clusters.
    secret: str = ""
    nonce_ttl: float = 300.0  # seconds a nonce stays valid; older ones get stale=true
    algorithms: tuple[str, ...] = ("SHA-256", "MD5")  # offered in this order (RFC 8760 §2.4)
    trusted: tuple[str, ...] = ()  # CIDRs of peers (PBX, trunk) that are not challenged
    # Failed attempts from one source address, and for one account from all sources
    # together, within failure_window before further attempts get 403 without a check.
    max_failures: int = 10
    failure_window: float = 60.0
    # A source that authenticated as an account within this many seconds is exempt from
    # that account's budget, so guessing cannot lock the real user out.
    known_source_ttl: float = 86400.0
    # 404 for users that are not provisioned (only after the caller authenticated, so an
    # outsider learns nothing); false: 480 for every user without a binding.
    reveal_unknown_users: bool = True

    def __post_init__(self) -> None:
        for alg in self.algorithms:
            if alg.upper() not in ("SHA-256", "MD5", "SHA-256-SESS", "MD5-SESS"):
                raise _Invalid("algorithms", f"unknown digest algorithm {alg!r}")
        if not self.algorithms:
            raise _Invalid("algorithms", "at least one algorithm is needed")
        for i, cidr in enumerate(self.trusted):
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise _Invalid(f"trusted[{i}]", f"not an IP network: {cidr!r}") from None
        for key in ("nonce_ttl", "failure_window", "max_failures", "known_source_ttl"):
            if not getattr(self, key) > 0:
                raise _Invalid(key, "must be positive")


class OverloadConfig(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """[overload]: answer new work 503 + Retry-After past these bounds (policy/overload.py)."""

    enabled: bool = True
    max_pending: int = 2000  # requests received, not yet finally answered (held calls apart)
    max_held_calls: int = 10000  # calls held for a device being woken
    max_loop_lag: float = 0.25  # seconds the event loop runs late
    max_udp_delay: float = 0.15  # seconds a datagram waited in a UDP receive queue
    max_udp_backlog: float = 0.5  # fill of a UDP socket's receive queue (0..1)
    retry_after: int = 5  # seconds, in the 503 (RFC 3261 §21.5.4)

    def __post_init__(self) -> None:
        for key in (
            "max_pending",
            "max_held_calls",
            "max_loop_lag",
            "max_udp_delay",
            "retry_after",
        ):
            if not getattr(self, key) > 0:
                raise _Invalid(key, f"must be positive, got {getattr(self, key)}")
        if not 0 < self.max_udp_backlog <= 1:
            raise _Invalid("max_udp_backlog", "must be above 0 and at most 1")
