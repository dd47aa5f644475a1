"""The app-facing payload: fields, and the size limit cutting only the display name."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipwake.push.payload import (
    APNS_VOIP_LIMIT,
    DEFAULT_LIMIT,
    FCM_DATA_LIMIT,
    PayloadTooLarge,
    build_message_payload,
    build_payload,
    encoded_size,
    message_alert_text,
    message_preview,
)

CALL_ID = "1b4e28ba-2fa1-41d2-883f-0016d3cca427"


def make(display: str = "Alice", **kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "type": "call",
        "call_id": CALL_ID,
        "caller_uri": "sip:alice@example.com",
        "caller_display": display,
        "callee": "sip:bob@example.com",
        "sent_at": 1700000000.25,
        "expires_at": 1700000030.25,
        "sip_host": "sip.example.com",
        "sip_port": 5061,
        "sip_transport": "TLS",
        "sip_call_id": "a84b4c76e66710@pc33",
        "decline_url": "https://sip.example.com/decline?t=abc",
    }
    args.update(kw)
    return build_payload(**args)


def test_shape() -> None:
    assert make() == {
        "type": "call",
        "call_id": CALL_ID,
        "sip_call_id": "a84b4c76e66710@pc33",
        "caller": {"display": "Alice", "uri": "sip:alice@example.com"},
        "callee": "sip:bob@example.com",
        "sent_at": 1700000000.25,
        "expires_at": 1700000030.25,
        "decline_url": "https://sip.example.com/decline?t=abc",
        "sip": {"host": "sip.example.com", "port": 5061, "transport": "tls"},
    }


def test_long_display_name_is_cut_to_fit() -> None:
    payload = make(display="Ä" * 10_000)
    assert encoded_size(payload) <= FCM_DATA_LIMIT
    assert encoded_size(payload) > FCM_DATA_LIMIT - 10  # cut no more than needed
    assert payload["caller"]["display"].endswith("…")
    assert payload["call_id"] == CALL_ID


def test_reserve_leaves_room_for_the_provider() -> None:
    payload = make(display="x" * 10_000, limit=APNS_VOIP_LIMIT, reserve=1000)
    assert encoded_size(payload) <= APNS_VOIP_LIMIT - 1000


def test_ids_are_never_cut() -> None:
    with pytest.raises(PayloadTooLarge):
        make(decline_url="https://x/" + "a" * 5000)


@given(st.text(max_size=3000), st.integers(min_value=700, max_value=5120))
def test_always_fits_and_keeps_a_prefix(display: str, limit: int) -> None:
    payload = make(display=display, limit=limit)
    assert encoded_size(payload) <= limit
    shown = payload["caller"]["display"]
    assert shown == display or display.startswith(shown.removesuffix("…"))
    assert payload["call_id"] == CALL_ID and payload["callee"] == "sip:bob@example.com"


def message(**kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "message_id": "6f1c2e9a-0c4b-4e43-9a59-0d0a3b0c1d2e",
        "sip_call_id": "abc@pc33",
        "sender_uri": "sip:alice@example.com",
        "recipient": "sip:bob@example.com",
        "sent_at": 1700000000.5,
        "expires_at": 1700604800.5,
        "sip_host": "sip.example.com",
        "sip_port": 5061,
        "sip_transport": "TLS",
        "content_type": "text/plain",
        "sender_display": "Alice",
    }
    args.update(kw)
    return build_message_payload(**args)


def test_message_payload_shape() -> None:
    assert message(preview="hi") == {
        "type": "message",
        "message_id": "6f1c2e9a-0c4b-4e43-9a59-0d0a3b0c1d2e",
        "sip_call_id": "abc@pc33",
        "sender": {"display": "Alice", "uri": "sip:alice@example.com"},
        "recipient": "sip:bob@example.com",
        "content_type": "text/plain",
        "preview": "hi",
        "sent_at": 1700000000.5,
        "expires_at": 1700604800.5,
        "sip": {"host": "sip.example.com", "port": 5061, "transport": "tls"},
    }


def test_message_payload_cuts_preview_before_display() -> None:
    p = message(preview="x" * 5000, sender_display="Alice")
    assert encoded_size(p) <= DEFAULT_LIMIT
    assert p["preview"].endswith("…") and p["sender"]["display"] == "Alice"
    p = message(preview="x" * 5000, sender_display="A" * 5000)
    assert encoded_size(p) <= DEFAULT_LIMIT and p["preview"] == ""
    assert p["sender"]["display"].endswith("…")


def test_message_preview_of_plain_cpim_and_others() -> None:
    assert message_preview("text/plain; charset=utf-8", b"hello\r\n  world") == "hello world"
    cpim = (
        b"From: <sip:alice@example.com>\r\nNS: imdn <urn:ietf:params:imdn>\r\n\r\n"
        b"Content-Type: text/plain;charset=UTF-8\r\nContent-Length: 5\r\n\r\nhello"
    )
    assert message_preview("message/cpim", cpim) == "hello"
    receipt = cpim.replace(b"text/plain;charset=UTF-8", b"message/imdn+xml")
    assert message_preview("Message/CPIM", receipt) == ""
    assert message_preview("image/png", b"\x89PNG") == ""
    assert message_preview("text/plain", b"y" * 500, limit=10) == "y" * 9 + "…"
    assert message_alert_text("Alice", "") == "New message from Alice"
    assert message_alert_text("Alice", "hi") == "Alice: hi"
