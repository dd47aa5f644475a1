"""The app-facing push payload: one shape for every provider (APNs, FCM, Web Push, webhook).

App developers: this dictionary is what your app receives (APNs VoIP: the whole
``PKPushPayload.dictionaryPayload``; FCM: the ``data`` map, where providers turn nested values
into JSON strings because FCM data values must be strings)::

    {
      "type": "call",                       # "call" | "cancel-notice" | "missed" | "refresh"
      "call_id": "1b4e28ba-2fa1-41d2-883f-0016d3cca427",
                                            # UUID, the same on every device and every retry:
                                            # use it as the CallKit call UUID
      "sip_call_id": "a84b4c76e66710@pc33", # SIP Call-ID of the INVITE (may be "")
      "caller": {"display": "Alice", "uri": "sip:alice@example.com"},
      "callee": "sip:bob@example.com",      # the AoR that was called
      "sent_at": 1700000000.25,             # unix seconds (float)
      "expires_at": 1700000030.25,          # unix seconds: ignore the call after this
      "decline_url": "https://sip.example.com/v1/calls/<call_id>/decline?t=...",  # may be ""
      "sip": {"host": "sip.example.com", "port": 5061, "transport": "tls"}
                                            # where to REGISTER to receive the call
    }

A ``message`` push (a SIP MESSAGE is stored for the device) is an alert, never a VoIP
push, and has its own shape: :func:`build_message_payload`.

On a ``call`` push the app must report the call to CallKit at once (apns.md §8), then
REGISTER to ``sip``; the held INVITE follows over that connection. If no INVITE arrives, the
caller is gone: end the CallKit call. POSTing to ``decline_url`` declines the call without
registering. Past ``expires_at`` the call is over. ``missed`` is sent as a visible alert
(never as a VoIP push); ``cancel-notice`` is for platforms without PushKit's rules (Android).
``refresh`` asks the app to REGISTER to ``sip`` again before its binding ends (app/refresh.py;
in edge mode its registration at the operator's registrar, docs/edge-mode.md); no call
follows it.

Size: APNs VoIP payloads may be 5120 bytes, APNs alerts and FCM data 4096 (apns.md §2,
fcm.md). :func:`build_payload` keeps the payload under the limit by shortening the display
name; the ids, URIs and URL are never cut (a cut id is worse than no push): if they alone
are too big, :class:`PayloadTooLarge` is raised.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

PayloadType = Literal["call", "cancel-notice", "missed", "message", "refresh"]

APNS_VOIP_LIMIT = 5120
APNS_ALERT_LIMIT = 4096
FCM_DATA_LIMIT = 4096
DEFAULT_LIMIT = min(APNS_VOIP_LIMIT, APNS_ALERT_LIMIT, FCM_DATA_LIMIT)  # fits everywhere

_encode = msgspec.json.Encoder().encode


class PayloadTooLarge(ValueError):
    """The payload cannot fit the limit even with an empty display name."""


def encoded_size(payload: dict[str, Any]) -> int:
    """Bytes of the compact JSON encoding (what APNs counts)."""
    return len(_encode(payload))


def build_payload(
    *,
    type: PayloadType,
    call_id: str,
    caller_uri: str,
    callee: str,
    sent_at: float,
    expires_at: float,
    sip_host: str,
    sip_port: int,
    sip_transport: str,
    caller_display: str = "",
    sip_call_id: str = "",
    decline_url: str = "",
    limit: int = DEFAULT_LIMIT,
    reserve: int = 0,
) -> dict[str, Any]:
    """The payload dictionary (module doc). ``reserve``: bytes a provider adds around it
    (e.g. an APNs ``aps`` alert dictionary), so the result still fits ``limit``."""
    payload: dict[str, Any] = {
        "type": type,
        "call_id": call_id,
        "sip_call_id": sip_call_id,
        "caller": {"display": caller_display, "uri": caller_uri},
        "callee": callee,
        "sent_at": sent_at,
        "expires_at": expires_at,
        "decline_url": decline_url,
        "sip": {"host": sip_host, "port": sip_port, "transport": sip_transport.lower()},
    }
    return fit_payload(payload, limit - reserve)


def build_message_payload(
    *,
    message_id: str,
    sip_call_id: str,
    sender_uri: str,
    recipient: str,
    sent_at: float,
    expires_at: float,
    sip_host: str,
    sip_port: int,
    sip_transport: str,
    content_type: str,
    sender_display: str = "",
    preview: str = "",
    limit: int = DEFAULT_LIMIT,
    reserve: int = 0,
) -> dict[str, Any]:
    """The payload of a ``message`` alert push (docs/push-payload.md "Messages"): a SIP
    MESSAGE waits for this device, which receives it after it registers to ``sip``.
    ``preview`` is "" unless the operator turned ``message.preview`` on. To fit ``limit``
    the preview is shortened first, then the display name; ids and URIs never."""
    payload: dict[str, Any] = {
        "type": "message",
        "message_id": message_id,
        "sip_call_id": sip_call_id,
        "sender": {"display": sender_display, "uri": sender_uri},
        "recipient": recipient,
        "content_type": content_type,
        "preview": preview,
        "sent_at": sent_at,
        "expires_at": expires_at,
        "sip": {"host": sip_host, "port": sip_port, "transport": sip_transport.lower()},
    }
    limit -= reserve
    if encoded_size(payload) > limit and preview:
        try:
            payload = _fit_text(payload, limit, "preview", None)
        except PayloadTooLarge:
            payload = {**payload, "preview": ""}  # and cut the display name below
    return _fit_text(payload, limit, "display", "sender")


def fit_payload(payload: dict[str, Any], limit: int) -> dict[str, Any]:
    """Shorten ``caller.display`` until the encoded payload fits ``limit`` bytes."""
    return _fit_text(payload, limit, "display", "caller")


def _fit_text(payload: dict[str, Any], limit: int, key: str, within: str | None) -> dict[str, Any]:
    """Shorten the text at ``payload[within][key]`` (or ``payload[key]``) until the
    encoded payload fits ``limit``; PayloadTooLarge if it does not fit even empty."""
    size = encoded_size(payload)
    if size <= limit:
        return payload
    text: str = payload[within][key] if within else payload[key]

    def cut(keep: int) -> dict[str, Any]:
        shorter = text[:keep] + "…" if keep else ""
        if within is None:
            return {**payload, key: shorter}
        return {**payload, within: {**payload[within], key: shorter}}

    if encoded_size(cut(0)) > limit:
        raise PayloadTooLarge(
            f"payload is {size} bytes; without the display name it is still over {limit}"
        )
    fits, too_long = 0, len(text)  # binary search: about log2(len) encodes
    while too_long - fits > 1:
        mid = (fits + too_long) // 2
        if encoded_size(cut(mid)) <= limit:
            fits = mid
        else:
            too_long = mid
    return cut(fits)


def message_preview(content_type: str, body: bytes, limit: int = 200) -> str:
    """The start of a MESSAGE's text for ``message.preview``: the body of ``text/plain``,
    or of a ``message/cpim`` wrapper (RFC 3862 §2: headers, a blank line, the inner MIME
    headers, a blank line, the content) whose inner type is ``text/plain``; "" for
    anything else (an image, a file transfer, an IMDN receipt)."""
    ctype = content_type.split(";", 1)[0].strip().lower()
    if ctype == "message/cpim":
        parts = body.replace(b"\r\n", b"\n").split(b"\n\n", 2)
        if len(parts) < 3:
            return ""
        inner = {
            k.strip().lower(): v.strip()
            for k, _, v in (
                line.decode("utf-8", "replace").partition(":") for line in parts[1].split(b"\n")
            )
        }
        ctype = inner.get("content-type", "").split(";", 1)[0].strip().lower()
        body = parts[2]
    if ctype != "text/plain":
        return ""
    text = " ".join(body.decode("utf-8", "replace").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def message_alert_text(sender: str, preview: str) -> str:
    """What the notification shows: the sender, and the text only when previews are on."""
    return f"{sender}: {preview}" if preview else f"New message from {sender}"
