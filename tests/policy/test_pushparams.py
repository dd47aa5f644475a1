"""RFC 8599 push parameters and their legacy Linphone forms -> PushTarget."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipwake.policy.bindings import PushTarget
from sipwake.policy.pushparams import (
    ApnsParam,
    PushParamError,
    check_provider_supported,
    feature_caps,
    has_voip_token,
    is_sandbox,
    parse_push_target,
    provider_family,
    push_feature_caps,
    push_query,
    split_apns_param,
)
from sipwake.sip.errors import ParseError, ProtocolError
from sipwake.sip.uri import URI, NameAddr

VOIP = "effdb4d8c32f845036ca3555003d44e98c82ea3f8437bd3499d14a17b039d5b6"
REMOTE = "fc86d3d61aafcc5d18aac9d4cedc6c70505080693fd21d0e62b5061fd4516ade"
RFC_TOKEN = "00fc13adff785122b4ad28809a3420982341241421348097878e577c991de8f0"


def target(contact: str) -> PushTarget | None:
    na = NameAddr.parse(contact)
    return parse_push_target(na.uri, na.params)


def error(contact: str) -> PushParamError:
    with pytest.raises(PushParamError) as info:
        target(contact)
    return info.value


# --- RFC 8599 form -----------------------------------------------------------------------


def test_no_push_params_is_none() -> None:
    assert target("<sip:alice@192.0.2.2;transport=tls>;expires=3600") is None


def test_rfc8599_apns_example() -> None:
    # RFC 8599 §9 example pn-param, apns.md example token.
    t = target(
        f"<sip:alice@192.0.2.2;transport=tls;pn-provider=apns;pn-prid={RFC_TOKEN}"
        ";pn-param=DEF123GHIJ.com.example.yourexampleapp.voip>"
    )
    assert t == PushTarget(
        "apns",
        RFC_TOKEN,
        param="DEF123GHIJ.com.example.yourexampleapp.voip",
        app_id="com.example.yourexampleapp",
    )
    assert not is_sandbox(t)
    assert has_voip_token(t)


def test_fcm_and_webpush() -> None:
    t = target("<sip:bob@h;pn-provider=fcm;pn-prid=dX1y:APA91bH-_x.z;pn-param=my-project-123>")
    assert t == PushTarget("fcm", "dX1y:APA91bH-_x.z", param="my-project-123")
    # RFC 8599 §8.7: ?, =, ;, %, , in a Web Push URI are %-escaped; stored unescaped.
    t = target(
        "<sip:bob@h;pn-provider=webpush"
        ";pn-prid=https://push.example.net/push/a%3Fb%3D1%3Bc%25d%2Ce>"
    )
    assert t is not None
    assert t.prid == "https://push.example.net/push/a?b=1;c%d,e"


def test_escaped_values_compare_equal_to_plain() -> None:
    plain = target(f"<sip:a@h;pn-provider=apns;pn-prid={VOIP};pn-param=T1.com.ex.voip>")
    escaped = target(
        f"<sip:a@h;pn-provider=%61pns;pn-prid={VOIP[:10]}%{ord(VOIP[10]):02X}{VOIP[11:]}"
        ";pn-param=T1%2Ecom.ex.voip>"
    )
    assert plain == escaped


def test_provider_is_lowercased_and_pn_purr_kept() -> None:
    t = target("<sip:a@h;pn-provider=FCM;pn-prid=tok;pn-purr=Zm9vYmFy>")
    assert t == PushTarget("fcm", "tok", purr="Zm9vYmFy")


def test_operator_provider_passes_through() -> None:
    t = target("<sip:a@h;pn-provider=acme-hook;pn-prid=device-17>")
    assert t == PushTarget("acme-hook", "device-17")


def test_sandbox_keeps_raw_provider() -> None:
    t = target(f"<sip:a@h;pn-provider=apns.dev;pn-prid={VOIP};pn-param=ABCD1234.org.ex.voip>")
    assert t is not None
    assert t.provider == "apns.dev"
    assert provider_family(t.provider) == "apns"
    assert is_sandbox(t)
    # validated with the APNs rules, too
    assert error("<sip:a@h;pn-provider=apns.dev;pn-prid=xyz>").param == "pn-prid"


def test_provider_family() -> None:
    assert provider_family("apns") == "apns"
    assert provider_family("fcm") == "fcm"
    assert provider_family("example.net") == "example.net"


# --- liblinphone typed tokens and services -------------------------------------------------


@pytest.mark.parametrize(
    "prid",
    [
        f"{VOIP.upper()}:voip&{REMOTE.upper()}:remote",
        f"{REMOTE}:remote&{VOIP}:voip",
    ],
)
@pytest.mark.parametrize(
    "param", ["ABCD1234.org.linphone.phone.voip&remote", "ABCD1234.org.linphone.phone.remote&voip"]
)
def test_liblinphone_ios(prid: str, param: str) -> None:
    # As liblinphone sends it (header order, extra pn-* ignored, +sip.instance outside <>).
    t = target(
        f"<sip:u@192.0.2.9:5061;pn-prid={prid};pn-provider=apns;pn-param={param}"
        ";pn-silent=1;pn-timeout=0;pn-msg-str=IM_MSG;pn-call-str=IC_MSG;pn-groupchat-str=GC_MSG"
        ";pn-call-snd=notes_of_the_optimistic.caf;pn-msg-snd=msg.caf;transport=tls>"
        ';+sip.instance="<urn:uuid:65f9b73f-d655-4dd3-8633-10d8122c5299>"'
    )
    assert t == PushTarget(
        "apns", VOIP, param=param, alert_prid=REMOTE, app_id="org.linphone.phone"
    )
    assert has_voip_token(t)


def test_voip_token_only() -> None:
    t = target(f"<sip:u@h;pn-provider=apns;pn-prid={VOIP}:voip;pn-param=T.a.b.voip>")
    assert t == PushTarget("apns", VOIP, param="T.a.b.voip", app_id="a.b")


def test_remote_token_only_has_no_voip() -> None:
    t = target(f"<sip:u@h;pn-provider=apns;pn-prid={REMOTE}:remote;pn-param=T.a.b.remote>")
    assert t == PushTarget("apns", REMOTE, param="T.a.b.remote", alert_prid=REMOTE, app_id="a.b")
    assert not has_voip_token(t)


def test_untyped_token_for_remote_topic_has_no_voip() -> None:
    t = target(f"<sip:u@h;pn-provider=apns;pn-prid={REMOTE};pn-param=T.a.b.remote>")
    assert t is not None
    assert not has_voip_token(t)


def test_split_apns_param() -> None:
    assert split_apns_param("DEF123GHIJ.com.example.yourexampleapp.voip") == ApnsParam(
        "DEF123GHIJ", "com.example.yourexampleapp", ("voip",)
    )
    assert split_apns_param("ABCD1234.org.linphone.phone.voip&remote").services == (
        "voip",
        "remote",
    )


@pytest.mark.parametrize(
    "param", ["TEAM.bundle", "TEAM", ".com.ex.voip", "T.com.ex.", "T.c..x.voip"]
)
def test_bad_apns_param(param: str) -> None:
    with pytest.raises(PushParamError) as info:
        split_apns_param(param)
    assert info.value.param == "pn-param"
    assert error(f"<sip:u@h;pn-provider=apns;pn-prid={VOIP};pn-param={param}>").param == (
        "pn-param"
    )


# --- legacy pn-type / pn-tok / app-id ------------------------------------------------------


def test_legacy_apple_voip_prod() -> None:
    t = target("<sip:u@h;app-id=org.example.app.voip.prod;pn-type=apple;pn-tok=AB12CD>")
    assert t == PushTarget("apns", "ab12cd", app_id="org.example.app")
    assert has_voip_token(t)


def test_legacy_apple_dev_without_voip() -> None:
    t = target("<sip:u@h;pn-type=apple;pn-tok=ab12;app-id=org.example.app.dev>")
    assert t == PushTarget("apns.dev", "ab12", alert_prid="ab12", app_id="org.example.app")
    assert is_sandbox(t)
    assert not has_voip_token(t)


def test_legacy_in_contact_header_params() -> None:
    # linphone_proxy_config_set_contact_parameters puts them outside the URI.
    t = target("<sip:u@h>;app-id=org.linphonetester;pn-tok=aaabbb;pn-type=apple;pn-msg-str=33")
    assert t == PushTarget("apns", "aaabbb", alert_prid="aaabbb", app_id="org.linphonetester")


@pytest.mark.parametrize("kind", ["google", "firebase", "Firebase"])
def test_legacy_android(kind: str) -> None:
    t = target(f"<sip:u@h;app-id=929724111839;pn-type={kind};pn-tok=dX:APA91-b>")
    assert t == PushTarget("fcm", "dX:APA91-b", param="929724111839")


def test_legacy_unknown_type_passes_through_then_555() -> None:
    t = target("<sip:u@h;pn-type=wp;pn-tok=abc>")
    assert t == PushTarget("wp", "abc")
    with pytest.raises(ProtocolError) as info:
        check_provider_supported(t, {"apns", "fcm"})
    assert info.value.status == 555


def test_rfc_form_wins_over_legacy() -> None:
    t = target(f"<sip:u@h;pn-provider=apns;pn-prid={VOIP};pn-type=google;pn-tok=zzz>")
    assert t == PushTarget("apns", VOIP)


def test_uri_wins_over_header_param() -> None:
    t = target("<sip:u@h;pn-provider=fcm;pn-prid=uri-token>;pn-prid=header-token")
    assert t is not None
    assert t.prid == "uri-token"


# --- malformed: each names its parameter ---------------------------------------------------


@pytest.mark.parametrize(
    ("contact", "param"),
    [
        (f"<sip:u@h;pn-prid={VOIP}>", "pn-provider"),
        ("<sip:u@h;pn-param=T.a.voip>", "pn-provider"),
        (f"<sip:u@h;pn-provider=;pn-prid={VOIP}>", "pn-provider"),
        (f"<sip:u@h;pn-provider;pn-prid={VOIP}>", "pn-provider"),
        (f"<sip:u@h;pn-provider=ap%20ns;pn-prid={VOIP}>", "pn-provider"),
        (f"<sip:u@h;pn-provider=apns/x;pn-prid={VOIP}>", "pn-provider"),
        ("<sip:u@h;pn-provider=apns;pn-prid=>", "pn-prid"),
        ("<sip:u@h;pn-provider=apns;pn-prid>", "pn-prid"),
        ("<sip:u@h;pn-provider=apns;pn-prid=not-hex>", "pn-prid"),
        ("<sip:u@h;pn-provider=apns;pn-prid=abc>", "pn-prid"),  # odd length
        (f"<sip:u@h;pn-provider=apns;pn-prid={'ab' * 101}>", "pn-prid"),
        (f"<sip:u@h;pn-provider=apns;pn-prid={VOIP}:pushkit>", "pn-prid"),
        (f"<sip:u@h;pn-provider=apns;pn-prid={VOIP}:voip&{REMOTE}:voip>", "pn-prid"),
        (f"<sip:u@h;pn-provider=apns;pn-prid=:voip&{REMOTE}:remote>", "pn-prid"),
        (f"<sip:u@h;pn-provider=apns;pn-prid={VOIP}&{REMOTE}>", "pn-prid"),
        (f"<sip:u@h;pn-provider=apns;pn-prid={VOIP};pn-param=>", "pn-param"),
        ("<sip:u@h;pn-provider=fcm;pn-prid=tok%0Aen>", "pn-prid"),
        ("<sip:u@h;pn-provider=fcm;pn-prid=tok/en>", "pn-prid"),
        (f"<sip:u@h;pn-provider=fcm;pn-prid={'a' * 1025}>", "pn-prid"),
        ("<sip:u@h;pn-provider=fcm;pn-prid=tok%zz>", "pn-prid"),
        ("<sip:u@h;pn-provider=fcm;pn-prid=tok%C3%28>", "pn-prid"),  # not UTF-8
        ("<sip:u@h;pn-provider=fcm;pn-prid=tok;pn-param=%01>", "pn-param"),
        (f"<sip:u@h;pn-provider=fcm;pn-prid=tok;pn-param={'p' * 256}>", "pn-param"),
        ("<sip:u@h;pn-provider=fcm;pn-prid=tok;pn-purr=a%20b>", "pn-purr"),
        ("<sip:u@h;pn-provider=webpush;pn-prid=http://push.example/x>", "pn-prid"),
        ("<sip:u@h;pn-provider=webpush;pn-prid=https://>", "pn-prid"),
        ("<sip:u@h;pn-provider=webpush;pn-prid=https://p.example/x;pn-param=x>", "pn-param"),
        (f"<sip:u@h;pn-provider=webpush;pn-prid=https://p.example/{'x' * 4096}>", "pn-prid"),
        ("<sip:u@h;pn-provider=x-hook;pn-prid=a%20b>", "pn-prid"),
        ("<sip:u@h;pn-tok=abc>", "pn-type"),
        ("<sip:u@h;pn-type=apple>", "pn-tok"),
        ("<sip:u@h;pn-type=apple;pn-tok=xyz;app-id=a.b.prod>", "pn-tok"),
        ("<sip:u@h;pn-type=apple;pn-tok=ab12;app-id=.prod>", "app-id"),
        ("<sip:u@h;pn-type=firebase;pn-tok=a%20b;app-id=1>", "pn-tok"),
    ],
)
def test_malformed_names_the_parameter(contact: str, param: str) -> None:
    exc = error(contact)
    assert exc.param == param
    assert isinstance(exc, ParseError)
    assert exc.status == 400
    assert param in exc.response_reason()


def test_webpush_length_limit_allows_long_endpoints() -> None:
    long = "https://p.example/" + "x" * 3000
    t = target(f"<sip:u@h;pn-provider=webpush;pn-prid={long}>")
    assert t is not None
    assert t.prid == long


# --- queries and disable (RFC 8599 §4.1.2, §4.1.5) -----------------------------------------


def test_provider_without_prid_is_query_not_target() -> None:
    na = NameAddr.parse("<sip:u@h;pn-provider=apns;pn-param=T.a.b.voip>;expires=0")
    assert parse_push_target(na.uri, na.params) is None
    assert push_query(na.uri, na.params) == ("apns",)


def test_empty_provider_queries_all() -> None:
    for contact in ("<sip:u@h;pn-provider>", "<sip:u@h;pn-provider=>"):
        na = NameAddr.parse(contact)
        assert parse_push_target(na.uri, na.params) is None
        assert push_query(na.uri, na.params) == ()


def test_push_query_none_for_requests_and_plain_contacts() -> None:
    na = NameAddr.parse(f"<sip:u@h;pn-provider=apns;pn-prid={VOIP}>")
    assert push_query(na.uri, na.params) is None
    na = NameAddr.parse("<sip:u@h>")
    assert push_query(na.uri, na.params) is None


def test_query_with_bad_provider_is_an_error() -> None:
    assert error("<sip:u@h;pn-provider=a%20b>").param == "pn-provider"


# --- Feature-Caps and 555 ------------------------------------------------------------------


def test_feature_caps_one_field_per_provider() -> None:
    # RFC 8599 §8.2: one Feature-Caps header field per PNS type.
    assert push_feature_caps(["apns", "fcm", "apns"]) == [
        '*;+sip.pns="apns"',
        '*;+sip.pns="fcm"',
    ]
    assert push_feature_caps([]) == []


def test_feature_caps_extra_indicators_in_same_field() -> None:
    assert feature_caps("apns", pnsreg=130) == '*;+sip.pns="apns";+sip.pnsreg="130"'
    assert feature_caps("webpush", vapid="BC3u-key_x") == (
        '*;+sip.pns="webpush";+sip.vapid="BC3u-key_x"'
    )
    assert feature_caps("fcm", purr="Zm9vYmFy") == '*;+sip.pns="fcm";+sip.pnspurr="Zm9vYmFy"'
    with pytest.raises(ValueError):
        feature_caps('apns"')
    with pytest.raises(ValueError):
        feature_caps("fcm", purr='a"b')


def test_check_provider_supported() -> None:
    check_provider_supported(PushTarget("apns", VOIP), {"apns", "fcm"})
    check_provider_supported(PushTarget("apns.dev", VOIP), {"apns"})  # family
    check_provider_supported("apns.dev", {"apns.dev"})
    with pytest.raises(ProtocolError) as info:
        check_provider_supported(PushTarget("webpush", "https://x.example/"), {"apns", "fcm"})
    assert info.value.status == 555
    assert info.value.reason == "Push Notification Service Not Supported"
    assert not isinstance(info.value, ParseError)


# --- properties ----------------------------------------------------------------------------

_printable = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40)


@given(provider=_printable, prid=_printable, param=_printable, tok=_printable)
def test_any_value_gives_target_none_or_push_param_error(
    provider: str, prid: str, param: str, tok: str
) -> None:
    uri = URI("sip", "h", params={"pn-provider": provider, "pn-prid": prid, "pn-param": param})
    try:
        t = parse_push_target(uri, {"pn-type": "apple", "pn-tok": tok})
    except PushParamError as exc:
        assert exc.param.startswith(("pn-", "app-id"))
    else:
        assert t is None or (t.prid and t.provider)


@given(token=st.binary(min_size=1, max_size=100))
def test_any_apns_token_round_trips(token: bytes) -> None:
    t = target(f"<sip:u@h;pn-provider=apns;pn-prid={token.hex().upper()}>")
    assert t is not None
    assert bytes.fromhex(t.prid) == token
