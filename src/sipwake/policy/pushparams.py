"""RFC 8599 push parameters (and their legacy variants) -> PushTarget; Feature-Caps; 555.

Where the parameters are read
    RFC 8599 §4.1.1 puts ``pn-provider``, ``pn-prid``, ``pn-param`` (and ``pn-purr``, §6) in
    the Contact *URI*. Older Linphone builds set them with
    ``linphone_proxy_config_set_contact_parameters``, i.e. as Contact *header* parameters.
    So each name is looked up in the URI parameters first, then in the header parameters.
    Values are %-unescaped (RFC 3261 §19.1.2; RFC 8599 §8.7 requires escaping ``?=;%,`` in
    Web Push URIs) before they are checked or stored, so two spellings of one token compare
    equal (RFC 3261 §19.1.4 would otherwise treat them as different).

What is a push binding, a query, or an error
    - no ``pn-provider`` / ``pn-type`` / ``pn-prid`` / ``pn-tok`` at all -> ``None``;
    - ``pn-provider`` without ``pn-prid`` -> ``None`` from :func:`parse_push_target`: it is
      an RFC 8599 capability query (§4.1.5) or a disable/remove REGISTER (§4.1.2: the UA
      MUST leave pn-prid out), not an error. :func:`push_query` tells which providers the UA
      asked about;
    - ``pn-prid`` or ``pn-param`` without ``pn-provider`` -> :class:`PushParamError`
      naming ``pn-provider``; empty values, escapes that are not ``%XX`` or not UTF-8,
      control characters, over-long values -> :class:`PushParamError` naming the parameter.

Provider names and the APNs sandbox
    ``provider`` keeps the UA's token, lower-cased: ``apns``, ``apns.dev``, ``fcm``,
    ``webpush``, or an operator name. ``apns.dev`` (liblinphone's sandbox spelling) is *not*
    folded into ``apns``: the environment must survive (a sandbox token sent to production
    fails with BadDeviceToken), ``param`` is already taken by the topic, and the 2xx
    Feature-Caps must echo the UA's own pn-provider (§4.1.1: the UA trusts pushes only when
    ``+sip.pns`` equals it). :func:`provider_family` gives ``apns`` for ``apns.dev`` and
    :func:`is_sandbox` says whether the suffix was ``.dev``; validation rules are per family.

Tokens per family (after unescaping)
    - ``apns``: hex, even length, at most 200 characters (Apple allows tokens up to 100
      bytes), stored lower-case. Typed liblinphone form ``TOK:voip&TOK:remote`` (either
      order, either part optional, each service at most once): the ``voip`` token is
      ``prid``, the ``remote`` one ``alert_prid``.
    - ``fcm``: ``[A-Za-z0-9_:.-]``, at most 1024 characters (Google documents no fixed
      length; 200, the APNs bound, is too tight for some FCM tokens seen in the wild).
    - ``webpush``: an ``https://`` URI with a host (RFC 8030 §5), at most 4096 characters;
      ``pn-param`` MUST NOT be used with it (RFC 8599 §12) and is rejected.
    - anything else: printable ASCII without spaces, at most 1024 characters.

No VoIP token
    ``prid`` is always the token to push for a call. When the only token is known to be a
    non-VoIP one (``TOK:remote`` alone, an APNs ``pn-param`` whose services lack ``voip``, or
    a legacy ``app-id`` without ``.voip``), ``alert_prid`` is set to the same token:
    ``prid == alert_prid`` means "send an alert push, there is no PushKit token"
    (:func:`has_voip_token`).

APNs pn-param -> app_id (RFC 8599 §9: ``<TeamID>.<BundleID>.<service>``)
    The first ``.`` ends the Team ID; the *last* ``.`` separates the bundle id from the
    service part, which may list several services joined by ``&`` (liblinphone)::

        DEF123GHIJ.com.example.yourexampleapp.voip -> app_id com.example.yourexampleapp
        ABCD1234.org.linphone.phone.voip&remote   -> app_id org.linphone.phone
        ABCD1234.org.linphone.phone.remote&voip   -> app_id org.linphone.phone
        TEAM.bundle                               -> 400 (no service part)

    ``param`` keeps the unescaped pn-param as given; :func:`split_apns_param` re-parses it.

Legacy Linphone (``pn-type`` / ``pn-tok`` / ``app-id``), used only without ``pn-provider``
    ``pn-type=apple`` -> ``apns``; ``google``/``firebase`` -> ``fcm``; other values pass
    through lower-cased (and meet 555 if unsupported). For apple, ``app-id`` ends in
    ``.prod`` or ``.dev`` (``.dev`` -> provider ``apns.dev``); a ``.voip`` before that marks
    a PushKit token, its absence a non-VoIP one (without any ``app-id`` the token is
    taken as VoIP, as in the RFC form)::

        pn-type=apple;pn-tok=AB12;app-id=org.example.app.voip.prod
            -> PushTarget("apns", "ab12", app_id="org.example.app")
        pn-type=apple;pn-tok=AB12;app-id=org.example.app.dev
            -> PushTarget("apns.dev", "ab12", alert_prid="ab12", app_id="org.example.app")
        pn-type=firebase;pn-tok=TOKEN;app-id=929724111839
            -> PushTarget("fcm", "TOKEN", param="929724111839")

    ``pn-msg-str``, ``pn-call-str``, ``pn-call-snd``, ``pn-msg-snd``, ``pn-groupchat-str``,
    ``pn-timeout``, ``pn-silent`` are ignored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final
from urllib.parse import unquote_to_bytes, urlsplit

from sipwake.policy.bindings import PushTarget
from sipwake.sip.errors import ParseError, ProtocolError
from sipwake.sip.uri import URI, Params
from sipwake.sip.values import Value

APNS_PRID_MAX = 200
FCM_PRID_MAX = 1024
WEBPUSH_PRID_MAX = 4096
OTHER_PRID_MAX = 1024
PARAM_MAX = 255
PURR_MAX = 255

_PROVIDER_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_HEX_RE = re.compile(r"(?:[0-9a-fA-F]{2})+")
_FCM_RE = re.compile(r"[A-Za-z0-9_:.\-]+")
_PRINTABLE_RE = re.compile(r"[\x21-\x7e]+")
_BAD_ESCAPE_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_APNS_TEAM_RE = re.compile(r"[A-Za-z0-9]+")
_APNS_BUNDLE_RE = re.compile(r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")
_SERVICE_RE = re.compile(r"[A-Za-z0-9_-]+")
_LEGACY_TYPES = {"apple": "apns", "google": "fcm", "firebase": "fcm"}


class PushParamError(ParseError):
    """A malformed push parameter in a REGISTER Contact: 400 naming the parameter."""

    def __init__(self, param: str, detail: str) -> None:
        super().__init__(f"{param}: {detail}")
        self.param = param


class ApnsParam(Value):
    """An APNs ``pn-param`` split per RFC 8599 §9. An immutable value. A plain class, not a
    dataclass: one is made per push REGISTER, and mypyc compiles a hand-written
    ``__init__`` where a dataclass's stays interpreted (sip/flows.py Flow)."""

    __slots__ = ("bundle_id", "services", "team_id")

    team_id: Final[str]
    bundle_id: Final[str]
    services: Final[tuple[str, ...]]  # e.g. ("voip",) or ("voip", "remote")

    def __init__(self, team_id: str, bundle_id: str, services: tuple[str, ...]) -> None:
        self.team_id = team_id
        self.bundle_id = bundle_id
        self.services = services

    def _items(self) -> tuple[tuple[str, object], ...]:
        return (
            ("team_id", self.team_id),
            ("bundle_id", self.bundle_id),
            ("services", self.services),
        )


