"""URIs (RFC 3261 §19.1), name-addr (§20.10) and comma splitting (§7.3.1)."""

from __future__ import annotations

import pytest

from sipwake.sip.errors import ParseError
from sipwake.sip.uri import URI, NameAddr, parse_params, split_header_values, split_hostport


def test_full_sip_uri() -> None:
    uri = URI.parse(
        "sips:Alice:secret@Example.COM:5061;Transport=TLS;lr;maddr=192.0.2.1?subject=hi"
    )
    assert uri.scheme == "sips"
    assert (uri.user, uri.password) == ("Alice", "secret")  # the user part keeps its case
    assert (uri.host, uri.port) == ("example.com", 5061)
    assert uri.params == {"transport": "TLS", "lr": None, "maddr": "192.0.2.1"}
    assert uri.transport == "tls"
    assert uri.headers == "subject=hi"
    assert (
        str(uri) == "sips:Alice:secret@example.com:5061;transport=TLS;lr;maddr=192.0.2.1?subject=hi"
    )


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("sip:[2001:db8::1]", "[2001:db8::1]", None),
        ("sip:bob@[2001:DB8::1]:5070", "[2001:db8::1]", 5070),
        ("sip:[::ffff:192.0.2.1]:0;transport=tcp", "[::ffff:192.0.2.1]", 0),
        ("sip:192.0.2.1:65535", "192.0.2.1", 65535),
    ],
)
def test_hosts_and_ports(text: str, host: str, port: int | None) -> None:
    uri = URI.parse(text)
    assert (uri.host, uri.port) == (host, port)
    assert URI.parse(str(uri)) == uri


@pytest.mark.parametrize(
    "text",
    [
        "sip:",
        "sip",
        ":user@host",
        "sip:@example.com",
        "sip:bob@example.com:",
        "sip:bob@example.com:65536",
        "sip:bob@example.com:5x",
        "sip:bob@[2001:db8::1",
        "sip:bob@[2001:db8::1]x",
        "sip:bob@exa mple.com",
        "sip:bob@example.com;=x",
        "s p:bob@example.com",
        "<sip:bob@example.com>",
    ],
)
def test_bad_uris(text: str) -> None:
    with pytest.raises(ParseError) as info:
        URI.parse(text)
    assert info.value.status == 400


@pytest.mark.parametrize(
    "text",
    ["tel:+1-201-555-0123;phone-context=example.com", "urn:service:sos", "http://x.example/y"],
)
def test_other_schemes_are_opaque(text: str) -> None:
    uri = URI.parse(text)
    assert uri.opaque is not None and uri.host == ""
    assert str(uri) == text
    assert uri.aor() == text


def test_aor_drops_port_params_and_sips() -> None:
    assert URI.parse("sips:bob@Example.com:5061;transport=tls").aor() == "sip:bob@example.com"
    assert URI.parse("sip:example.com;lr").aor() == "sip:example.com"


def test_escapes_are_kept_as_written() -> None:
    """RFC 4475 §3.1.1.3: escaped characters are compared unescaped, but a proxy forwards
    them as they came; the URI keeps the text so serialising changes nothing."""
    uri = URI.parse("sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31")
    assert uri.user == "cal%6Cer"
    assert uri.params == {"%6c%72": None, "n%61me": "v%61lue%25%34%31"}


def test_semicolon_in_user_part() -> None:
    uri = URI.parse("sip:user;par=u%40example.net@example.com")
    assert uri.user == "user;par=u%40example.net" and uri.host == "example.com" and not uri.params


def test_parse_params() -> None:
    assert parse_params(" a = b ;; C ; d=", "x") == {"a": "b", "c": None, "d": ""}
    with pytest.raises(ParseError):
        parse_params("=v", "x")


def test_split_hostport() -> None:
    assert split_hostport("[::1]:5060", "x") == ("[::1]", 5060)
    assert split_hostport("host", "x") == ("host", None)
    for bad in ("", ":5060", "host:", "[::1]:", 'ho"st'):
        with pytest.raises(ParseError):
            split_hostport(bad, "x")


# -- name-addr --------------------------------------------------------------------------------


def test_name_addr_forms() -> None:
    a = NameAddr.parse('"Bob \\"B\\" \\\\ Smith" <sip:bob@example.com;lr>;tag=x;expires=60')
    assert a.display == 'Bob "B" \\ Smith'
    assert a.uri.params == {"lr": None}  # inside <> the params belong to the URI
    assert a.params == {"tag": "x", "expires": "60"} and a.tag == "x"
    assert NameAddr.parse(str(a)) == a

    b = NameAddr.parse("sip:bob@example.com;tag=y")  # without <> they belong to the header
    assert b.uri.params == {} and b.params == {"tag": "y"} and b.display is None

    c = NameAddr.parse("Bob Smith<sip:bob@example.com>")  # RFC 4475 "lwsdisp"
    assert c.display == "Bob Smith"

    star = NameAddr.parse(" * ")
    assert star.wildcard and str(star) == "*"


@pytest.mark.parametrize(
    "text",
    [
        "",
        '"unterminated <sip:bob@example.com>',
        "<sip:bob@example.com",
        "<sip:bob@example.com> junk",
        "sip:user@example.com?Route=%3Csip:sip.example.com%3E",  # RFC 4475 "regbadct"
        ";tag=1",
    ],
)
def test_bad_name_addrs(text: str) -> None:
    with pytest.raises(ParseError):
        NameAddr.parse(text)


def test_unicode_display_round_trip() -> None:
    a = NameAddr(URI.parse("sip:zoe@example.com"), display='Zoë "李" Ångström')
    assert NameAddr.parse(str(a)) == a


def test_split_header_values() -> None:
    value = '"Doe, John" <sip:j@example.com;x=a,b>, <sip:k@example.com> ,, sip:l@example.com'
    assert split_header_values(value) == [
        '"Doe, John" <sip:j@example.com;x=a,b>',
        "<sip:k@example.com>",
        "sip:l@example.com",
    ]
    assert split_header_values('"a\\",b", c') == ['"a\\",b"', "c"]
    assert split_header_values("   ") == []
