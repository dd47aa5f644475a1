"""Health, metrics and admin routes, TLS/ALPN and the server's life cycle."""

from __future__ import annotations

import asyncio
import json
import ssl
from typing import Any

import pytest

from sipwake.api import ApiApp, ApiServer, Metrics
from sipwake.emulate.tlsutil import CertFiles
from sipwake.push.http1 import Http1Error, http1_request
from tests.api.conftest import ADMIN_TOKEN, Api, FakeDecline, MakeApi


async def test_healthz_follows_the_callback(api: Api) -> None:
    reply = await api.request("GET", "/healthz")
    assert (reply.status, reply.body) == (200, b"ok\n")
    api.health.ok = False
    assert (await api.request("GET", "/healthz")).status == 503

    def broken() -> bool:
        raise ConnectionError("redis down")

    api.server.app.health = broken
    assert (await api.request("GET", "/healthz")).status == 503


async def test_metrics_renders_counters_incremented_here(api: Api) -> None:
    api.metrics.push("apns", "delivered", latency=0.042)
    api.metrics.push("fcm", "token_rejected")
    api.metrics.response_sent(486)
    api.metrics.held_calls.inc()
    api.metrics.set_bindings({"apns": 7})
    reply = await api.request("GET", "/metrics")
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = reply.body.decode()
    assert 'sipwake_pushes_total{outcome="delivered",provider="apns",reason=""} 1.0' in text
    assert 'sipwake_pushes_total{outcome="token_rejected",provider="fcm",reason=""} 1.0' in text
    assert 'sipwake_sip_responses_sent_total{code="486"} 1.0' in text
    assert "sipwake_held_calls 1.0" in text
    assert 'sipwake_bindings{provider="apns"} 7.0' in text
    assert 'sipwake_push_latency_seconds_count{provider="apns"} 1.0' in text


async def test_unknown_path_is_404(api: Api) -> None:
    reply = await api.request("GET", "/nope")
    assert reply.status == 404
    assert json.loads(reply.body) == {"error": "not found"}


@pytest.mark.parametrize(("admin", "token"), [(True, ""), (False, ADMIN_TOKEN)])
async def test_admin_disabled_is_404(make_api: MakeApi, admin: bool, token: str) -> None:
    api = await make_api(admin=admin, admin_token=token)
    for path in ("/admin/calls", "/admin/bindings?aor=sip:bob@example.com", "/admin/messages"):
        reply = await api.request("GET", path, headers=[("authorization", f"Bearer {ADMIN_TOKEN}")])
        assert reply.status == 404


@pytest.mark.parametrize(
    "auth", [None, "Bearer wrong", "Basic czNjcmV0LWFkbWlu", f"Bearer {ADMIN_TOKEN}x", "Bearer"]
)
async def test_admin_wrong_credentials_is_401(api: Api, auth: str | None) -> None:
    headers = [("authorization", auth)] if auth is not None else []
    reply = await api.request("GET", "/admin/calls", headers=headers)
    assert reply.status == 401
    assert reply.headers["www-authenticate"].startswith("Bearer")
    assert api.metrics.registry.get_sample_value("sipwake_auth_failures_total") == 1


async def test_admin_with_the_right_bearer(api: Api) -> None:
    auth = [("authorization", f"bearer {ADMIN_TOKEN}")]  # scheme is case-insensitive
    reply = await api.request("GET", "/admin/calls", headers=auth)
    assert reply.status == 200
    assert json.loads(reply.body) == {
        "calls": [{"call_id": "c1", "aor": "sip:bob@example.com"}],
        "recent": [{"call_id": "c0", "status": 200}],
    }
    reply = await api.request("GET", "/admin/bindings?aor=sip%3Abob%40example.com", headers=auth)
    assert reply.status == 200
    body = json.loads(reply.body)
    assert body["aor"] == "sip:bob@example.com"
    assert body["bindings"][0]["aor"] == "sip:bob@example.com"
    reply = await api.request("GET", "/admin/bindings?offset=5&limit=7", headers=auth)
    assert json.loads(reply.body)["asked"] == [5, 7]
    assert (await api.request("GET", "/admin/bindings?limit=x", headers=auth)).status == 400
    assert (await api.request("GET", "/admin/bindings?aor=a&aor=b", headers=auth)).status == 400
    reply = await api.request("DELETE", "/admin/bindings?aor=bob&instance=urn:x", headers=auth)
    assert json.loads(reply.body)["removed"] == ["sip:bob@192.0.2.4:5060"]
    assert (await api.request("DELETE", "/admin/bindings", headers=auth)).status == 400
    assert (await api.request("GET", "/admin/push-test?aor=bob", headers=auth)).status == 405
    assert (await api.request("GET", "/admin/calls/c0", headers=auth)).status == 200
    assert (await api.request("GET", "/admin/calls/nope", headers=auth)).status == 404
    assert (await api.request("POST", "/admin/calls", headers=auth)).status == 405
    reply = await api.request("GET", "/admin/messages", headers=auth)
    assert json.loads(reply.body) == {"users": {"sip:bob@example.com": 1}}
    reply = await api.request("GET", "/admin/messages?aor=sip%3Abob%40example.com", headers=auth)
    assert json.loads(reply.body)["messages"][0]["id"] == "m1"
    assert (await api.request("GET", "/admin/messages?aor=a&aor=b", headers=auth)).status == 400