def provider_family(provider: str) -> str:
    """``apns`` for ``apns.dev``; other names unchanged."""
    family, dot, env = provider.partition(".")
    return family if dot and env == "dev" else provider


def is_sandbox(target: PushTarget) -> bool:
    """True when the UA registered with ``pn-provider=apns.dev`` (or legacy ``.dev``)."""
    return target.provider != provider_family(target.provider)


def has_voip_token(target: PushTarget) -> bool:
    """False when the only token is a non-VoIP one (see "No VoIP token" above)."""
    return target.prid != target.alert_prid


def split_apns_param(param: str) -> ApnsParam:
    """``TEAMID.bundle.id.voip&remote`` -> ApnsParam; 400 naming pn-param when malformed."""
    team, dot, rest = param.partition(".")
    bundle, dot2, service_text = rest.rpartition(".")
    if not dot or not dot2 or not bundle:
        raise PushParamError("pn-param", "APNs pn-param must be TeamID.BundleID.service")
    if not _APNS_TEAM_RE.fullmatch(team):
        raise PushParamError("pn-param", "bad APNs team id")
    if not _APNS_BUNDLE_RE.fullmatch(bundle):
        raise PushParamError("pn-param", "bad APNs bundle id")
    services = tuple(service_text.split("&"))
    if not all(_SERVICE_RE.fullmatch(s) for s in services):
        raise PushParamError("pn-param", "bad APNs service list")
    return ApnsParam(team, bundle, services)


