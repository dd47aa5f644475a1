"""An APNs emulator: an HTTP/2 TLS server on ``h2`` that answers like api.push.apple.com.

Follows /work/shared/reference/apns.md §7. Per request, the first failing check answers
(JSON ``{"reason": ...}``, always with an ``apns-id`` header):

1. ``:method`` not POST -> 405 MethodNotAllowed; 2. ``:path`` not ``/3/device/<token>`` ->
404 BadPath (empty token: 400 MissingDeviceToken); 3. auth: a TLS client certificate, else
``authorization: bearer <ES256 JWT>`` whose ``kid`` is a configured key and ``iss`` its team,
signature verified (403 MissingProviderToken / InvalidProviderToken), ``iat`` older than
``max_token_age`` -> 403 ExpiredProviderToken, a *new* token on a connection less than
``token_update_window`` after the previous one -> 429 TooManyProviderTokenUpdates. Until the
first valid token a connection allows one stream (SETTINGS_MAX_CONCURRENT_STREAMS = 1), then
``max_streams``; 4. repeated header -> 400 DuplicateHeaders; 5./6. topic and push type
(MissingTopic, TopicDisallowed, InvalidPushType: ``voip`` needs ``<bundle>.voip``);
7. BadMessageId, BadPriority, BadExpirationDate, BadCollapseId; 8. PayloadEmpty, 413
PayloadTooLarge (5120 bytes voip, 4096 others), ``EmulatorBadJSON`` (emulator-only reason);
9. BadDeviceToken for a non-hex token, then the per-token injected error; 10. the injected
failure rate; otherwise 200 with an empty body.

With no ``keys`` configured, any well-formed ES256 JWT is accepted unverified (zero-setup).

Fault injection: ``tokens`` (token -> :class:`TokenError`, e.g. 410 Unregistered with a
timestamp), ``fail_rate`` (fraction answered with one of ``fail_statuses``, optional
``retry_after`` header), ``delay`` (seconds before each answer), ``goaway_after`` (GOAWAY
``{"reason":"Shutdown"}`` after the N-th request of a connection, with that request as
``last_stream_id``), ``reset_after`` (abort the TCP connection on the N-th request). The
config object is live: tests change it between pushes.

Inspection on the same server: ``GET /_emulator/pushes`` -> JSON list of the delivered
pushes (token, headers, payload, received_at, ...); ``DELETE /_emulator/pushes`` clears it.
Each delivered push is also POSTed as JSON over HTTP/1.1 to ``forward_url`` (fire and forget)
so a simulated phone can wake up.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import logging
import random
import re
import shutil
import signal
import ssl
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.types import Options

from sipwake.emulate.tlsutil import make_test_certs, server_context

log = logging.getLogger("sipwake.emulate.apns")

PUSH_TYPES = frozenset(
    {"alert", "background", "location", "voip", "complication", "fileprovider", "mdm"}
    | {"liveactivity", "pushtotalk", "widgets", "controls"}
)
_UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_HEX_RE = re.compile(r"(?:[0-9a-fA-F]{2})+")
_FAIL_REASONS = {429: "TooManyRequests", 500: "InternalServerError", 503: "ServiceUnavailable"}
_DEVICE_PREFIX = "/3/device/"


@dataclass(slots=True)
class TokenError:
    """An injected answer for one device token."""

    status: int
    reason: str
    timestamp_ms: int | None = None  # sent with 410 (last time the token was seen invalid)
    retry_after: float | None = None


@dataclass(slots=True)
class ApnsKey:
    team_id: str
    public_key: ec.EllipticCurvePublicKey


@dataclass
class ApnsEmulatorConfig:
    host: str = "127.0.0.1"
    port: int = 0
    cert_file: str = ""  # server certificate; empty: make a throw-away CA + cert
    key_file: str = ""
    client_ca_file: str = ""  # trust client certificates from this CA (certificate auth)
    keys: dict[str, ApnsKey] = field(default_factory=dict)  # key id -> team + public key
    topics: set[str] = field(default_factory=set)  # allowed bundle ids; empty: any
    tokens: dict[str, TokenError] = field(default_factory=dict)
    fail_rate: float = 0.0
    fail_statuses: tuple[int, ...] = (429, 500, 503)
    retry_after: float | None = None  # Retry-After on injected 429/503
    delay: float = 0.0
    goaway_after: int = 0
    reset_after: int = 0
    initial_max_streams: int = 1
    max_streams: int = 1000
    token_update_window: float = 1200.0
    max_token_age: float = 3600.0
    sandbox: bool = False  # add apns-unique-id like the sandbox does
    forward_url: str = ""
    max_recorded: int = 10_000
    seed: int | None = None
    clock: Callable[[], float] = time.time


def load_public_key(pem: bytes | str | Path) -> ec.EllipticCurvePublicKey:
    """A P-256 public key from PEM text, or from a public or private (.p8) key file."""
    data = Path(pem).read_bytes() if isinstance(pem, Path) else pem
    data = data.encode() if isinstance(data, str) else data
    if b"PRIVATE KEY" in data:
        private = serialization.load_pem_private_key(data, password=None)
        if not isinstance(private, ec.EllipticCurvePrivateKey):
            raise ValueError("not an EC private key")
        return private.public_key()
    public = serialization.load_pem_public_key(data)
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise ValueError("not an EC public key")
    return public


class ApnsEmulator:
    """A running emulator: ``port``, ``ca_file``, ``pushes``, ``close()``."""

    def __init__(self, config: ApnsEmulatorConfig) -> None:
        self.config = config
        self.pushes: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=config.max_recorded
        )
        self.port = 0
        self.ca_file = ""
        self.requests = 0
        self.connections = 0
        self.random = random.Random(config.seed)
        self._server: asyncio.Server | None = None
        self._temp_dir: Path | None = None  # generated TLS material, removed on close
        self._conns: set[_ApnsConnection] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        cfg = self.config
        cert, key = cfg.cert_file, cfg.key_file
        if not cert:
            certs = make_test_certs()
            self._temp_dir = certs.directory
            cert, key, self.ca_file = str(certs.cert_file), str(certs.key_file), str(certs.ca_file)
        ctx = server_context(cert, key)
        if cfg.client_ca_file:
            ctx.verify_mode = ssl.CERT_OPTIONAL
            ctx.load_verify_locations(cfg.client_ca_file)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _ApnsConnection(self), cfg.host, cfg.port, ssl=ctx
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            conn.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        if self._temp_dir is not None:
            # It holds a private key: leave nothing behind in the system temp dir.
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None

    def forward(self, record: dict[str, Any]) -> None:
        if self.config.forward_url:
            task = asyncio.get_running_loop().create_task(
                post_json(self.config.forward_url, record)
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)


async def serve_apns(config: ApnsEmulatorConfig) -> ApnsEmulator:
    """Start an emulator on ``config.host:config.port`` (0: any free port)."""
    emulator = ApnsEmulator(config)
    await emulator.start()
    return emulator


async def post_json(url: str, record: dict[str, Any], timeout: float = 5.0) -> int:
    """POST ``record`` as JSON with HTTP/1.1 (``Connection: close``); the status, 0 on error."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    body = json.dumps(record).encode()
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                host, port, ssl=ssl.create_default_context() if tls else None
            )
            try:
                writer.write(head + body)
                status_line = await reader.readline()
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
        return int(status_line.split()[1])
    except (OSError, TimeoutError, ValueError, IndexError) as exc:
        log.warning("forwarding push to %s failed: %s", url, exc)
        return 0


