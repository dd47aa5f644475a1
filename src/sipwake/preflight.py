"""Load every file the configuration names, before anything binds a port.

``load_config`` checks shapes and ranges; this checks what lies behind them: the TLS
certificate parses and its key matches it, the APNs ``.p8`` is an ES256 key, the FCM service
account is a usable JSON key, the VAPID key is P-256, every CA bundle loads. The first
problem is a ``SetupError`` naming the key (``push.apns[0].key_file``) and the reason, so
``sipwake serve`` and ``sipwake check-config`` stop with one line naming file, key and
reason instead of ``[Errno 2]`` or ``[SSL] PEM lib``.

What loads is described (subject and expiry, key id, project) for ``check-config``'s
summary, and certificate expiry dates feed the ``sipwake_credential_expiry`` gauge.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from sipwake.config import Config, SetupError

__all__ = ["Credential", "Preflight", "preflight"]


@dataclass(frozen=True, slots=True)
class Credential:
    """A loaded credential: where it is configured, what it is, and when it expires."""

    key: str  # config path, e.g. "tls.cert_file" or "push.apns[0].key_file"
    what: str  # one line for check-config
    not_after: float | None = None  # POSIX seconds; None: does not expire by itself


@dataclass(slots=True)
class Preflight:
    credentials: list[Credential] = field(default_factory=list)


def _read(key: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SetupError(key, f"{path}: cannot read: {exc.strerror or exc}") from None


def _certificates(key: str, path: str) -> list[x509.Certificate]:
    data = _read(key, path)
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        certs = []
    if not certs:
        raise SetupError(key, f"{path}: no PEM certificate in it")
    return certs


def _private_key(key: str, path: str) -> PrivateKeyTypes:
    data = _read(key, path)
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise SetupError(key, f"{path}: encrypted; give the key without a passphrase") from None
    except ValueError:
        raise SetupError(key, f"{path}: not a PEM private key") from None


def _spki(public_key: object) -> bytes:
    return public_key.public_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _pair(out: Preflight, cert_key: str, cert_file: str, key_key: str, key_file: str) -> None:
    """A certificate chain and its private key: both parse and the key is the leaf's."""
    leaf = _certificates(cert_key, cert_file)[0]
    private = _private_key(key_key, key_file or cert_file)
    if _spki(private.public_key()) != _spki(leaf.public_key()):
        raise SetupError(
            key_key, f"{key_file or cert_file}: does not match the certificate in {cert_file}"
        )
    expires = leaf.not_valid_after_utc
    out.credentials.append(
        Credential(
            cert_key,
            f"{leaf.subject.rfc4514_string()}, expires {expires:%Y-%m-%d}",
            expires.timestamp(),
        )
    )
    if expires < datetime.now(UTC):
        # Still loaded (a renewal may be on its way), but said first thing.
        out.credentials.append(Credential(cert_key, f"EXPIRED on {expires:%Y-%m-%d}"))


def _ca(key: str, path: str) -> None:
    if not path:
        return
    _read(key, path)  # the message for a missing file, before ssl's terse one
    try:
        ssl.create_default_context(cafile=path)
    except ssl.SSLError as exc:
        raise SetupError(key, f"{path}: not a PEM CA bundle ({exc.reason})") from None


def _check_tls(config: Config, out: Preflight) -> None:
    tls = config.tls
    if tls.cert_file:
        _pair(out, "tls.cert_file", tls.cert_file, "tls.key_file", tls.key_file)
    _ca("tls.ca_file", tls.ca_file)


def _check_push(config: Config, out: Preflight) -> None:
    from sipwake.push.apns import load_p8
    from sipwake.push.oauth import load_service_account
    from sipwake.push.webpush import load_vapid_key

    push = config.push
    for i, a in enumerate(push.apns):
        at = f"push.apns[{i}]"
        if a.key_file:
            _read(f"{at}.key_file", a.key_file)
            try:
                load_p8(Path(a.key_file))
            except ValueError as exc:
                raise SetupError(f"{at}.key_file", _after_path(str(exc), a.key_file)) from None
            out.credentials.append(
                Credential(f"{at}.key_file", f"{a.name}: token auth, key {a.key_id}")
            )
        else:
            key_key = f"{at}.cert_key_file" if a.cert_key_file else f"{at}.cert_file"
            _pair(out, f"{at}.cert_file", a.cert_file, key_key, a.cert_key_file)
        _ca(f"{at}.ca_file", a.ca_file)
    for i, f in enumerate(push.fcm):
        at = f"push.fcm[{i}]"
        _read(f"{at}.service_account_file", f.service_account_file)
        try:
            account = load_service_account(f.service_account_file)
        except ValueError as exc:
            raise SetupError(
                f"{at}.service_account_file", _after_path(str(exc), f.service_account_file)
            ) from None
        project = f.project_id or account.project_id
        if not project:
            raise SetupError(f"{at}.project_id", "the service account names no project: set it")
        out.credentials.append(
            Credential(f"{at}.service_account_file", f"{f.name}: {account.client_email}")
        )
        _ca(f"{at}.ca_file", f.ca_file)
    for i, w in enumerate(push.webpush):
        at = f"push.webpush[{i}]"
        _read(f"{at}.vapid_private_key_file", w.vapid_private_key_file)
        try:
            vapid = load_vapid_key(w.vapid_private_key_file)
        except ValueError as exc:
            raise SetupError(
                f"{at}.vapid_private_key_file", _after_path(str(exc), w.vapid_private_key_file)
            ) from None
        out.credentials.append(
            Credential(
                f"{at}.vapid_private_key_file", f"{w.name}: public key {vapid.public_key_b64}"
            )
        )
        _ca(f"{at}.ca_file", w.ca_file)
    for i, h in enumerate(push.webhook):
        _ca(f"push.webhook[{i}].ca_file", h.ca_file)


def _after_path(message: str, path: str) -> str:
    """The loaders say ``<kind> file <path>: <reason>``; keep ``<path>: <reason>``."""
    _, found, rest = message.partition(f"{path}: ")
    return f"{path}: {rest}" if found else message


def preflight(config: Config) -> Preflight:
    """Load every referenced file; raise SetupError for the first that is unusable."""
    out = Preflight()
    _check_tls(config, out)
    _check_push(config, out)
    return out
