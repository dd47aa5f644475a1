"""The ``[[push.*]]`` provider entries of the configuration (split from config.py, which
re-exports them; the same Struct options and ``_Invalid`` checks, see its docstring)."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from msgspec import Struct


class _Invalid(ValueError):
    """A semantic check failed at ``path`` (relative to the struct that raised it)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}" if path else reason)
        self.path = path
        self.reason = reason


class ApnsConfig(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """[[push.apns]]: one iOS app (bundle id) on APNs; token (.p8) or certificate auth."""

    name: str = "apns"  # for logs and metrics
    bundle_id: str = ""  # the app's bundle id; VoIP pushes go to topic "<bundle_id>.voip"
    team_id: str = ""  # token auth: Apple developer team id ...
    key_id: str = ""  # ... the key's id ...
    key_file: str = ""  # ... and the AuthKey_XXXX.p8 file
    cert_file: str = ""  # certificate auth instead: PEM certificate and key
    cert_key_file: str = ""
    environment: Literal["production", "sandbox"] = "production"  # pn-provider apns.dev: sandbox
    base_url: str = ""  # a custom endpoint (the emulator); overrides environment
    ca_file: str = ""  # CA to trust for base_url

    def __post_init__(self) -> None:
        if not self.bundle_id:
            raise _Invalid("bundle_id", "is required")
        token = bool(self.key_file)
        if token and not (self.team_id and self.key_id):
            raise _Invalid("key_file", "token auth needs team_id and key_id too")
        if token == bool(self.cert_file):
            raise _Invalid(
                "key_file", "set key_file (token auth) or cert_file, not both or neither"
            )


class FcmConfig(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """[[push.fcm]]: one Firebase project, HTTP v1 API with a service account."""

    name: str = "fcm"
    service_account_file: str = ""  # the JSON key file downloaded from the Firebase console
    project_id: str = ""  # "" means the service account's project
    app_id: str = ""  # the Android package this entry serves; "" for any
    base_url: str = "https://fcm.googleapis.com"
    ca_file: str = ""

    def __post_init__(self) -> None:
        if not self.service_account_file:
            raise _Invalid("service_account_file", "is required")


class WebPushConfig(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """[[push.webpush]]: Web Push (RFC 8030) with VAPID (RFC 8292)."""

    name: str = "webpush"
    vapid_private_key_file: str = ""
    subject: str = ""  # mailto: or https: contact for the push service operator
    allowed_hosts: tuple[str, ...] = ()  # push service hosts we may POST to; () allows any
    ca_file: str = ""

    def __post_init__(self) -> None:
        if not self.vapid_private_key_file:
            raise _Invalid("vapid_private_key_file", "is required")
        if not self.subject.startswith(("mailto:", "https:")):
            raise _Invalid("subject", "must be a mailto: or https: URI")


class WebhookConfig(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """[[push.webhook]]: an in-house push service reached by an HMAC-signed JSON POST."""

    provider: str = ""  # the pn-provider value devices register with, e.g. "acme"
    url: str = ""
    secret: str = ""  # HMAC-SHA256 key for the X-Sipwake-Signature header
    ca_file: str = ""

    def __post_init__(self) -> None:
        if not self.provider or self.provider in ("apns", "apns.dev", "fcm", "webpush"):
            raise _Invalid("provider", "must name an operator provider (not apns/fcm/webpush)")
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise _Invalid("url", "must be an http(s)://host/... URL")
        try:
            parts.port  # noqa: B018  (urlsplit checks the port when it is read)
        except ValueError:
            raise _Invalid("url", "has a bad port") from None
        if not self.secret:
            raise _Invalid("secret", "is required")