class _ApnsConnection(asyncio.Protocol):
    """One client connection: the h2 server state machine and the APNs checks."""

    def __init__(self, emulator: ApnsEmulator) -> None:
        self.em = emulator
        self.cfg = emulator.config
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, tuple[list[tuple[bytes, bytes]], list[bytes]]] = {}
        self.pending: dict[int, memoryview] = {}  # response bodies waiting for window
        self.count = 0
        self.dead = False
        self.cert_auth = False
        self.token = ""  # last accepted JWT and when (emulator clock) it was first seen
        self.token_iat = 0.0
        self.token_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # cast, not isinstance: uvloop's SSL transport is not an asyncio.Transport subclass
        self.transport = cast(asyncio.Transport, transport)
        self.em._conns.add(self)
        self.em.connections += 1
        ssl_object = transport.get_extra_info("ssl_object")
        self.cert_auth = bool(ssl_object is not None and ssl_object.getpeercert())
        # Token connections get one stream until a valid JWT was seen (apns.md §1).
        streams = self.cfg.max_streams if self.cert_auth else self.cfg.initial_max_streams
        self.h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: streams},
        )
        self.h2.initiate_connection()
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.dead = True
        self.em._conns.discard(self)

    def abort(self) -> None:
        self.dead = True
        if self.transport is not None:
            self.transport.abort()

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        if self.dead:
            return  # after GOAWAY or reset: ignore whatever the client still sends
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.flush()
            self.abort()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                self.streams[event.stream_id] = (list(event.headers or ()), [])
            elif isinstance(event, h2.events.DataReceived):
                entry = self.streams.get(event.stream_id)
                if entry is not None:
                    entry[1].append(event.data or b"")
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                entry = self.streams.pop(event.stream_id, None)
                if entry is not None:
                    self.on_request(event.stream_id, entry[0], b"".join(entry[1]))
                    if self.dead:
                        return
            elif isinstance(event, h2.events.StreamReset):
                self.streams.pop(event.stream_id, None)
                self.pending.pop(event.stream_id, None)
            elif isinstance(event, h2.events.WindowUpdated):
                self.send_pending()
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.dead = True
                if self.transport is not None:
                    self.transport.close()
                return
        self.flush()

    def on_request(self, stream_id: int, raw: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.count += 1
        self.em.requests += 1
        cfg = self.cfg
        if cfg.reset_after and self.count >= cfg.reset_after:
            self.abort()  # "drop the connection mid-stream" (apns.md §7)
            return
        headers = [(k.decode(), v.decode()) for k, v in raw]
        status, reason, extra, record = self.check(headers, body)
        apns_id = _header(headers, "apns-id") or str(uuid.uuid4())
        out = [(":status", str(status)), ("apns-id", apns_id)]
        if cfg.sandbox and status == 200:
            out.append(("apns-unique-id", str(uuid.uuid4())))
        out += extra
        payload = b""
        if reason:
            doc: dict[str, Any] = {"reason": reason}
            if status == 410:
                doc["timestamp"] = record.get("timestamp") or int(cfg.clock() * 1000)
            payload = json.dumps(doc).encode()
        elif record.get("body") is not None:
            payload = record.pop("body")
        if payload:
            out.append(("content-type", "application/json"))
        if status == 200 and "token" in record:
            record["apns_id"] = apns_id
            self.em.pushes.append(record)
            self.em.forward(record)
        goaway = bool(cfg.goaway_after) and self.count == cfg.goaway_after
        if cfg.delay > 0:
            asyncio.get_running_loop().call_later(
                cfg.delay, self.respond, stream_id, out, payload, goaway
            )
        else:
            self.respond(stream_id, out, payload, goaway)

    def respond(
        self, stream_id: int, headers: list[tuple[str, str]], body: bytes, goaway: bool
    ) -> None:
        if self.dead:
            return
        try:
            self.h2.send_headers(stream_id, headers, end_stream=not body)
            if body:
                self.pending[stream_id] = memoryview(body)
                self.send_pending()
            if goaway:
                # h2 processes nothing after GOAWAY, so answer first, then refuse the rest.
                self.h2.close_connection(
                    last_stream_id=stream_id, additional_data=b'{"reason":"Shutdown"}'
                )
                self.dead = True
        except h2.exceptions.H2Error:
            pass  # the client reset the stream meanwhile
        self.flush()
        if goaway and self.transport is not None:
            self.transport.close()

    def send_pending(self) -> None:
        for stream_id, data in list(self.pending.items()):
            while data:
                size = min(
                    self.h2.local_flow_control_window(stream_id),
                    self.h2.max_outbound_frame_size,
                    len(data),
                )
                if size <= 0:
                    break
                self.h2.send_data(stream_id, data[:size].tobytes(), end_stream=size == len(data))
                data = data[size:]
            if data:
                self.pending[stream_id] = data
            else:
                del self.pending[stream_id]

    def check(
        self, headers: list[tuple[str, str]], body: bytes
    ) -> tuple[int, str, list[tuple[str, str]], dict[str, Any]]:
        """(status, reason, extra headers, record) for one request, per the module doc."""
        cfg = self.cfg
        method = _header(headers, ":method")
        path = _header(headers, ":path")
        if path.startswith("/_emulator/"):
            return self.inspect(method, path)
        if method != "POST":
            return 405, "MethodNotAllowed", [], {}
        if not path.startswith(_DEVICE_PREFIX):
            return 404, "BadPath", [], {}
        token = path[len(_DEVICE_PREFIX) :]
        if not token:
            return 400, "MissingDeviceToken", [], {}
        if not self.cert_auth:
            auth = self.check_jwt(_header(headers, "authorization"))
            if auth:
                return auth
        names = [name for name, _ in headers]
        if len(set(names)) != len(names):
            return 400, "DuplicateHeaders", [], {}
        topic = _header(headers, "apns-topic")
        push_type = _header(headers, "apns-push-type") or "alert"
        if not topic:
            return 400, "MissingTopic", [], {}
        bundle = topic.removesuffix(".voip") if push_type == "voip" else topic
        if push_type not in PUSH_TYPES or (push_type == "voip") != topic.endswith(".voip"):
            return 400, "InvalidPushType", [], {}
        if cfg.topics and bundle not in cfg.topics:
            return 400, "TopicDisallowed", [], {}
        apns_id = _header(headers, "apns-id")
        if apns_id and not _UUID_RE.fullmatch(apns_id):
            return 400, "BadMessageId", [], {}
        if _header(headers, "apns-priority") not in ("", "1", "5", "10"):
            return 400, "BadPriority", [], {}
        expiration = _header(headers, "apns-expiration")
        if expiration and not expiration.isdigit():
            return 400, "BadExpirationDate", [], {}
        if len(_header(headers, "apns-collapse-id").encode()) > 64:
            return 400, "BadCollapseId", [], {}
        if not body:
            return 400, "PayloadEmpty", [], {}
        if len(body) > (5120 if push_type == "voip" else 4096):
            return 413, "PayloadTooLarge", [], {}
        try:
            payload = json.loads(body)
        except ValueError:
            return 400, "EmulatorBadJSON", [], {}
        if not _HEX_RE.fullmatch(token):
            return 400, "BadDeviceToken", [], {}
        injected = cfg.tokens.get(token.lower())
        if injected is None and cfg.fail_rate > 0 and self.em.random.random() < cfg.fail_rate:
            status = self.em.random.choice(cfg.fail_statuses)
            injected = TokenError(status, _FAIL_REASONS.get(status, "InternalServerError"))
            if status in (429, 503) and cfg.retry_after is not None:
                injected.retry_after = cfg.retry_after
        if injected is not None:
            extra = []
            if injected.retry_after is not None:
                extra.append(("retry-after", f"{injected.retry_after:g}"))
            return injected.status, injected.reason, extra, {"timestamp": injected.timestamp_ms}
        record = {
            "token": token,
            "topic": topic,
            "push_type": push_type,
            "headers": {k: v for k, v in headers if not k.startswith(":") and k != "authorization"},
            "payload": payload,
            "received_at": cfg.clock(),
            "jwt_iat": None if self.cert_auth else self.token_iat,
        }
        return 200, "", [], record

    def check_jwt(
        self, authorization: str
    ) -> tuple[int, str, list[tuple[str, str]], dict[str, Any]] | None:
        cfg = self.cfg
        if not authorization:
            return 403, "MissingProviderToken", [], {}
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return 403, "InvalidProviderToken", [], {}
        now = cfg.clock()
        if token != self.token:
            try:
                header = jwt.get_unverified_header(token)
                kid = header.get("kid", "")
                if header.get("alg") != "ES256":
                    raise jwt.InvalidTokenError("alg must be ES256")
                options: Options = {"verify_iat": False, "require": ["iss", "iat"]}
                if cfg.keys:
                    key = cfg.keys.get(kid)
                    if key is None:
                        raise jwt.InvalidTokenError("unknown kid")
                    claims = jwt.decode(token, key.public_key, ["ES256"], options=options)
                    if claims["iss"] != key.team_id:
                        raise jwt.InvalidTokenError("iss is not the key's team")
                else:
                    options["verify_signature"] = False
                    claims = jwt.decode(token, options=options)
                iat = float(claims["iat"])
            except (jwt.InvalidTokenError, KeyError, TypeError, ValueError):
                return 403, "InvalidProviderToken", [], {}
            if now - iat > cfg.max_token_age:
                return 403, "ExpiredProviderToken", [], {}
            if self.token and now - self.token_since < cfg.token_update_window:
                return 429, "TooManyProviderTokenUpdates", [], {}
            first = not self.token
            self.token, self.token_iat, self.token_since = token, iat, now
            if first and cfg.max_streams != cfg.initial_max_streams:
                # The first valid token lifts the one-stream limit (apns.md §1).
                self.h2.update_settings(
                    {h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: cfg.max_streams}
                )
        elif now - self.token_iat > cfg.max_token_age:
            return 403, "ExpiredProviderToken", [], {}
        return None

    def inspect(
        self, method: str, path: str
    ) -> tuple[int, str, list[tuple[str, str]], dict[str, Any]]:
        if path.split("?", maxsplit=1)[0] != "/_emulator/pushes":
            return 404, "BadPath", [], {}
        if method == "GET":
            return 200, "", [], {"body": json.dumps(list(self.em.pushes)).encode()}
        if method == "DELETE":
            self.em.pushes.clear()
            return 200, "", [], {}
        return 405, "MethodNotAllowed", [], {}


def _header(headers: list[tuple[str, str]], name: str) -> str:
    for key, value in headers:
        if key == name:
            return value
    return ""


def generate_key(directory: Path) -> tuple[Path, ec.EllipticCurvePublicKey]:
    """A fresh ES256 signing key written as ``AuthKey_EMULATOR1.p8`` (Apple's file shape)."""
    private = ec.generate_private_key(ec.SECP256R1())
    path = directory / "AuthKey_EMULATOR1.p8"
    path.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path, private.public_key()


def main(argv: Sequence[str] | None = None) -> int:
    """``sipwake emulate apns``: run the emulator until interrupted."""
    parser = argparse.ArgumentParser(
        prog="sipwake emulate apns", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8443)
    parser.add_argument("--cert", default="", help="server certificate (default: generated)")
    parser.add_argument("--key", default="", help="server private key")
    parser.add_argument(
        "--signing-key",
        action="append",
        default=[],
        metavar="KEYID:TEAMID:PEMFILE",
        help="accept JWTs from this key (public key or .p8); default: generate one",
    )
    parser.add_argument("--topic", action="append", default=[], help="allowed bundle id")
    parser.add_argument("--forward-url", default="", help="POST each delivered push here")
    parser.add_argument("--fail-rate", type=float, default=0.0)
    parser.add_argument("--retry-after", type=float, default=None)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--goaway-after", type=int, default=0)
    parser.add_argument("--reset-after", type=int, default=0)
    parser.add_argument("--sandbox", action="store_true")
    parser.add_argument(
        "--token-error",
        action="append",
        default=[],
        metavar="TOKEN=STATUS:REASON",
        help="answer pushes to TOKEN with this error, e.g. ab12..=410:Unregistered",
    )
    args = parser.parse_args(argv)
    config = ApnsEmulatorConfig(
        host=args.host,
        port=args.port,
        cert_file=args.cert,
        key_file=args.key,
        topics=set(args.topic),
        forward_url=args.forward_url,
        fail_rate=args.fail_rate,
        retry_after=args.retry_after,
        delay=args.delay,
        goaway_after=args.goaway_after,
        reset_after=args.reset_after,
        sandbox=args.sandbox,
    )
    for spec in args.token_error:
        token, _, answer = spec.partition("=")
        status, _, reason = answer.partition(":")
        config.tokens[token.lower()] = TokenError(int(status), reason)
    for spec in args.signing_key:
        kid, team, pem = spec.split(":", 2)
        config.keys[kid] = ApnsKey(team, load_public_key(Path(pem)))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run(config))
    return 0


async def _run(config: ApnsEmulatorConfig) -> None:
    with tempfile.TemporaryDirectory(prefix="sipwake-apns-") as tmp:
        await _serve(config, Path(tmp))


async def _serve(config: ApnsEmulatorConfig, tmp: Path) -> None:
    generated = ""
    if not config.keys:
        path, public = generate_key(tmp)
        config.keys["EMULATOR1"] = ApnsKey("EMULATORTM", public)
        generated = str(path)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # SIGTERM too, so the temporary keys are removed when a supervisor stops us.
        loop.add_signal_handler(sig, stop.set)
    emulator = await serve_apns(config)
    print(f"APNs emulator on https://{config.host}:{emulator.port} (HTTP/2)", flush=True)
    if emulator.ca_file:
        print(f"  trust this CA: {emulator.ca_file}", flush=True)
    if generated:
        print(f"  signing key (.p8): {generated}  key id EMULATOR1  team id EMULATORTM")
    print(f"  pushes: GET https://{config.host}:{emulator.port}/_emulator/pushes", flush=True)
    try:
        await stop.wait()
    finally:
        await emulator.close()