async def test_tls_offers_h2_and_http11(make_api: MakeApi, certs: CertFiles) -> None:
    api = await make_api(tls=True)
    ctx = ssl.create_default_context(cafile=str(certs.ca_file))
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    _, writer = await asyncio.open_connection(
        "127.0.0.1", api.server.port, ssl=ctx, server_hostname="127.0.0.1"
    )
    assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
    writer.close()
    await writer.wait_closed()
    assert (await api.request("GET", "/healthz")).status == 200  # http/1.1 still served
    with pytest.raises(Http1Error):  # and the client must trust our CA
        await http1_request("GET", api.server.url + "/healthz", [], b"", timeout=5)


async def test_start_returns_the_bound_port_and_close_stops_listening(api: Api) -> None:
    host, port = api.server.host, api.server.port
    assert host == "127.0.0.1" and port > 0
    assert api.server.url == f"http://127.0.0.1:{port}"
    await api.server.close()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)
    await api.server.close()  # idempotent


async def test_bad_tls_material_fails_start(tmp_path: Any) -> None:
    server = ApiServer(
        host="127.0.0.1", port=0, decline=FakeDecline(), admin=None, metrics=Metrics(),
        health=lambda: True, tls_cert=str(tmp_path / "none.pem"), tls_key=str(tmp_path / "k"),
    )  # fmt: skip
    with pytest.raises(OSError):
        await server.start()
    with pytest.raises(ValueError):
        ApiServer(host="::1", port=0, decline=FakeDecline(), admin=None, metrics=Metrics(),
                  health=lambda: True, tls_cert="only-a-cert.pem")  # fmt: skip
    plain = ApiServer(host="::1", port=8080, decline=FakeDecline(), admin=None,
                      metrics=Metrics(), health=lambda: True)  # fmt: skip
    assert plain.url == "http://[::1]:8080"


async def test_streamed_body_over_the_cap_is_413_without_content_length() -> None:
    """hypercorn passes chunked bodies through: the app must count what it reads."""
    decline = FakeDecline()
    app = ApiApp(decline=decline, admin=None, metrics=Metrics(), health=lambda: True)
    chunks = [{"type": "http.request", "body": b"x" * 600, "more_body": True}] * 3
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return chunks.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/calls/c/decline",
        "raw_path": b"/v1/calls/c/decline",
        "query_string": b"t=x",
        "headers": [(b"transfer-encoding", b"chunked")],
    }
    await app(scope, receive, send)
    assert sent[0]["status"] == 413
    assert len(chunks) == 1  # stopped reading at the second chunk


async def test_openapi_describes_every_admin_route(api: Api) -> None:
    """Each documented path and method answers something other than 404/405, and the
    document itself needs no token (it holds no secret)."""
    reply = await api.request("GET", "/admin/openapi.json")
    assert reply.status == 200
    spec = json.loads(reply.body)
    assert spec["openapi"].startswith("3.1")
    auth = [("authorization", f"Bearer {ADMIN_TOKEN}")]
    seen = set()
    for path, methods in spec["paths"].items():
        for method in methods:
            url = path.replace("{call_id}", "c0") + ("?aor=bob" if "aor" in str(methods) else "")
            reply = await api.request(method.upper(), url, headers=auth)
            assert reply.status == 200, (method, path, reply.status)
            seen.add(path)
    assert {"/admin/bindings", "/admin/push-test", "/admin/calls", "/admin/calls/{call_id}"} <= seen


async def test_console_page_and_script_are_served_without_data(api: Api) -> None:
    page = await api.request("GET", "/admin/ui")
    assert page.status == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert b'<script src="/admin/ui/app.js"></script>' in page.body
    script = await api.request("GET", "/admin/ui/app.js")
    assert script.status == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert b"innerHTML" not in script.body  # server data only ever goes in as text
    assert (await api.request("POST", "/admin/ui")).status == 401
