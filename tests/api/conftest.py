"""Fixtures: a real ApiServer on 127.0.0.1 with fakes that use the real token functions."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from sipwake.api import ApiServer, DeclineResult, Metrics
from sipwake.emulate.tlsutil import CertFiles, make_test_certs
from sipwake.policy.decline import DeclineError, UsedTokens, check_token
from sipwake.push.http1 import HttpReply, http1_request

SECRET = b"test-secret-0123456789abcdef"
NOW = 1_700_000_000.0
ADMIN_TOKEN = "s3cret-admin"


class FakeDecline:
    """What the lead's service does, minus the SIP side: check, spend, end the branch."""

    def __init__(self) -> None:
        self.now = NOW
        self.calls: set[str] = set()  # held calls with a branch still open
        self.used = UsedTokens(100)
        self.declined: list[tuple[str, str, str]] = []  # (call_id, device, reason)

    async def decline(self, call_id: str, token: str, reason: str) -> DeclineResult:
        try:
            claim = check_token(SECRET, token, call_id, self.now)
        except DeclineError as exc:
            return DeclineResult(exc.status, exc.reason)
        if call_id not in self.calls:
            return DeclineResult(404, "unknown call")
        if not self.used.use(claim, self.now):
            return DeclineResult(403, "replayed")
        self.declined.append((call_id, claim.device, reason))
        return DeclineResult(200)


class FakeAdmin:
    """One plain and one async method: the route accepts both shapes."""

    def __init__(self) -> None:
        self.removed: list[tuple[str, str]] = []

    def bindings(self, aor: str) -> dict[str, Any]:
        rows = [{"aor": aor, "contact": "sip:bob@192.0.2.4:5060", "expires": 3600}]
        return {"aor": aor, "bindings": rows}

    async def all_bindings(self, offset: int, limit: int) -> dict[str, Any]:
        return {"bindings": [], "aors": 0, "next": None, "asked": [offset, limit]}

    async def remove_bindings(self, aor: str, instance: str) -> dict[str, Any]:
        self.removed.append((aor, instance))
        return {"aor": aor, "removed": ["sip:bob@192.0.2.4:5060"]}

    async def push_test(self, aor: str) -> dict[str, Any]:
        return {"aor": aor, "results": []}

    async def held_calls(self) -> list[dict[str, Any]]:
        return [{"call_id": "c1", "aor": "sip:bob@example.com"}]

    def recent_calls(self) -> list[dict[str, Any]]:
        return [{"call_id": "c0", "status": 200}]

    def call(self, call_id: str) -> dict[str, Any] | None:
        return {"call_id": call_id, "events": []} if call_id == "c0" else None

    async def messages(self, aor: str | None) -> dict[str, Any]:
        if aor is None:
            return {"users": {"sip:bob@example.com": 1}}
        return {"aor": aor, "messages": [{"id": "m1", "devices": ["dev-a"]}]}


class Health:
    def __init__(self) -> None:
        self.ok = True

    def __call__(self) -> bool:
        return self.ok


class Api:
    """A running server plus its fakes and a client bound to its URL."""

    def __init__(self, server: ApiServer, decline: FakeDecline, health: Health,
                 metrics: Metrics, ctx: ssl.SSLContext | None) -> None:  # fmt: skip
        self.server = server
        self.decline = decline
        self.health = health
        self.metrics = metrics
        self.ctx = ctx

    async def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: list[tuple[str, str]] | None = None,
    ) -> HttpReply:
        return await http1_request(
            method, self.server.url + path, headers or [], body, ssl_context=self.ctx, timeout=5
        )


MakeApi = Callable[..., Awaitable[Api]]


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return make_test_certs(tmp_path_factory.mktemp("api-certs"))


@pytest.fixture
async def make_api(certs: CertFiles) -> AsyncIterator[MakeApi]:
    servers: list[ApiServer] = []

    async def make(*, tls: bool = False, admin: bool = True, admin_token: str = ADMIN_TOKEN) -> Api:
        decline, health, metrics = FakeDecline(), Health(), Metrics()
        server = ApiServer(
            host="127.0.0.1",
            port=0,
            decline=decline,
            admin=FakeAdmin() if admin else None,
            metrics=metrics,
            health=health,
            tls_cert=str(certs.cert_file) if tls else "",
            tls_key=str(certs.key_file) if tls else "",
            admin_token=admin_token,
        )
        servers.append(server)
        await server.start()
        ctx = ssl.create_default_context(cafile=str(certs.ca_file)) if tls else None
        return Api(server, decline, health, metrics, ctx)

    yield make
    for server in servers:
        await server.close()


@pytest.fixture
async def api(make_api: MakeApi) -> Api:
    return await make_api()
