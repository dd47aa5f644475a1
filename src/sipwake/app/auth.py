"""Digest authentication at the edge (RFC 3261 §22): challenge, verify, throttle.

The pure rules are in policy/auth.py; this class holds the per-process state (nonce
counters, failure budgets), reads credentials from the user store and answers 401/407/403
itself. ``check`` returns the authenticated user name, or None when it has answered.

Guessing is budgeted twice: per source address and per account (over all sources), each
``max_failures`` per ``failure_window``; a source that authenticated as the account
recently is exempt from the account's budget so guessers cannot lock its user out.
Nonces are bound to the client's address, so a spoofed request cannot carry a valid one
and cannot spend anyone's budget. An unknown user costs the same as a known one (a decoy
HA1 goes through the same digest), so timing does not tell them apart either."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

from sipwake.app.engine import Incoming
from sipwake.app.ports import MetricsPort, NullMetrics
from sipwake.config import AuthConfig
from sipwake.policy import auth as digest
from sipwake.sip.errors import ParseError
from sipwake.storage.base import UserStore

log = logging.getLogger("sipwake.auth")

TRUSTED = "<trusted>"  # what check() returns for a trusted peer or with auth disabled


class Authenticator:
    def __init__(
        self,
        cfg: AuthConfig,
        users: UserStore,
        realm: str,
        secret: bytes,
        *,
        wall: Callable[[], float] = time.time,
    ) -> None:
        # Nonces carry their issue time and are checked by other nodes: the wall clock
        # (the engine's: server.py).
        self.wall = wall
        self.cfg = cfg
        self.users = users
        self.realm = realm
        self.secret = secret
        self.trusted = digest.TrustedPeers(cfg.trusted)
        self.counter = digest.NonceCounter()
        self.throttle = digest.FailureThrottle(cfg.max_failures, cfg.failure_window)
        self.accounts = digest.FailureThrottle(cfg.max_failures, cfg.failure_window)
        self.known = digest.KnownSources(cfg.known_source_ttl)
        # Verified against when the user is unknown, so both cost one digest.
        self._decoy = {
            alg: digest.ha1("", realm, os.urandom(16).hex(), alg) for alg in ("MD5", "SHA-256")
        }
        self.failures = 0
        self.refused = 0  # attempts refused unchecked: budget spent
        self.challenged = 0
        self.metrics: MetricsPort = NullMetrics()

    def skips(self, incoming: Incoming) -> bool:
        """No challenge for this request: auth off, or a trusted peer (PBX, trunk)."""
        return not self.cfg.enabled or self.trusted.contains(incoming.flow.remote[0])

    async def check(self, incoming: Incoming, *, proxy: bool) -> str | None:
        """Authenticate ``incoming``. ``proxy`` selects 407/Proxy-Authorization (requests
        we forward) over 401/Authorization (REGISTER, RFC 3261 §22.1)."""
        if self.skips(incoming):
            return TRUSTED
        ip = incoming.flow.remote[0]
        now = self.wall()
        if self.throttle.is_blocked(ip, now):
            incoming.respond(403, "Too Many Failed Attempts")
            return None
        request = incoming.request
        header = "Proxy-Authorization" if proxy else "Authorization"
        creds = None
        for value in request.headers.get_lines(header):
            try:
                parsed = digest.parse_authorization(value)
            except ParseError:
                continue
            if parsed.realm == self.realm:
                creds = parsed
                break
        if creds is None:
            self._challenge(incoming, proxy, ip, stale=False)
            return None
        account = creds.username
        if self.accounts.is_blocked(account, now) and not self.known.contains(account, ip, now):
            self.refused += 1
            self.metrics.refused("auth_budget")
            incoming.respond(403, "Too Many Failed Attempts")
            return None
        user = await self.users.get_user(account, self.realm)
        alg = digest.hash_algorithm(creds.algorithm)
        ha1 = ""
        if user is not None and not user.disabled:
            ha1 = (user.ha1_sha256 if alg == "SHA-256" else user.ha1_md5) or ""
        result = digest.verify(
            creds,
            request.method,
            ha1 or self._decoy.get(alg, ""),
            now=now,
            secret=self.secret,
            max_age=self.cfg.nonce_ttl,
            counter=self.counter,
            client_ip=ip,
        )
        if result is digest.AuthResult.STALE:
            self._challenge(incoming, proxy, ip, stale=True)
            return None
        ok = result is digest.AuthResult.OK and _uri_matches(creds.uri, request.uri)
        if not ha1 or not ok:
            self.failures += 1
            self.metrics.auth_failure()
            self.throttle.record_failure(ip, now)
            self.accounts.record_failure(account, now)
            log.info("authentication failed for %r from %s", account, ip)
            incoming.respond(403)
            return None
        self.throttle.record_success(ip)
        self.known.add(account, ip, now)
        return account

    def _challenge(self, incoming: Incoming, proxy: bool, ip: str, *, stale: bool) -> None:
        self.challenged += 1
        name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        values = digest.challenges(
            self.realm,
            self.wall(),
            self.secret,
            self.cfg.algorithms,
            stale=stale,
            client_ip=ip,
            salt=os.urandom(8),
        )
        incoming.respond(407 if proxy else 401, extra=[(name, v) for v in values])


def _uri_matches(digest_uri: str, request_uri: str) -> bool:
    """RFC 3261 §22.4 / RFC 2617 §3.2.2: the digest-uri must be the Request-URI. Clients
    differ in escaping and parameters, so compare without parameters, case-insensitively."""

    def bare(u: str) -> str:
        return u.strip().split(";", 1)[0].split("?", 1)[0].lower()

    return bare(digest_uri) == bare(request_uri)
