"""Webhook provider against a real HTTP/1.1 receiver on 127.0.0.1 (and the receiver helper
the FCM emulator's forwarding test reuses)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import h11
import pytest

from sipwake.policy.bindings import PushTarget, as_dict
from sipwake.push.base import Delivered, Permanent, PushRequest, TokenRejected, Transient
from sipwake.push.webhook import WebhookProvider, classify, verify

SECRET = b"s3cret-for-tests"
NOW = 1_700_000_000.0


@dataclass
class Received:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Http1Receiver:
    """A real HTTP/1.1 server recording requests and answering ``status``."""

    status: int = 200
    reply_headers: list[tuple[str, str]] = field(default_factory=list)
    requests: list[Received] = field(default_factory=list)
    port: int = 0

    def __post_init__(self) -> None:
        self._arrived = asyncio.Condition()
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[Received]:
        async with asyncio.timeout(timeout), self._arrived:
            await self._arrived.wait_for(lambda: len(self.requests) >= count)
        return self.requests

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        request: h11.Request | None = None
        body = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                break
        assert request is not None
        headers = {k.decode().lower(): v.decode() for k, v in request.headers}
        async with self._arrived:
            self.requests.append(
                Received(request.method.decode(), request.target.decode(), headers, body)
            )
            self._arrived.notify_all()
        response = h11.Response(
            status_code=self.status,
            headers=[("content-length", "0"), ("connection", "close"), *self.reply_headers],
        )
        writer.write((conn.send(response) or b"") + (conn.send(h11.EndOfMessage()) or b""))
        await writer.drain()
        writer.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Http1Receiver]:
    rx = Http1Receiver()
    await rx.start()
    yield rx
    await rx.close()


def _request() -> PushRequest:
    return PushRequest(
        target=PushTarget("acme", "device-42", param="acme-app"),
        payload={"type": "call", "call_id": "c-1", "caller": {"uri": "sip:a@example.com"}},
        expires_at=NOW + 30,
        collapse_id="c-1",
    )


async def test_signed_body_is_verified_by_receiver(receiver: Http1Receiver) -> None:
    provider = WebhookProvider("acme", url=receiver.url, secret=SECRET, timeout=2.0)
    outcome = await provider.send(_request(), NOW)
    assert outcome == Delivered()
    [got] = receiver.requests
    assert got.method == "POST" and got.target == "/hook"
    assert got.headers["content-type"] == "application/json"
    assert verify(SECRET, got.body, got.headers["x-sipwake-signature"])
    assert not verify(b"other secret", got.body, got.headers["x-sipwake-signature"])
    assert not verify(SECRET, got.body + b" ", got.headers["x-sipwake-signature"])
    document = json.loads(got.body)
    # The timestamp is inside the signed body too, so it cannot be swapped for a replay.
    assert got.headers["x-sipwake-timestamp"] == str(int(NOW)) == str(document["timestamp"])
    # Every field of the target, by its dataclass name: a field added to PushTarget
    # reaches the operator's endpoint too.
    assert document["target"] == as_dict(_request().target)
    assert document["target"]["provider"] == "acme"
    assert document["target"]["prid"] == "device-42"
    assert list(document) == sorted(document)  # key-sorted, as it always was
    assert document["kind"] == "voip"
    assert document["expires_at"] == NOW + 30
    assert document["payload"]["caller"] == {"uri": "sip:a@example.com"}


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, Delivered()),
        (202, Delivered()),
        (204, Delivered()),
        (404, TokenRejected("HTTP 404")),
        (410, TokenRejected("HTTP 410")),
        (429, Transient("HTTP 429", 12.0)),
        (503, Transient("HTTP 503", 12.0)),
        (400, Permanent("HTTP 400")),
        (401, Permanent("HTTP 401")),
        (413, Permanent("HTTP 413")),
    ],
)
async def test_status_mapping_over_the_wire(
    receiver: Http1Receiver, status: int, expected: object
) -> None:
    receiver.status = status
    receiver.reply_headers = [("retry-after", "12")]
    provider = WebhookProvider("acme", url=receiver.url, secret="s", timeout=2.0)
    assert await provider.send(_request(), NOW) == expected


async def test_unreachable_endpoint_is_transient() -> None:
    rx = Http1Receiver()
    await rx.start()
    url = rx.url
    await rx.close()  # nothing listens on that port any more
    provider = WebhookProvider("acme", url=url, secret="s", timeout=2.0)
    outcome = await provider.send(_request(), NOW)
    assert isinstance(outcome, Transient)


async def test_silent_endpoint_times_out_as_transient() -> None:
    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never answers; returns when the client gives up
        writer.close()

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    provider = WebhookProvider("acme", url=f"http://127.0.0.1:{port}/", secret="s", timeout=0.2)
    outcome = await provider.send(_request(), NOW)
    server.close()
    await server.wait_closed()
    assert isinstance(outcome, Transient) and "timed out" in outcome.reason


def test_retry_after_absent_or_garbage() -> None:
    assert classify(503) == Transient("HTTP 503", None)
    assert classify(429, "soon") == Transient("HTTP 429", None)


@pytest.mark.parametrize(
    ("url", "secret"), [("ftp://x/", "s"), ("http:///nohost", "s"), ("http://h/", "")]
)
def test_bad_configuration_is_refused(url: str, secret: str) -> None:
    with pytest.raises(ValueError):
        WebhookProvider("acme", url=url, secret=secret)