def parse_push_target(uri: URI, contact_params: Params) -> PushTarget | None:
    """Push target of one REGISTER Contact, or None (no push requested). See module doc."""
    get = _Lookup(uri.params, contact_params)
    provider_raw = get.raw("pn-provider")
    if provider_raw is not None or get.present("pn-prid") or get.present("pn-param"):
        return _parse_rfc8599(get, provider_raw)
    if get.present("pn-type") or get.present("pn-tok"):
        return _parse_legacy(get)
    return None


def push_query(uri: URI, contact_params: Params) -> tuple[str, ...] | None:
    """Providers a query REGISTER asks about (RFC 8599 §4.1.5): None when the Contact has no
    ``pn-provider`` or has a ``pn-prid`` (then it is a push request, not a query); ``()``
    for a valueless ``pn-provider`` ("which do you support?")."""
    get = _Lookup(uri.params, contact_params)
    raw = get.raw("pn-provider")
    if raw is None or get.present("pn-prid"):
        return None
    if raw == "":
        return ()
    return (_provider(get.value("pn-provider")),)


def check_provider_supported(target: PushTarget | str, supported: set[str]) -> None:
    """Raise 555 (RFC 8599 §8.1, §13.3) unless the provider, or its family (``apns`` for
    ``apns.dev``), is in ``supported``. Only meaningful on REGISTER responses."""
    provider = target if isinstance(target, str) else target.provider
    if provider in supported or provider_family(provider) in supported:
        return
    raise ProtocolError(
        f"pn-provider {provider[:64]!r} not supported",
        status=555,
        reason="Push Notification Service Not Supported",
    )


def feature_caps(
    provider: str, *, pnsreg: int | None = None, vapid: str | None = None, purr: str | None = None
) -> str:
    """One ``Feature-Caps`` value for one PNS type (RFC 8599 §8.2-§8.6, RFC 6809): the extra
    indicators of a PNS type go in the same header field as its ``+sip.pns``."""
    if not _PROVIDER_RE.fullmatch(provider):
        raise ValueError(f"bad provider name {provider!r}")
    out = [f'*;+sip.pns="{provider}"']
    if pnsreg is not None:
        out.append(f';+sip.pnsreg="{int(pnsreg)}"')
    for name, value in (("vapid", vapid), ("pnspurr", purr)):
        if value is not None:
            if not _PRINTABLE_RE.fullmatch(value) or '"' in value or "\\" in value:
                raise ValueError(f"bad +sip.{name} value")
            out.append(f';+sip.{name}="{value}"')
    return "".join(out)


