"""Configuration: TOML decoding, validation, error messages and the sample file."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipwake.config import (
    ApiConfig,
    AuthConfig,
    Config,
    ConfigError,
    EdgeConfig,
    ListenConfig,
    MessageConfig,
    OverloadConfig,
    ProxyConfig,
    PushConfig,
    RegistrarConfig,
    ServerConfig,
    SipConfig,
    StorageConfig,
    TlsConfig,
    config_from_dict,
    load_config,
    loads_config,
    parse_hostport,
)
from sipwake.sip.codec import Limits

SAMPLE = Path(__file__).resolve().parents[1] / "sipwake.sample.toml"
# Edge mode has its own sample: an [edge] section in the main one would switch it on.
EDGE_SAMPLE = SAMPLE.with_name("sipwake.edge.sample.toml")


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        loads_config(text, "sipwake.toml")
    return str(info.value)


# --- defaults -------------------------------------------------------------------------


def test_defaults_are_a_usable_development_config() -> None:
    config = Config()
    assert [(x.transport, x.host, x.port) for x in config.listen] == [
        ("udp", "127.0.0.1", 5060),
        ("tcp", "127.0.0.1", 5060),
    ]
    assert config.server.domains == ("localhost", "127.0.0.1")
    assert config.server.log_level == "info"
    assert config.server.log_format == "text"
    assert config.server.node_name  # the host name when node_id is ""
    assert config.storage.scheme == "sqlite"
    assert config.storage.sqlite_path == "var/sipwake.db"
    assert config.sip.limits() == Limits()
    assert (config.sip.t1, config.sip.t2, config.sip.t4, config.sip.timer_c) == (
        0.5,
        4.0,
        5.0,
        180.0,
    )


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.toml"
    path.write_text("")
    assert load_config(path) == Config()


def test_config_is_frozen_and_hashable() -> None:
    config = Config()
    with pytest.raises(AttributeError):
        config.sip = SipConfig()  # type: ignore[misc]
    with pytest.raises(AttributeError):
        config.listen[0].port = 1  # type: ignore[misc]
    assert hash(config) == hash(Config())


def test_full_file_is_decoded() -> None:
    config = loads_config(
        """
        [server]
        domains = ["sip.example.com"]
        node_id = "node-a"
        log_level = "debug"
        log_format = "json"
        [[listen]]
        transport = "tls"
        host = "::"
        port = 5061
        advertise = "[2001:db8::1]:5061"
        [tls]
        cert_file = "c.pem"
        key_file = "k.pem"
        [sip]
        t1 = 1
        max_headers = 50
        [storage]
        url = "redis://:secret@localhost:6379/2"
        """
    )
    assert config.server.node_name == "node-a"
    assert config.listen == (
        ListenConfig(transport="tls", host="::", port=5061, advertise="[2001:db8::1]:5061"),
    )
    assert config.listen[0].advertised == ("2001:db8::1", 5061)
    assert config.sip.t1 == 1.0  # a TOML integer is accepted for a float
    assert config.sip.limits().max_headers == 50
    assert config.storage.redacted_url() == "redis://:***@localhost:6379/2"


# --- error messages: file, key path, reason --------------------------------------------


def test_error_message_names_file_key_and_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("sipwake.toml").write_text('[[listen]]\nport = "5060"\n')
    with pytest.raises(ConfigError) as info:
        load_config("sipwake.toml")
    assert str(info.value) == "sipwake.toml: listen[0].port: expected int, got str"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("colour = 1", "sipwake.toml: colour: unknown key"),
        ("[server]\ndomain = ['x']", "sipwake.toml: server.domain: unknown key"),
        (
            "[[listen]]\nport = 1\n[[listen]]\nport = 2\nbind = 'x'",
            "sipwake.toml: listen[1].bind: unknown key",
        ),
        ("[sip]\nt1 = '0.5'", "sipwake.toml: sip.t1: expected float, got str"),
        ("[tls]\nverify_client = 1", "sipwake.toml: tls.verify_client: expected bool, got int"),
        ("server = 3", "sipwake.toml: server: expected object, got int"),
        ("[listen]\nport = 1", "sipwake.toml: listen: expected array, got object"),
        ("[server]\ndomains = 'x'", "sipwake.toml: server.domains: expected array, got str"),
        (
            "[[listen]]\ntransport = 'sctp'",
            "sipwake.toml: listen[0].transport: invalid value 'sctp', "
            "expected one of: udp, tcp, tls, ws, wss",
        ),
        (
            "[server]\nlog_format = 'xml'",
            "sipwake.toml: server.log_format: invalid value 'xml', expected one of: text, json",
        ),
    ],
)
def test_unknown_keys_and_wrong_types(text: str, message: str) -> None:
    assert error_of(text) == message


@pytest.mark.parametrize("port", [-1, 65536, 100000])
def test_bad_port(port: int) -> None:
    assert error_of(f"[[listen]]\nport = {port}") == (
        f"sipwake.toml: listen[0].port: must be between 0 and 65535, got {port}"
    )


def test_port_zero_means_any_free_port() -> None:
    assert loads_config("[[listen]]\nport = 0").listen[0].port == 0


@pytest.mark.parametrize("transport", ["tls", "wss"])
def test_secure_listener_needs_certificate(transport: str) -> None:
    text = f"[[listen]]\ntransport = 'udp'\n[[listen]]\ntransport = '{transport}'\nport = 5061"
    assert error_of(text) == (
        f"sipwake.toml: listen[1].transport: {transport} listener needs tls.cert_file and "
        "tls.key_file"
    )
    ok = loads_config(text + "\n[tls]\ncert_file = 'c.pem'\nkey_file = 'k.pem'")
    assert ok.listen[1].secure


def test_cert_without_key() -> None:
    assert error_of("[tls]\ncert_file = 'c.pem'") == (
        "sipwake.toml: tls.key_file: cert_file and key_file must be set together"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[listen]]\nhost = 'localhost'", "listen[0].host: 'localhost' is not an IPv4 or IPv6"),
        ("[[listen]]\nadvertise = 'a b'", "listen[0].advertise: 'a b' is not a host name"),
        ("[[listen]]\nadvertise = 'x.org:0'", "listen[0].advertise: bad port '0'"),
        ("[server]\ndomains = []", "server.domains: must name at least one domain"),
        ("[server]\ndomains = ['a.org', 'b.org:5060']", "server.domains[1]: a domain has no port"),
        ("[server]\nnode_id = 'a b'", "server.node_id: must not contain white space"),
        ("[sip]\nt1 = 5.0", "sip.t2: must be >= t1 (5.0), got 4.0"),
        ("[sip]\nt4 = 0", "sip.t4: must be a positive number of seconds, got 0"),
        ("[sip]\ntimer_c = -1", "sip.timer_c: must be a positive number of seconds, got -1"),
        ("[sip]\nidle_timeout = inf", "sip.idle_timeout: must be a positive number of seconds"),
        ("[sip]\nt1 = nan", "sip.t1: must be a positive number of seconds, got nan"),
        ("[sip]\nmax_headers = 0", "sip.max_headers: must be positive, got 0"),
        ("[sip]\nmax_message_size = -5", "sip.max_message_size: must be positive, got -5"),
        ("listen = []", "listen: at least one [[listen]] entry is needed"),
        (
            "[[listen]]\nport = 5070\n[[listen]]\nhost = '0.0.0.0'\nport = 5070",
            "listen[1]: 0.0.0.0 port 5070 is already used by listen[0]",
        ),
        (
            "[[listen]]\ntransport = 'tcp'\n[[listen]]\ntransport = 'ws'",
            "listen[1]: 127.0.0.1 port 5060 is already used by listen[0]",
        ),
    ],
)
def test_semantic_checks(text: str, message: str) -> None:
    assert error_of(text).startswith(f"sipwake.toml: {message}")


def test_listeners_that_can_share_a_port() -> None:
    config = loads_config(
        """
        [[listen]]
        transport = "udp"
        [[listen]]
        transport = "tcp"
        [[listen]]
        transport = "tcp"
        host = "::"
        [[listen]]
        transport = "udp"
        port = 0
        [[listen]]
        transport = "udp"
        port = 0
        """
    )
    assert len(config.listen) == 5


@pytest.mark.parametrize(
    "url",
    [
        "memory://",
        "sqlite:var/x.db",
        "sqlite:///var/lib/sipwake/sipwake.db",
        "redis://localhost",
        "redis://localhost:6379/0",
        "rediss://user:pw@redis.example.com:6380/3",
    ],
)
def test_good_storage_urls(url: str) -> None:
    assert StorageConfig(url=url).url == url


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("postgres://db/x", "unknown scheme in 'postgres://db/x'"),
        ("/var/lib/x.db", "unknown scheme"),
        ("sqlite:", "expected sqlite:relative/path.db"),
        ("sqlite://host/x.db", "expected sqlite:relative/path.db"),
        ("redis://", "redis URL needs a host"),
        ("redis://h:notaport/0", "malformed URL"),
        ("redis://h:6379/zero", "redis database must be a number"),
    ],
)
def test_bad_storage_urls(url: str, reason: str) -> None:
    assert error_of(f"[storage]\nurl = '{url}'").startswith(f"sipwake.toml: storage.url: {reason}")


def test_sqlite_paths() -> None:
    assert StorageConfig(url="sqlite:///abs/x.db").sqlite_path == "/abs/x.db"
    assert StorageConfig(url="sqlite:rel/x.db").sqlite_path == "rel/x.db"
    with pytest.raises(ValueError):
        _ = StorageConfig(url="memory://").sqlite_path


def test_direct_construction_is_validated_too() -> None:
    with pytest.raises(ValueError, match="port: must be between"):
        ListenConfig(port=70000)
    with pytest.raises(ValueError, match=r"needs tls\.cert_file"):
        Config(listen=(ListenConfig(transport="tls"),))
    with pytest.raises(ValueError, match="t2"):
        SipConfig(t1=2.0, t2=1.0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sip.example.com", ("sip.example.com", None)),
        ("sip.example.com:5070", ("sip.example.com", 5070)),
        ("192.0.2.1:5060", ("192.0.2.1", 5060)),
        ("[2001:db8::1]", ("2001:db8::1", None)),
        ("[2001:db8::1]:5061", ("2001:db8::1", 5061)),
        ("2001:db8::1", ("2001:db8::1", None)),
    ],
)
def test_parse_hostport(text: str, expected: tuple[str, int | None]) -> None:
    assert parse_hostport(text) == expected


@pytest.mark.parametrize(
    "text", ["", ":5060", "[::1", "[::1]x", "a:b:c", "x.org:", "-x.org", "x.org\n"]
)
def test_parse_hostport_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_hostport(text)


def test_listener_advertised_address() -> None:
    assert ListenConfig(host="10.0.0.1", port=5070).advertised == ("10.0.0.1", 5070)
    assert ListenConfig(port=0).advertised == ("127.0.0.1", None)
    assert ListenConfig(advertise="sip.example.com").advertised == ("sip.example.com", None)


# --- reading files ---------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=r"nope\.toml: cannot read: No such file"):
        load_config(path)


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path)


def test_invalid_toml(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[server\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: invalid TOML: ")
    assert "line 1" in str(info.value)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b"[server]\nnode_id = '\xe9'\n")
    with pytest.raises(ConfigError, match="invalid TOML: not UTF-8"):
        load_config(path)


_KEYS = st.sampled_from(
    ["server", "listen", "tls", "sip", "storage", "domains", "port", "host", "t1", "url", "x"]
)
_LEAVES = (
    st.none().map(lambda _: "")
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats()
    | st.text(max_size=20)
)
_VALUES = st.recursive(
    _LEAVES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_KEYS, _VALUES, max_size=5))
def test_any_data_gives_a_config_or_a_config_error(data: dict[str, Any]) -> None:
    # The only failure a caller has to handle is ConfigError, whatever the file holds.
    try:
        config_from_dict(data, "f.toml")
    except ConfigError as exc:
        assert str(exc).startswith("f.toml: ")


# --- the sample file -------------------------------------------------------------------


def _field_paths(struct: type[msgspec.Struct], prefix: str = "") -> set[str]:
    """Every leaf key of a config struct, e.g. ``listen.port`` (arrays of tables unindexed)."""
    paths: set[str] = set()
    for f in msgspec.structs.fields(struct):
        path = f"{prefix}{f.encode_name}"
        inner = f.type
        args = getattr(inner, "__args__", ())
        if args and isinstance(args[0], type) and issubclass(args[0], msgspec.Struct):
            inner = args[0]  # tuple[ListenConfig, ...]
        if isinstance(inner, type) and issubclass(inner, msgspec.Struct):
            paths |= _field_paths(inner, f"{path}.")
        else:
            paths.add(path)
    return paths


def _sample_paths(data: dict[str, Any], prefix: str = "") -> set[str]:
    paths: set[str] = set()
    for key, value in data.items():
        if isinstance(value, dict):
            paths |= _sample_paths(value, f"{prefix}{key}.")
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for item in value:
                paths |= _sample_paths(item, f"{prefix}{key}.")
        else:
            paths.add(f"{prefix}{key}")
    return paths


def test_sample_loads_with_the_values_it_shows() -> None:
    config = load_config(SAMPLE)
    assert config.server.domains == ("sip.example.com",)
    assert [(x.transport, x.host, x.port) for x in config.listen] == [
        ("udp", "0.0.0.0", 5060),
        ("tcp", "0.0.0.0", 5060),
    ]
    assert config.listen[0].advertised == ("sip.example.com", None)
    assert config.storage.sqlite_path == "/var/lib/sipwake/sipwake.db"
    assert config.sip == SipConfig()
    assert config.tls == TlsConfig()


def test_sample_sets_every_key() -> None:
    data = tomllib.loads(SAMPLE.read_text())
    edge = {p for p in _field_paths(Config) if p.startswith("edge.")}
    assert _sample_paths(data) == _field_paths(Config) - edge
    assert edge <= _sample_paths(tomllib.loads(EDGE_SAMPLE.read_text()))


def test_edge_sample_loads() -> None:
    config = load_config(EDGE_SAMPLE)
    assert config.edge == EdgeConfig(upstream="sip:sbc.example.com:5060;transport=udp")


_DEFAULTS: dict[str, msgspec.Struct] = {
    "server": ServerConfig(),
    "listen": ListenConfig(),
    "tls": TlsConfig(),
    "sip": SipConfig(),
    "storage": StorageConfig(),
    "registrar": RegistrarConfig(),
    "auth": AuthConfig(),
    "proxy": ProxyConfig(),
    "push": PushConfig(),
    "message": MessageConfig(),
    "overload": OverloadConfig(),
    "api": ApiConfig(),
    "edge": EdgeConfig(upstream="sip:sbc.example.com"),
}

# Provider entries have required keys and no meaningful defaults: the sample shows an
# example of each instead of "# Default:" claims.
_EXAMPLE_TABLES = ("push.apns.", "push.fcm.", "push.webpush.", "push.webhook.")
_EXAMPLE_KEYS = frozenset({"edge.upstream"})  # required, no default


def test_sample_default_comments_are_true() -> None:
    """Each key's comment ends with ``# Default: <TOML value>``: check it against the code."""
    table = ""
    last_default: str | None = None
    checked: set[str] = set()
    for line in (SAMPLE.read_text() + EDGE_SAMPLE.read_text()).splitlines():
        if header := re.fullmatch(r"\[\[?([\w.]+)\]\]?", line):
            table, last_default = header[1], None
        elif comment := re.fullmatch(r"# Default: (.+)", line):
            last_default = comment[1]
        elif (assign := re.fullmatch(r"(\w+) = .*", line)) and last_default is not None:
            key = assign[1]
            claimed = tomllib.loads(f"v = {last_default}")["v"]
            actual = msgspec.json.decode(msgspec.json.encode(getattr(_DEFAULTS[table], key)))
            assert claimed == actual, f"{table}.{key}: sample says {claimed!r}, code has {actual!r}"
            checked.add(f"{table}.{key}")
            last_default = None
    wanted = {
        p
        for p in _field_paths(Config)
        if not p.startswith(_EXAMPLE_TABLES) and p not in _EXAMPLE_KEYS
    }
    assert checked == wanted


