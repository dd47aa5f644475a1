"""Route a push to the provider configured for it: ``pn-provider`` family, then the app.

Several entries of one family are told apart by what the target carries: APNs by the bundle
id in ``pn-param`` (or a legacy ``app-id``), FCM by the Firebase project id that RFC 8599
§10 puts in ``pn-param`` (or a legacy ``app-id`` naming the Android package).

Every provider is wrapped in a concurrency cap and a retry loop for transient errors
(Sygnal style, push/limits.py); the retry loop never runs past the push's expiry, which is
the end of the call's hold window."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Protocol

from sipwake.config import PushConfig
from sipwake.policy.bindings import PushTarget
from sipwake.policy.pushparams import provider_family, split_apns_param
from sipwake.push.apns import ApnsProvider
from sipwake.push.base import (
    Delivered,
    Permanent,
    PushOutcome,
    PushProvider,
    PushRequest,
    TokenRejected,
    Transient,
)
from sipwake.push.fcm import FcmProvider
from sipwake.push.limits import ConcurrencyLimited, Retrying
from sipwake.push.webhook import WebhookProvider
from sipwake.push.webpush import WebPushProvider

log = logging.getLogger("sipwake.push")


@dataclass(frozen=True, slots=True)
class Route:
    family: str  # apns | fcm | webpush | an operator's webhook provider name
    app: str  # bundle id / package; "" matches any
    provider: PushProvider
    project: str = ""  # FCM: the Firebase project id this entry sends for


class PushMetrics(Protocol):
    """What the dispatcher counts (api/metrics.py's Metrics has these)."""

    def push(
        self, provider: str, outcome: str, latency: float | None = None, reason: str = ""
    ) -> None: ...

    def push_started(self, provider: str) -> None: ...

    def push_finished(self, provider: str) -> None: ...


class _NoMetrics:
    def push(
        self, provider: str, outcome: str, latency: float | None = None, reason: str = ""
    ) -> None:
        return None

    def push_started(self, provider: str) -> None:
        return None

    def push_finished(self, provider: str) -> None:
        return None


_OUTCOMES: dict[type, str] = {
    Delivered: "delivered",
    TokenRejected: "token_rejected",
    Transient: "transient",
    Permanent: "permanent",
}
_FAMILIES = ("apns", "fcm", "webpush")


def _metrics_family(provider: str) -> str:
    """The provider label: apns/fcm/webpush, and "webhook" for every operator provider."""
    family = provider_family(provider)
    return family if family in _FAMILIES else "webhook"


def _describe(outcome: PushOutcome) -> tuple[str, str]:
    reason = "" if isinstance(outcome, Delivered) else getattr(outcome, "reason", "")
    return _OUTCOMES[type(outcome)], str(reason)


class PushDispatcher:
    def __init__(self, routes: list[Route], vapid_public_key: str = "") -> None:
        self.routes = routes
        self.metrics: PushMetrics = _NoMetrics()
        self.fcm: list[FcmProvider] = []  # for their access tokens' expiry (metrics)
        # The first [[push.webpush]] entry's VAPID public key (base64url P-256 point), for
        # the +sip.vapid Feature-Caps of a REGISTER 200 (RFC 8599 §5.6.1.1, §12); "" if none.
        self.vapid_public_key = vapid_public_key

    @classmethod
    def from_config(cls, cfg: PushConfig) -> PushDispatcher:
        """Build every configured provider; key files are read now, so a missing or bad
        one stops start-up (ValueError naming the entry) rather than the first call."""
        raw: list[tuple[str, str, str, PushProvider]] = []
        vapid = ""
        for i, a in enumerate(cfg.apns):
            try:
                provider: PushProvider = ApnsProvider(
                    a.name,
                    topic_bundle_id=a.bundle_id,
                    team_id=a.team_id,
                    key_id=a.key_id,
                    key_file=a.key_file or a.cert_key_file,
                    cert_file=a.cert_file,
                    environment=a.environment,
                    base_url=a.base_url,
                    ca_file=a.ca_file,
                )
            except (ValueError, OSError) as exc:
                raise ValueError(f"push.apns[{i}] ({a.name}): {exc}") from None
            raw.append(("apns", a.bundle_id, "", provider))
        for i, f in enumerate(cfg.fcm):
            try:
                fcm = FcmProvider(
                    f.name,
                    service_account_file=f.service_account_file,
                    project_id=f.project_id or None,
                    base_url=f.base_url,
                    ca_file=f.ca_file or None,
                )
            except (ValueError, OSError) as exc:
                raise ValueError(f"push.fcm[{i}] ({f.name}): {exc}") from None
            raw.append(("fcm", f.app_id, fcm.project_id, fcm))
        for i, w in enumerate(cfg.webpush):
            try:
                provider = WebPushProvider(
                    w.name,
                    vapid_private_key_file=w.vapid_private_key_file,
                    subject=w.subject,
                    ca_file=w.ca_file or None,
                    allowed_hosts=w.allowed_hosts,
                )
            except (ValueError, OSError) as exc:
                raise ValueError(f"push.webpush[{i}] ({w.name}): {exc}") from None
            vapid = vapid or provider.vapid.public_key_b64
            raw.append(("webpush", "", "", provider))
        for h in cfg.webhook:
            provider = WebhookProvider(
                h.provider, url=h.url, secret=h.secret, ca_file=h.ca_file or None
            )
            raw.append((h.provider, "", "", provider))
        fcm_providers = [p for _, _, _, p in raw if isinstance(p, FcmProvider)]
        routes = [
            Route(
                family,
                app,
                Retrying(ConcurrencyLimited(p, cfg.max_in_flight), time.time, max_attempts=10),
                project,
            )
            for family, app, project, p in raw
        ]
        dispatcher = cls(routes, vapid)
        dispatcher.fcm = fcm_providers
        return dispatcher

    def credential_expiry(self) -> dict[str, float]:
        """FCM access tokens' expiry by entry name (Unix time), once fetched."""
        return {f"fcm:{p.name}": p.tokens.valid_until for p in self.fcm if p.tokens.valid_until}

    def supported(self) -> frozenset[str]:
        """pn-provider values we can serve (the registrar answers 555 for others)."""
        out: set[str] = set()
        for r in self.routes:
            out.add(r.family)
            if r.family == "apns":
                out.add("apns.dev")
        return frozenset(out)

    def provider_for(self, target: PushTarget) -> PushProvider | None:
        family = provider_family(target.provider)
        candidates = [r for r in self.routes if r.family == family]
        if len(candidates) <= 1:
            return candidates[0].provider if candidates else None
        app = _app_of(target)
        for r in candidates:
            if r.app and r.app == app:
                return r.provider
        if family == "fcm" and target.param:
            # RFC 8599 §10: pn-param is the FCM project id. (Legacy Linphone puts the
            # numeric sender id there; that matches no project and falls through.)
            for r in candidates:
                if r.project == target.param:
                    return r.provider
        for r in candidates:
            if not r.app:
                return r.provider
        return None

    async def send(self, request: PushRequest) -> PushOutcome:
        """Send through the target's provider; every push is counted here, the one place
        all of them pass (calls, missed-call alerts, messages, admin test pushes)."""
        family = _metrics_family(request.target.provider)
        provider = self.provider_for(request.target)
        if provider is None:
            outcome: PushOutcome = Permanent("NoProviderForApp")
            self.metrics.push(family, "permanent", None, reason="NoProviderForApp")
            return outcome
        self.metrics.push_started(family)
        started = time.monotonic()
        try:
            outcome = await provider.send(request, time.time())
        finally:
            self.metrics.push_finished(family)
        kind, reason = _describe(outcome)
        self.metrics.push(family, kind, time.monotonic() - started, reason=reason)
        return outcome

    async def close(self) -> None:
        for r in self.routes:
            await r.provider.close()


def _app_of(target: PushTarget) -> str:
    if target.app_id:
        return target.app_id
    if provider_family(target.provider) == "apns" and target.param:
        try:
            return split_apns_param(target.param).bundle_id
        except ValueError:
            return ""
    return ""
