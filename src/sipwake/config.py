"""Configuration: a TOML file decoded into frozen, typed structures.

Every section is a msgspec ``Struct`` (frozen, unknown fields forbidden, keyword-only), so a
typo in a key is an error rather than a silently ignored setting, and a ``Config`` can be
shared by every component without anyone mutating it. ``Config()`` alone is a usable
development configuration.

Checks that types cannot express (port ranges, T1 <= T2, listeners that need a certificate,
...) live in each struct's ``__post_init__``, so they run both when decoding a file and when
code builds a struct directly (tests, the demo). They raise ``_Invalid`` with a path relative
to the struct; msgspec keeps it as the ``__cause__`` of its ValidationError and prefixes the
location, which ``_describe`` joins into ``listen[0].port: ...``.

Adding a section later (registrar, auth, users, push providers, api, cluster): write a
Struct with the same class options (spelled out, not splatted, so type checkers see
``frozen``), give every field a default, add it to ``Config`` with
``field(default_factory=...)`` and document every key, with its ``# Default:``, in
``sipwake.sample.toml`` (tests/test_config.py fails until the sample names every field).
"""

from __future__ import annotations

import ipaddress
import re
import socket
import tomllib
from os import PathLike
from typing import Any, Final, Literal, get_args, get_origin, get_type_hints
from urllib.parse import SplitResult, urlsplit

import msgspec
from msgspec import Struct, field

from sipwake.config_guards import AuthConfig, OverloadConfig
from sipwake.config_providers import ApnsConfig, FcmConfig, WebhookConfig, WebPushConfig, _Invalid
from sipwake.sip.codec import Limits

__all__ = [
    "LOG_FORMATS",
    "LOG_LEVELS",
    "STORAGE_SCHEMES",
    "TRANSPORTS",
    "ApiConfig",
    "ApnsConfig",
    "AuthConfig",
    "Config",
    "ConfigError",
    "EdgeConfig",
    "FcmConfig",
    "ListenConfig",
    "MessageConfig",
    "OverloadConfig",
    "ProxyConfig",
    "PushConfig",
    "RegistrarConfig",
    "ServerConfig",
    "SetupError",
    "SipConfig",
    "StorageConfig",
    "TlsConfig",
    "WebPushConfig",
    "WebhookConfig",
    "load_config",
    "loads_config",
    "parse_hostport",
]

Transport = Literal["udp", "tcp", "tls", "ws", "wss"]
LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["text", "json"]

TRANSPORTS: Final[tuple[str, ...]] = get_args(Transport)
LOG_LEVELS: Final[tuple[str, ...]] = get_args(LogLevel)
LOG_FORMATS: Final[tuple[str, ...]] = get_args(LogFormat)
STORAGE_SCHEMES: Final = ("memory", "sqlite", "redis", "rediss", "redis+sentinel")
# Transports that run over TLS and so need our certificate (RFC 3261 §26.2, RFC 7118 §5).
SECURE_TRANSPORTS: Final = frozenset({"tls", "wss"})

# sip:host[:port][;transport=x]: what [edge] upstream accepts (RFC 3261 §19.1.1, no user).
_UPSTREAM_RE: Final = re.compile(
    r"sips?:(?P<hostport>\[[0-9a-fA-F:.]+\](?::\d+)?|[^;:@\[\]]+(?::\d+)?)"
    r"(?:;transport=(?P<transport>[A-Za-z]+))?(?:;lr)?"
)
_HOSTNAME_RE: Final = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names file, key path and reason."""


class SetupError(ConfigError):
    """A configured resource cannot be used: a file it names, a port, a server. ``key`` is
    the config path (``tls.cert_file``, ``listen[1]``); the CLI puts the file name first, so
    the operator reads one line: ``sipwake.toml: tls.cert_file: /x.pem: no such file``."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason

    def located(self, source: str) -> str:
        return f"{source}: {self.key}: {self.reason}"


def _check_port(path: str, port: int, *, allow_zero: bool) -> None:
    low = 0 if allow_zero else 1
    if not low <= port <= 65535:
        raise _Invalid(path, f"must be between {low} and 65535, got {port}")