def test_message_section_checks_its_values() -> None:
    assert Config().message.preview is False
    assert Config().message.store_for == 7 * 86400
    with pytest.raises(ConfigError, match=r"f\.toml: message\.max_per_user: must be at least 1"):
        loads_config("[message]\nmax_per_user = 0\n", "f.toml")
    with pytest.raises(ConfigError, match=r"message\.store_for: must be between"):
        loads_config("[message]\nstore_for = -1.0\n", "f.toml")


# --- [edge] -----------------------------------------------------------------------------


def test_no_edge_section_is_registrar_mode() -> None:
    assert loads_config("").edge is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("", "edge.upstream: is required in [edge] (the registrar's SIP URI)"),
        ("upstream = 'sbc.example.com'", "edge.upstream: 'sbc.example.com' is not a sip: URI"),
        ("upstream = 'sip:bob@sbc.example.com'", "edge.upstream: 'sip:bob@sbc.example.com' is not"),
        ("upstream = 'sip:sbc.example.com:99999'", "edge.upstream: bad port '99999'"),
        ("upstream = 'sip:sbc;transport=sctp'", "edge.upstream: transport 'sctp' must be udp"),
        ("upstream = 'sip:sbc'\nupstream_expires = 1", "edge.upstream_expires: must be at least 2"),
        ("upstream = 'sip:sbc'\nrefresh_before = 3600", "edge.refresh_before: must be between 1"),
        ("upstream = 'sip:sbc'\nrefresh_before = 0", "edge.refresh_before: must be between 1"),
        ("upstream = 'sip:sbc'\ncredentials = 'store'", 'edge.credentials: "store" is not'),
        ("upstream = 'sip:sbc'\ncredentials = 'keep'", "edge.credentials: invalid value 'keep'"),
        ("upstream = 'sip:sbc'\nexpires = 60", "edge.expires: unknown key"),
    ],
)
def test_bad_edge_values_name_the_key(body: str, message: str) -> None:
    assert error_of(f"[edge]\n{body}").startswith(f"sipwake.toml: {message}")