def push_feature_caps(providers: Iterable[str]) -> list[str]:
    """``Feature-Caps`` values for a REGISTER 2xx: one header field *per PNS type*
    (RFC 8599 §8.2), in the given order, duplicates dropped. Add each with
    ``headers.add("Feature-Caps", value)``."""
    return [feature_caps(p) for p in dict.fromkeys(providers)]


class _Lookup:
    """Reads a push parameter from the URI, else from the Contact header params."""

    def __init__(self, uri_params: Params, header_params: Params) -> None:
        self._uri = uri_params
        self._hdr = header_params

    def present(self, name: str) -> bool:
        return name in self._uri or name in self._hdr

    def raw(self, name: str) -> str | None:
        """The unescaped value, ``""`` for a flag/empty parameter, None when absent."""
        if name in self._uri:
            value = self._uri[name]
        elif name in self._hdr:
            value = self._hdr[name]
            if value is not None and len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]  # header params may be quoted-strings (RFC 3261 §25.1)
        else:
            return None
        return _unescape(name, value or "")

    def value(self, name: str) -> str:
        value = self.raw(name)
        if not value:
            raise PushParamError(name, "missing" if value is None else "empty value")
        return value

    def optional(self, name: str) -> str:
        return "" if not self.present(name) else self.value(name)


def _unescape(name: str, value: str) -> str:
    if "%" in value:
        if _BAD_ESCAPE_RE.search(value):
            raise PushParamError(name, "bad %-escape")
        try:
            value = unquote_to_bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise PushParamError(name, "escaped value is not UTF-8") from None
    if any(c < " " or c == "\x7f" for c in value):
        raise PushParamError(name, "control character")
    return value


def _provider(value: str) -> str:
    provider = value.lower()
    if not _PROVIDER_RE.fullmatch(provider):
        raise PushParamError("pn-provider", "bad provider name")
    return provider


def _parse_rfc8599(get: _Lookup, provider_raw: str | None) -> PushTarget | None:
    if provider_raw is None:
        raise PushParamError("pn-provider", "missing (pn-prid/pn-param given)")
    if not get.present("pn-prid"):
        if provider_raw:
            _provider(provider_raw)  # a query still names a well-formed provider
        return None  # capability query or disable (RFC 8599 §4.1.2, §4.1.5)
    if not provider_raw:
        raise PushParamError("pn-provider", "empty value with pn-prid")
    provider = _provider(provider_raw)
    family = provider_family(provider)
    prid_text = get.value("pn-prid")
    param = get.optional("pn-param")
    if len(param) > PARAM_MAX:
        raise PushParamError("pn-param", f"longer than {PARAM_MAX}")
    purr = get.optional("pn-purr")
    if len(purr) > PURR_MAX or (purr and not _PRINTABLE_RE.fullmatch(purr)):
        raise PushParamError("pn-purr", "bad value")
    if family == "apns":
        return _apns_target(provider, prid_text, param, purr, get)
    if family == "webpush" and param:
        raise PushParamError("pn-param", "must not be used with webpush (RFC 8599 §12)")
    if param and not _PRINTABLE_RE.fullmatch(param):
        raise PushParamError("pn-param", "bad characters")
    return PushTarget(provider, _check_prid(family, prid_text), param=param, purr=purr)


def _apns_target(provider: str, prid_text: str, param: str, purr: str, get: _Lookup) -> PushTarget:
    # Annotated: mypyc infers ``voip``'s type from the swap below and miscompiles it.
    voip: str | None
    remote: str | None
    voip, remote = _apns_tokens(prid_text)
    app_id = ""
    if param:
        split = split_apns_param(param)
        app_id = split.bundle_id
        if ":" not in prid_text and "voip" not in split.services:
            remote, voip = voip, None  # an untyped token for a non-VoIP topic
    elif get.present("app-id"):
        app_id = _legacy_apple_app_id(get.value("app-id"))[0]
    if voip is None:
        assert remote is not None  # _apns_tokens returns at least one token
        return PushTarget(provider, remote, param, purr, alert_prid=remote, app_id=app_id)
    return PushTarget(provider, voip, param, purr, alert_prid=remote or "", app_id=app_id)