def parse_hostport(text: str) -> tuple[str, int | None]:
    """Split ``host[:port]`` (IPv6 in brackets, RFC 3261 §25.1 hostport); raise ValueError."""
    host: str = text
    port_text: str | None = None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"unclosed '[' in {text!r}")
        host, rest = text[1:end], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError(f"unexpected {rest!r} after ']'")
        port_text = rest[1:] if rest else None
        ipaddress.IPv6Address(host)  # raises ValueError with its own message
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif ":" in text:
        ipaddress.IPv6Address(text)  # a bare IPv6 literal, no port
    if not host:
        raise ValueError("empty host")
    if ":" not in host and not _HOSTNAME_RE.fullmatch(host):
        raise ValueError(f"{host!r} is not a host name or IP address")
    if port_text is None:
        return host, None
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"bad port {port_text!r}")
    return host, int(port_text)


class ServerConfig(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """[server]: who we are."""

    # Domains we are registrar and proxy for (requests to them are ours: OPTIONS -> 200,
    # REGISTER accepted; RFC 3261 §10.3 step 1). Loopback by default so a local test works.
    domains: tuple[str, ...] = ("localhost", "127.0.0.1")
    node_id: str = ""  # "" means the host name; see ``node_name``
    # Processes sharing the listening ports (SO_REUSEPORT); more than 1 needs a shared
    # store (redis://...): see docs/scale-out.md. ``sipwake serve --workers N`` overrides.
    workers: int = 1
    log_level: LogLevel = "info"
    log_format: LogFormat = "text"
    # SIGTERM: new INVITEs get 503 + Retry-After, held calls have this long to finish,
    # then every caller still waiting gets a final answer (503) and the process exits.
    drain_timeout: float = 30.0

    def __post_init__(self) -> None:
        if not 0 <= self.drain_timeout <= 3600:
            raise _Invalid("drain_timeout", "must be between 0 and 3600 seconds")
        if not self.domains:
            raise _Invalid("domains", "must name at least one domain")
        for i, domain in enumerate(self.domains):
            try:
                _, port = parse_hostport(domain)
            except ValueError as exc:
                raise _Invalid(f"domains[{i}]", str(exc)) from None
            if port is not None:
                raise _Invalid(f"domains[{i}]", "a domain has no port")
        if self.node_id != self.node_id.strip() or any(c.isspace() for c in self.node_id):
            raise _Invalid("node_id", "must not contain white space")
        if not 1 <= self.workers <= 64:
            raise _Invalid("workers", "must be between 1 and 64")

    @property
    def node_name(self) -> str:
        """The node id used in logs, cluster messages and generated ids."""
        return self.node_id or socket.gethostname()


class ListenConfig(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One [[listen]] entry: a socket to serve SIP on."""

    transport: Transport = "udp"
    host: str = "127.0.0.1"  # IPv4 or IPv6 literal; "0.0.0.0" / "::" for all addresses
    port: int = 5060  # 0 picks a free port (tests, demo)
    # host[:port] written into Via/Record-Route when the socket address is not what peers
    # can reach (NAT, public name; RFC 3261 §18.2.1, §16.6 step 4). "" means host:port.
    advertise: str = ""

    def __post_init__(self) -> None:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            raise _Invalid("host", f"{self.host!r} is not an IPv4 or IPv6 address") from None
        _check_port("port", self.port, allow_zero=True)
        if self.advertise:
            try:
                parse_hostport(self.advertise)
            except ValueError as exc:
                raise _Invalid("advertise", str(exc)) from None

    @property
    def secure(self) -> bool:
        return self.transport in SECURE_TRANSPORTS

    @property
    def advertised(self) -> tuple[str, int | None]:
        """(host, port) to put in Via/Record-Route; port None means "use the bound port"."""
        if self.advertise:
            return parse_hostport(self.advertise)
        return self.host, self.port or None


def _default_listeners() -> tuple[ListenConfig, ...]:
    # UDP and TCP both: RFC 3261 §18 requires a proxy to implement both, and TCP is needed
    # for messages too large for UDP (§18.1.1). Loopback only until a file says otherwise.
    return (ListenConfig(transport="udp"), ListenConfig(transport="tcp"))


class TlsConfig(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """[tls]: certificate for tls/wss listeners and trust for outgoing TLS connections."""

    cert_file: str = ""  # PEM certificate chain; required by tls/wss listeners
    key_file: str = ""  # PEM private key
    ca_file: str = ""  # CA bundle; "" means the system trust store
    verify_client: bool = False  # ask for and check client certificates (mutual TLS)
    verify_server: bool = True  # check the certificate of servers we connect to

    def __post_init__(self) -> None:
        if bool(self.cert_file) != bool(self.key_file):
            missing = "key_file" if self.cert_file else "cert_file"
            raise _Invalid(missing, "cert_file and key_file must be set together")


class SipConfig(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """[sip]: protocol timers (seconds) and message limits."""

    t1: float = 0.5  # RTT estimate (RFC 3261 §17.1.1.1)
    t2: float = 4.0  # maximum retransmit interval for non-INVITE requests and INVITE responses
    t4: float = 5.0  # maximum time a message stays in the network (§17.1.2.2)
    # Proxy INVITE timer; §16.6 step 11 says it MUST be more than 3 minutes. Only positivity
    # is enforced here so tests can shorten it.
    timer_c: float = 180.0
    max_message_size: int = 65535
    max_headers: int = 200
    max_line_length: int = 8192
    idle_timeout: float = 600.0  # close TCP/TLS/WS connections idle this long
    user_agent: str = "sipwake"  # Server header (§20.35); "" sends none
    max_connections: int = 10000  # TCP/TLS/WS connections accepted at once, in total ...
    max_connections_per_ip: int = 500  # ... and from one address
    message_timeout: float = 10.0  # to complete a message once begun (tcp_msg_read_timeout)
    tls_handshake_timeout: float = 10.0  # to complete a TLS handshake (TLS and WSS)

    def __post_init__(self) -> None:
        for name in ("max_connections", "max_connections_per_ip"):
            if getattr(self, name) < 1:
                raise _Invalid(name, f"must be at least 1, got {getattr(self, name)}")
        seconds = ("t1", "t2", "t4", "timer_c", "idle_timeout", "message_timeout")
        for name in (*seconds, "tls_handshake_timeout"):
            value = getattr(self, name)
            if not value > 0 or value == float("inf"):
                raise _Invalid(name, f"must be a positive number of seconds, got {value}")
        if self.t1 > self.t2:
            # T2 caps the doubling of T1 (§17.1.2.2); T1 above it would invert the backoff.
            raise _Invalid("t2", f"must be >= t1 ({self.t1}), got {self.t2}")
        for name in ("max_message_size", "max_headers", "max_line_length"):
            if getattr(self, name) <= 0:
                raise _Invalid(name, f"must be positive, got {getattr(self, name)}")

    def limits(self) -> Limits:
        """Parser limits for sipwake.sip.codec."""
        return Limits(
            max_message_size=self.max_message_size,
            max_headers=self.max_headers,
            max_line_length=self.max_line_length,
        )


# Relative to the working directory: `sipwake serve` with no file must work for a developer
# without root (/var/lib needs it) and keep registrations across restarts (memory:// would
# not). Packaged deployments set an absolute path, as the sample does.
DEFAULT_STORAGE_URL: Final = "sqlite:var/sipwake.db"


class StorageConfig(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """[storage]: where bindings and held calls live.

    URL forms: ``memory://``; ``sqlite:relative/path.db`` or ``sqlite:///absolute/path.db``
    (the path is the URL path, as in a file: URL, RFC 8089); ``redis://[:password@]host[:port]
    [/db]`` and ``rediss://`` for Redis over TLS; ``redis+sentinel://h1:26379,h2/service[/db]``
    for Redis Sentinel.
    """

    url: str = DEFAULT_STORAGE_URL

    def __post_init__(self) -> None:
        if self.url.lower().startswith("redis+sentinel:"):
            # A host list (h1:26379,h2) is no RFC 3986 authority: the storage factory's own
            # parser is the one authority on this form.
            from sipwake.storage.factory import parse_sentinel_url

            try:
                parse_sentinel_url(self.url)
            except ValueError as exc:
                raise _Invalid("url", str(exc)) from None
            return
        try:
            parts = urlsplit(self.url)
            port = parts.port  # raises ValueError on a non-numeric or out-of-range port
        except ValueError as exc:
            raise _Invalid("url", f"malformed URL: {exc}") from None
        scheme = parts.scheme.lower()
        if scheme not in STORAGE_SCHEMES:
            known = ", ".join(f"{s}:" for s in STORAGE_SCHEMES)
            raise _Invalid("url", f"unknown scheme in {self.url!r} (known: {known})")
        if scheme == "sqlite" and (parts.netloc or not parts.path or parts.path == "/"):
            raise _Invalid("url", "expected sqlite:relative/path.db or sqlite:///absolute/path")
        if scheme.startswith("redis"):
            if not parts.hostname:
                raise _Invalid("url", "redis URL needs a host")
            if port == 0:
                raise _Invalid("url", "redis port must be between 1 and 65535")
            db = parts.path.lstrip("/")
            if db and not db.isdigit():
                raise _Invalid("url", f"redis database must be a number, got {db!r}")

    @property
    def scheme(self) -> str:
        return urlsplit(self.url).scheme.lower()

    @property
    def sqlite_path(self) -> str:
        """The database file for a sqlite: URL."""
        if self.scheme != "sqlite":
            raise ValueError(f"not a sqlite URL: {self.url}")
        return urlsplit(self.url).path

    def redacted_url(self) -> str:
        """The URL with any password replaced, for logs and summaries."""
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        netloc = parts.netloc.rsplit("@", 1)[1]
        user = f"{parts.username}:" if parts.username else ":"
        return SplitResult(parts.scheme, f"{user}***@{netloc}", *parts[2:]).geturl()


class RegistrarConfig(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """[registrar]: binding lifetimes (RFC 3261 §10.3, RFC 8599)."""

    min_expires: int = 60  # below this a REGISTER gets 423 with Min-Expires (§10.3 step 7)
    max_expires: int = 3600  # longer requests are shortened to this
    default_expires: int = 3600  # when the REGISTER names none
    # Bindings with a push target may live this long: a sleeping iOS app cannot refresh.
    push_max_expires: int = 7 * 86400
    max_bindings_per_aor: int = 20  # the oldest non-push binding is evicted past this
    purge_interval: float = 60.0  # seconds between sweeps of expired bindings
    # RFC 5626 §5.4: Flow-Timer in the 200 of an outbound (reg-id) REGISTER, the seconds
    # within which the client must send a keep-alive (CRLF, or STUN over UDP) so a NAT
    # keeps its flow open; 0 sends none (the client's default, e.g. 120 s).
    flow_timer: int = 0

    def __post_init__(self) -> None:
        for name in ("min_expires", "max_expires", "default_expires", "push_max_expires"):
            if getattr(self, name) <= 0:
                raise _Invalid(
                    name, f"must be a positive number of seconds, got {getattr(self, name)}"
                )
        if self.min_expires > self.max_expires:
            raise _Invalid("max_expires", f"must be >= min_expires ({self.min_expires})")
        if self.max_bindings_per_aor <= 0:
            raise _Invalid("max_bindings_per_aor", "must be positive")
        if not self.purge_interval > 0:
            raise _Invalid("purge_interval", "must be positive")
        if self.flow_timer < 0:
            raise _Invalid("flow_timer", "must not be negative")


class ProxyConfig(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """[proxy]: forwarding behaviour (RFC 3261 §16)."""

    record_route: bool = True  # stay in the dialog path (needed for phones behind NAT)
    relay_foreign: bool = False  # forward requests for domains that are not ours
    decline_ends_all: bool = True  # a 603 from one device ends the whole call (§16.7)


class PushConfig(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """[push]: holding calls for sleeping devices and waking them (RFC 8599)."""

    hold_window: float = 30.0  # how long a call waits for pushed devices (bounded by timer_c)
    send_180: bool = False  # send 180 Ringing after 110 Push sent
    unanswered_status: int = 480  # final answer when no device woke in time
    retry_after: int = 0  # Retry-After on that answer (0: none)
    cancel_grace: float = 30.0  # a device pushed for a call that ended since gets INVITE+CANCEL
    # A device with a push target and a live connection that answers the INVITE with
    # nothing at all this long is pushed as if asleep, its branch kept (0: never).
    live_timeout: float = 2.0
    missed_call_alert: bool = False  # alert push to the app's non-VoIP token for missed calls
    max_in_flight: int = 500  # concurrent pushes per provider
    # Push budget (policy/pushbudget.py): pushes per minute per device and calls that push
    # per minute per caller, each with a burst; 0 means unlimited.
    max_per_device: float = 10.0
    device_burst: int = 5
    max_per_source: float = 30.0
    source_burst: int = 10
    require_auth_for_push: bool = False  # only authenticated or trusted callers wake devices
    # Binding refresh (RFC 8599 §5.5, policy/refresh.py): the first refresh push this many
    # seconds before a push binding expires (0: none), then up to refresh_retries more,
    # refresh_backoff seconds apart and doubling, while the app does not REGISTER again.
    refresh_before: float = 120.0
    refresh_retries: int = 3
    refresh_backoff: float = 15.0
    # +sip.pnsreg offered in the REGISTER 200 to apps whose Contact says they can refresh
    # by themselves (+sip.pnsreg tag, RFC 8599 §5.6.1.1): refresh at least this many
    # seconds before expiry (the RFC asks for more than 120). 0: never offered.
    pnsreg: int = 130
    apns: tuple[ApnsConfig, ...] = ()
    fcm: tuple[FcmConfig, ...] = ()
    webpush: tuple[WebPushConfig, ...] = ()
    webhook: tuple[WebhookConfig, ...] = ()

    def __post_init__(self) -> None:
        if not 0 < self.hold_window <= 3600:
            raise _Invalid("hold_window", "must be between 0 and 3600 seconds")
        if not 400 <= self.unanswered_status <= 699:
            raise _Invalid("unanswered_status", "must be a 4xx-6xx status")
        if not 0 <= self.live_timeout <= 60:
            raise _Invalid("live_timeout", "must be between 0 and 60 seconds")
        if self.cancel_grace < 0 or self.retry_after < 0 or self.max_in_flight <= 0:
            raise _Invalid("cancel_grace", "cancel_grace/retry_after >= 0, max_in_flight > 0")
        for key in ("max_per_device", "max_per_source"):
            if not 0 <= getattr(self, key) <= 1e6:
                raise _Invalid(key, "must be between 0 (unlimited) and 1e6 per minute")
        for key in ("device_burst", "source_burst"):
            if getattr(self, key) < 1:
                raise _Invalid(key, "must be at least 1")
        for key in ("refresh_before", "refresh_retries", "refresh_backoff", "pnsreg"):
            if getattr(self, key) < 0:
                raise _Invalid(key, "must not be negative")
        if self.refresh_retries and not self.refresh_backoff:
            raise _Invalid("refresh_backoff", "must be above 0 when refresh_retries is")

    @property
    def configured(self) -> bool:
        return bool(self.apns or self.fcm or self.webpush or self.webhook)


class MessageConfig(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """[message]: SIP MESSAGEs (RFC 3428) for sleeping devices: stored, alert-pushed,
    delivered when the device registers (docs/app-developers.md "Messages")."""

    # Put the start of the text in the alert push. Off by default: the push goes through
    # Apple's or Google's servers, so with it on they see the text (the sender always shows).
    preview: bool = False
    store_for: float = 7 * 86400.0  # seconds a stored message waits for its device
    max_per_user: int = 100  # stored messages per user; one more drops the oldest

    def __post_init__(self) -> None:
        if not 0 < self.store_for <= 90 * 86400:
            raise _Invalid("store_for", f"must be between 0 and 90 days, got {self.store_for}")
        if self.max_per_user < 1:
            raise _Invalid("max_per_user", f"must be at least 1, got {self.max_per_user}")


class EdgeConfig(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """[edge]: sipwake in front of a registrar/SBC that stays as it is (docs/edge-mode.md).
    Present with an ``upstream``: REGISTERs are relayed there, calls come from there."""

    upstream: str = ""  # SIP URI of the unchanged registrar/SBC, e.g. sip:sbc.example.com
    upstream_expires: int = 3600  # lifetime we register upstream, whatever the app asked
    refresh_before: int = 300  # push the app this long before the upstream lifetime ends
    use_path: bool = False  # keep the app's Contact and add Path (RFC 3327) instead of ctid
    credentials: Literal["none", "store"] = "none"  # "store": refresh upstream ourselves

    def __post_init__(self) -> None:
        if not self.upstream:
            raise _Invalid("upstream", "is required in [edge] (the registrar's SIP URI)")
        m = _UPSTREAM_RE.fullmatch(self.upstream)
        if m is None:
            raise _Invalid(
                "upstream", f"{self.upstream!r} is not a sip: URI (sip:host[:port][;transport=])"
            )
        try:
            parse_hostport(m["hostport"])
        except ValueError as exc:
            raise _Invalid("upstream", str(exc)) from None
        transport = (m["transport"] or "udp").lower()
        if transport not in ("udp", "tcp", "tls"):
            raise _Invalid("upstream", f"transport {transport!r} must be udp, tcp or tls")
        if self.upstream_expires < 2:
            raise _Invalid(
                "upstream_expires", f"must be at least 2 seconds, got {self.upstream_expires}"
            )
        if not 0 < self.refresh_before < self.upstream_expires:
            raise _Invalid(
                "refresh_before",
                f"must be between 1 and upstream_expires - 1 ({self.upstream_expires - 1}), "
                f"got {self.refresh_before}",
            )
        if self.credentials == "store":
            raise _Invalid("credentials", '"store" is not implemented yet (docs/edge-mode.md)')


class ApiConfig(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """[api]: the HTTP API (decline links in pushes, /healthz, /metrics, admin)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8080  # 0 picks a free port
    tls: bool = False  # serve HTTPS with [tls] cert_file/key_file
    # Base URL apps use for decline links (what the Internet sees); "" means our own address.
    public_url: str = ""
    admin_token: str = ""  # bearer token for /admin; "" disables the admin routes
    # Finished calls whose timeline is kept for /admin/calls and the console (newest last).
    timeline_size: int = 1000

    def __post_init__(self) -> None:
        _check_port("port", self.port, allow_zero=True)
        if not 0 <= self.timeline_size <= 1_000_000:
            raise _Invalid("timeline_size", "must be between 0 and 1000000")


class Config(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The whole configuration. ``Config()`` is the embedded development default."""

    server: ServerConfig = field(default_factory=ServerConfig)
    listen: tuple[ListenConfig, ...] = field(default_factory=_default_listeners)
    tls: TlsConfig = field(default_factory=TlsConfig)
    sip: SipConfig = field(default_factory=SipConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    registrar: RegistrarConfig = field(default_factory=RegistrarConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    push: PushConfig = field(default_factory=PushConfig)
    message: MessageConfig = field(default_factory=MessageConfig)
    overload: OverloadConfig = field(default_factory=OverloadConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    edge: EdgeConfig | None = None  # absent: registrar mode

    def __post_init__(self) -> None:
        if not self.listen:
            raise _Invalid("listen", "at least one [[listen]] entry is needed")
        if self.api.tls and not (self.tls.cert_file and self.tls.key_file):
            raise _Invalid("api.tls", "needs tls.cert_file and tls.key_file")
        if self.push.hold_window > self.sip.timer_c:
            # The hold is a pending INVITE branch: Timer C bounds it (RFC 3261 §16.6 step 11).
            raise _Invalid("push.hold_window", f"must not exceed sip.timer_c ({self.sip.timer_c})")
        for i, lst in enumerate(self.listen):
            if lst.secure and not (self.tls.cert_file and self.tls.key_file):
                raise _Invalid(
                    f"listen[{i}].transport",
                    f"{lst.transport} listener needs tls.cert_file and tls.key_file",
                )
            for j, other in enumerate(self.listen[:i]):
                if _overlaps(lst, other):
                    raise _Invalid(
                        f"listen[{i}]",
                        f"{lst.host} port {lst.port} is already used by listen[{j}]",
                    )


def workers_problem(config: Config, workers: int) -> str | None:
    """Why ``workers`` processes cannot serve ``config``, or None. Several workers share
    state only through a shared store, and share ports only when the ports are fixed."""
    if workers <= 1:
        return None
    if not config.storage.url.lower().startswith(("redis://", "rediss://", "redis+sentinel://")):
        return (
            f'{workers} workers need storage.url = "redis://...": the SQLite and memory '
            "stores live inside one process, so workers would not see each other's bindings"
        )
    for i, lst in enumerate(config.listen):
        if lst.port == 0:
            return f"listen[{i}].port is 0: workers can only share a fixed port"
    if config.api.enabled and config.api.port == 0:
        return "api.port is 0: with several workers the API needs a fixed port"
    return None


def _overlaps(a: ListenConfig, b: ListenConfig) -> bool:
    """Would binding both sockets fail? tcp/tls/ws/wss all take a TCP port."""
    if (a.transport == "udp") != (b.transport == "udp") or a.port != b.port or a.port == 0:
        return False
    ha, hb = ipaddress.ip_address(a.host), ipaddress.ip_address(b.host)
    if ha.version != hb.version:
        return False  # asyncio sets IPV6_V6ONLY, so :: and 0.0.0.0 do not clash
    return ha == hb or ha.is_unspecified or hb.is_unspecified


_AT_RE: Final = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<at>[^`]*)`)?$", re.DOTALL)
_UNKNOWN_RE: Final = re.compile(r"^Object contains unknown field `(?P<name>[^`]*)`$")
_ENUM_RE: Final = re.compile(r"^Invalid enum value (?P<value>.*)$")


def _join(base: str, rel: str) -> str:
    if not rel:
        return base
    if not base or rel.startswith("["):
        return base + rel
    return f"{base}.{rel}"


def _describe(exc: msgspec.ValidationError) -> tuple[str, str]:
    """(key path, reason) from msgspec's "Expected `int`, got `str` - at `$.a[0].b`"."""
    match = _AT_RE.match(str(exc))
    assert match is not None  # the pattern matches any string
    msg, at = match["msg"], (match["at"] or "").lstrip(".")
    cause = exc.__cause__
    if isinstance(cause, _Invalid):
        return _join(at, cause.path), cause.reason
    if isinstance(cause, ValueError | TypeError):
        return at, str(cause)
    if unknown := _UNKNOWN_RE.match(msg):
        return _join(at, unknown["name"]), "unknown key"
    if enum := _ENUM_RE.match(msg):
        choices = _choices_at(at)
        reason = f"invalid value {enum['value']}"
        return at, f"{reason}, expected one of: {', '.join(choices)}" if choices else reason
    return at, msg.replace("`", "")[:1].lower() + msg.replace("`", "")[1:]


def _choices_at(path: str) -> tuple[str, ...] | None:
    """The values a Literal-typed key accepts, found by walking ``path`` (``push.apns[0].
    environment``) through the Config types, so every enum error lists them."""
    tp: Any = Config
    for name in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", path):
        if not (isinstance(tp, type) and issubclass(tp, Struct)):
            return None
        tp = get_type_hints(tp).get(name)
        while get_origin(tp) is tuple:  # a [[table]] list: descend into its element type
            tp = get_args(tp)[0]
    if get_origin(tp) is Literal:
        return tuple(str(v) for v in get_args(tp))
    return None


def config_from_dict(data: dict[str, Any], source: str = "<config>") -> Config:
    """Build a Config from already-parsed TOML/JSON data; errors name ``source``."""
    try:
        return msgspec.convert(data, Config)
    except msgspec.ValidationError as exc:
        path, reason = _describe(exc)
        raise ConfigError(
            f"{source}: {path}: {reason}" if path else f"{source}: {reason}"
        ) from None


def loads_config(text: str, source: str = "<string>") -> Config:
    """Parse TOML text into a Config."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}") from None
    return config_from_dict(data, source)


def load_config(path: str | PathLike[str]) -> Config:
    """Read and validate a TOML file. Relative paths inside it are kept as written (they
    resolve against the working directory of the server, like the default storage path)."""
    source = str(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")  # TOML is UTF-8 only (toml.io spec, "Spec")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: not UTF-8 ({exc.reason})") from None
    return loads_config(text, source)