def test_edge_upstream_forms() -> None:
    for uri in (
        "sip:sbc.example.com",
        "sip:192.0.2.1:5070;transport=tcp",
        "sip:[2001:db8::1]:5060",
    ):
        assert loads_config(f"[edge]\nupstream = '{uri}'").edge == EdgeConfig(upstream=uri)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[sip]\nmax_connections = 0", "sip.max_connections: must be at least 1, got 0"),
        ("[sip]\nmessage_timeout = 0.0", "sip.message_timeout: must be a positive number"),
        ("[auth]\nknown_source_ttl = -1.0", "auth.known_source_ttl: must be positive"),
        ("[push]\ndevice_burst = 0", "push.device_burst: must be at least 1"),
        ("[push]\nmax_per_source = -2.0", "push.max_per_source: must be between 0"),
        ("[overload]\nmax_pending = 0", "overload.max_pending: must be positive, got 0"),
        ("[overload]\nmax_loop_lag = 0.0", "overload.max_loop_lag: must be positive"),
        ("[overload]\nmax_udp_delay = 0.0", "overload.max_udp_delay: must be positive"),
    ],
)
def test_hardening_keys_are_checked(text: str, message: str) -> None:
    assert message in error_of(text)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://hooks.example.com/", "must be an http(s)://host/... URL"),
        ("http:///push", "must be an http(s)://host/... URL"),
        ("https://hooks.example.com:99999/push", "has a bad port"),
        ("https://hooks.example.com:x/push", "has a bad port"),
    ],
)
def test_bad_webhook_urls_stop_start_up(url: str, reason: str) -> None:
    text = f"[[push.webhook]]\nprovider = 'acme'\nurl = '{url}'\nsecret = 's'"
    assert error_of(text).startswith(f"sipwake.toml: push.webhook[0].url: {reason}"), error_of(text)