def _apns_tokens(text: str) -> tuple[str | None, str | None]:
    """``HEX`` -> (HEX, None); ``HEX:voip&HEX:remote`` in any order -> (voip, remote)."""
    if ":" not in text:
        return _apns_hex(text), None
    found: dict[str, str] = {}
    for part in text.split("&"):
        token, colon, service = part.rpartition(":")
        service = service.lower()
        if not colon or service not in ("voip", "remote"):
            raise PushParamError("pn-prid", "typed APNs token must be TOKEN:voip or TOKEN:remote")
        if service in found:
            raise PushParamError("pn-prid", f"two {service} tokens")
        found[service] = _apns_hex(token)
    return found.get("voip"), found.get("remote")


def _apns_hex(token: str) -> str:
    if not token:
        raise PushParamError("pn-prid", "empty token")
    if len(token) > APNS_PRID_MAX:
        raise PushParamError("pn-prid", f"APNs token longer than {APNS_PRID_MAX}")
    if not _HEX_RE.fullmatch(token):
        raise PushParamError("pn-prid", "APNs token is not hex")
    return token.lower()


def _check_prid(family: str, prid: str) -> str:
    if family == "fcm":
        limit, ok = FCM_PRID_MAX, _FCM_RE.fullmatch(prid) is not None
    elif family == "webpush":
        limit, ok = WEBPUSH_PRID_MAX, _PRINTABLE_RE.fullmatch(prid) is not None
        if ok:
            parts = urlsplit(prid)
            ok = parts.scheme == "https" and bool(parts.hostname)
    else:
        limit, ok = OTHER_PRID_MAX, _PRINTABLE_RE.fullmatch(prid) is not None
    if len(prid) > limit:
        raise PushParamError("pn-prid", f"longer than {limit}")
    if not ok:
        kind = "an https URI" if family == "webpush" else "made of allowed characters"
        raise PushParamError("pn-prid", f"{family} token is not {kind}")
    return prid


def _legacy_apple_app_id(app_id: str) -> tuple[str, bool, bool]:
    """``bundle[.voip][.prod|.dev]`` -> (bundle, voip, sandbox)."""
    sandbox = False
    base, dot, last = app_id.rpartition(".")
    if dot and last in ("prod", "dev"):
        app_id, sandbox = base, last == "dev"
    voip = app_id.endswith(".voip")
    if voip:
        app_id = app_id[: -len(".voip")]
    if not app_id or not _APNS_BUNDLE_RE.fullmatch(app_id):
        raise PushParamError("app-id", "bad bundle id")
    return app_id, voip, sandbox


def _parse_legacy(get: _Lookup) -> PushTarget:
    kind = get.value("pn-type").lower()
    provider = _LEGACY_TYPES.get(kind, kind)
    if not _PROVIDER_RE.fullmatch(provider):
        raise PushParamError("pn-type", "bad provider name")
    token = get.value("pn-tok")
    app_id = get.optional("app-id")
    if provider == "apns":
        try:
            hex_token = _apns_hex(token)
        except PushParamError as exc:
            raise PushParamError("pn-tok", exc.detail.removeprefix("pn-prid: ")) from None
        bundle, voip, sandbox = _legacy_apple_app_id(app_id) if app_id else ("", True, False)
        return PushTarget(
            "apns.dev" if sandbox else "apns",
            hex_token,
            alert_prid="" if voip else hex_token,
            app_id=bundle,
        )
    if app_id and not _PRINTABLE_RE.fullmatch(app_id):
        raise PushParamError("app-id", "bad characters")
    try:
        prid = _check_prid(provider_family(provider), token)
    except PushParamError as exc:
        raise PushParamError("pn-tok", exc.detail.removeprefix("pn-prid: ")) from None
    return PushTarget(provider, prid, param=app_id)
