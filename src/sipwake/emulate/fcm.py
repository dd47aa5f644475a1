"""An FCM HTTP v1 emulator: the OAuth token endpoint and ``messages:send`` (fcm.md A8).

Served by hypercorn (HTTP/1.1 and h2 over one TLS port, ALPN), so the OAuth client's
HTTP/1.1 request and the push client's h2 streams reach the same process. It checks what
the real service checks (RS256 assertion, bearer token, message schema, string data values,
the 4 KB data limit, priority/ttl syntax) and injects the errors a sender must handle, per
registration token or at a rate. Delivered pushes are recorded (``GET /_emulator/pushes``,
``DELETE`` clears) and forwarded to ``forward_url`` so a simulated phone can wake up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import secrets
import signal
import socket
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypercorn.asyncio.run import worker_serve
from hypercorn.config import Config as HypercornConfig
from hypercorn.config import Sockets
from hypercorn.utils import wrap_app

from sipwake.emulate.tlsutil import make_test_certs
from sipwake.push.http1 import Http1Error, http1_request
from sipwake.push.oauth import (
    FCM_SCOPE,
    JWT_BEARER_GRANT,
    ServiceAccount,
    load_service_account,
)

_T = TypeVar("_T")
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

DATA_LIMIT = 4096  # token messages: keys + values (fcm.md A3)
BODY_LIMIT = 65536
CLOCK_SKEW = 300.0
MAX_TTL = 2419200  # 4 weeks
_SEND_PATH = re.compile(r"/v1/projects/([A-Za-z0-9._:-]+)/messages:send")
_TTL = re.compile(r"\d{1,9}(\.\d{1,9})?s")
_TOKEN = re.compile(r"[A-Za-z0-9_:.\-]{1,4096}")
_RESERVED_KEYS = ("from", "message_type")
_FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
# errorCode -> (HTTP status, google.rpc status, message) as FCM answers them (fcm.md A4).
ERRORS: dict[str, tuple[int, str, str]] = {
    "UNREGISTERED": (404, "NOT_FOUND", "Requested entity was not found."),
    "INVALID_ARGUMENT": (
        400,
        "INVALID_ARGUMENT",
        "The registration token is not a valid FCM registration token",
    ),
    "SENDER_ID_MISMATCH": (403, "PERMISSION_DENIED", "SenderId mismatch"),
    "QUOTA_EXCEEDED": (429, "RESOURCE_EXHAUSTED", "Quota exceeded for sending messages."),
    "UNAVAILABLE": (503, "UNAVAILABLE", "The service is currently unavailable."),
    "INTERNAL": (500, "INTERNAL", "Internal error encountered."),
}
_RETRY_AFTER_ERRORS = ("QUOTA_EXCEEDED", "UNAVAILABLE", "INTERNAL")


@dataclass
class FcmEmulatorConfig:
    host: str = "127.0.0.1"
    port: int = 0
    certfile: str | None = None  # PEM chain; None serves plain HTTP (h2c is not offered)
    keyfile: str | None = None
    service_account_files: list[str] = field(default_factory=list)
    token_expires_in: int = 3599  # short values exercise the client's refresh
    token_errors: dict[str, str] = field(default_factory=dict)  # reg token -> errorCode
    error_rates: dict[str, float] = field(default_factory=dict)  # errorCode -> probability
    retry_after: int = 1  # Retry-After on 429/500/503
    delay: float = 0.0  # seconds before answering messages:send
    forward_url: str | None = None  # HTTP/1.1 JSON POST of each delivered push
    seed: int | None = None  # for error_rates
    clock: Callable[[], float] = time.time  # assertion iat/exp and token expiry checks
    accept_tokens: bool = True  # False: every send gets 401 (a revoked service account)


@dataclass(frozen=True, slots=True)
class _Account:
    email: str
    public_key: rsa.RSAPublicKey
    project_id: str


class FcmEmulator:
    """A running emulator; build with :func:`serve_fcm`."""

    def __init__(self, config: FcmEmulatorConfig, accounts: list[ServiceAccount]) -> None:
        self.config = config
        self.port = 0
        self.pushes: list[dict[str, Any]] = []  # {"project", "message", "name"}
        self.tokens_issued = 0
        self.send_requests = 0
        self._accounts: dict[str, _Account] = {}
        for account in accounts:
            self.add_account(account)
        self._access: dict[str, tuple[str, float]] = {}  # token -> (email, expires)
        self._random = random.Random(config.seed)
        self._changed = asyncio.Condition()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()
        self._server: asyncio.Task[None] | None = None

    @property
    def base_url(self) -> str:
        scheme = "https" if self.config.certfile else "http"
        host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
        return f"{scheme}://{host}:{self.port}"

    @property
    def token_uri(self) -> str:
        return self.base_url + "/token"

    def add_account(self, account: ServiceAccount) -> None:
        """Trust another service account (its token_uri may only be known once we listen)."""
        self._accounts[account.client_email] = _Account(
            account.client_email, account.private_key.public_key(), account.project_id
        )

    def revoke_tokens(self) -> None:
        """Forget every access token: the next send answers 401 (tests the refresh)."""
        self._access.clear()

    def set_token_error(self, reg_token: str, code: str | None) -> None:
        if code is None:
            self.config.token_errors.pop(reg_token, None)
        elif code not in ERRORS:
            raise ValueError(f"unknown FCM errorCode {code!r}")
        else:
            self.config.token_errors[reg_token] = code

    async def wait_for_pushes(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.pushes) >= count)
        return list(self.pushes)

    async def close(self) -> None:
        self._stop.set()
        if self._server is not None:
            await self._server
        for task in list(self._tasks):
            task.cancel()

    # -- ASGI --------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > BODY_LIMIT:
                await _reply(send, 413, {"error": "body too large"})
                return
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        status, payload, extra = await self._route(scope["method"], scope["path"], headers, body)
        await _reply(send, status, payload, extra)

    async def _route(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, Any, list[tuple[str, str]]]:
        if path == "/token" and method == "POST":
            return (*self._token(body), [])
        match = _SEND_PATH.fullmatch(path)
        if match and method == "POST":
            if self.config.delay:
                await asyncio.sleep(self.config.delay)
            return await self._send(match.group(1), headers, body)
        if path == "/_emulator/pushes" and method == "GET":
            return 200, self.pushes, []
        if path == "/_emulator/pushes" and method == "DELETE":
            self.pushes.clear()
            return 204, None, []
        return 404, _rpc_error(404, "NOT_FOUND", f"no route for {method} {path}"), []

    def _token(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """OAuth JWT-bearer grant (fcm.md A2, A8.1)."""
        form = parse_qs(body.decode("latin-1"))
        if form.get("grant_type") != [JWT_BEARER_GRANT]:
            return 400, {"error": "unsupported_grant_type", "error_description": "grant_type"}
        assertion = (form.get("assertion") or [""])[0]
        problem = self._check_assertion(assertion)
        if problem:
            return 400, {"error": "invalid_grant", "error_description": problem}
        email = jwt.decode(assertion, options={"verify_signature": False})["iss"]
        token = "ya29.emu-" + secrets.token_urlsafe(24)
        self._access[token] = (email, self.config.clock() + self.config.token_expires_in)
        self.tokens_issued += 1
        return 200, {
            "access_token": token,
            "expires_in": self.config.token_expires_in,
            "token_type": "Bearer",
        }

    def _check_assertion(self, assertion: str) -> str:
        try:
            claims = jwt.decode(assertion, options={"verify_signature": False})
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError:
            return "malformed assertion"
        account = self._accounts.get(str(claims.get("iss")))
        if account is None or header.get("alg") != "RS256":
            return "invalid_client: unknown service account or algorithm"
        try:
            # Times are checked below against the configured clock, so tests can fake it.
            jwt.decode(
                assertion,
                account.public_key,
                algorithms=["RS256"],
                options={"verify_exp": False, "verify_iat": False, "verify_aud": False},
            )
        except jwt.PyJWTError:
            return "Invalid JWT Signature."
        if urlsplit(str(claims.get("aud", ""))).path != "/token":
            return "Invalid JWT: audience"
        if claims.get("scope") not in (FCM_SCOPE, "https://www.googleapis.com/auth/cloud-platform"):
            return "Invalid JWT: scope"
        iat, exp, now = claims.get("iat"), claims.get("exp"), self.config.clock()
        if not isinstance(iat, int) or not isinstance(exp, int) or not 0 < exp - iat <= 3600:
            return "Invalid JWT: exp must be at most 1 h after iat"
        if iat > now + CLOCK_SKEW or exp < now - CLOCK_SKEW:
            return "Invalid JWT: Token must be a short-lived token and in a reasonable timeframe"
        return ""

    async def _send(
        self, project: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, Any, list[tuple[str, str]]]:
        self.send_requests += 1
        scheme, _, token = headers.get("authorization", "").partition(" ")
        grant = self._access.get(token) if scheme.lower() == "bearer" else None
        if grant is None or grant[1] <= self.config.clock() or not self.config.accept_tokens:
            message = "Request had invalid authentication credentials."
            return 401, _rpc_error(401, "UNAUTHENTICATED", message), []
        if self._accounts[grant[0]].project_id != project:
            message = "Permission 'cloudmessaging.messages.create' denied"
            return 403, _rpc_error(403, "PERMISSION_DENIED", message), []
        try:
            request = json.loads(body)
        except ValueError:
            return _bad_request("", "body is not JSON")
        problem = _check_message(request)
        if problem:
            return _bad_request(*problem)
        message = request["message"]
        code = self.config.token_errors.get(message.get("token", ""))
        if code is None and "token" in message and not _TOKEN.fullmatch(message["token"]):
            code = "INVALID_ARGUMENT"
        if code is None:
            for name, rate in self.config.error_rates.items():
                if self._random.random() < rate:
                    code = name
                    break
        if code is not None:
            status, rpc_status, text = ERRORS[code]
            extra = []
            if code in _RETRY_AFTER_ERRORS:
                extra.append(("retry-after", str(self.config.retry_after)))
            return status, _rpc_error(status, rpc_status, text, code), extra
        name = f"projects/{project}/messages/0:{secrets.token_hex(8)}"
        if not request.get("validate_only"):
            await self._record({"project": project, "message": message, "name": name})
        return 200, {"name": name}, []

    async def _record(self, push: dict[str, Any]) -> None:
        async with self._changed:
            self.pushes.append(push)
            self._changed.notify_all()
        if self.config.forward_url:
            task = asyncio.create_task(self._forward(push))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _forward(self, push: dict[str, Any]) -> None:
        assert self.config.forward_url is not None
        body = json.dumps(push).encode()
        try:
            await http1_request(
                "POST",
                self.config.forward_url,
                [("content-type", "application/json")],
                body,
                timeout=5.0,
            )
        except Http1Error:
            pass  # the simulated phone is away: like a real push, nobody notices


def _check_message(request: Any) -> tuple[str, str] | None:
    """Schema problems -> (field, description), as google.rpc.BadRequest names them."""
    if not isinstance(request, dict) or not isinstance(request.get("message"), dict):
        return "message", "missing message"
    message = request["message"]
    if sum(k in message for k in ("token", "topic", "condition")) != 1:
        return "message", "exactly one of token, topic, condition"
    if "token" in message and not isinstance(message["token"], str):
        return "message.token", "not a string"
    if "data" in message:
        problem = _check_data("message.data", message["data"])
        if problem:
            return problem
    android = message.get("android", {})
    if not isinstance(android, dict):
        return "message.android", "not an object"
    if "data" in android:
        problem = _check_data("message.android.data", android["data"])
        if problem:
            return problem
    priority = android.get("priority", "normal")
    if not isinstance(priority, str) or priority.lower() not in ("normal", "high"):
        return "message.android.priority", "must be NORMAL or HIGH"
    ttl = android.get("ttl", "0s")
    if not isinstance(ttl, str) or not _TTL.fullmatch(ttl) or float(ttl[:-1]) > MAX_TTL:
        return "message.android.ttl", "bad duration"
    return None


def _check_data(where: str, data: Any) -> tuple[str, str] | None:
    if not isinstance(data, dict):
        return where, "not a map"
    size = 0
    for key, value in data.items():
        if not isinstance(value, str):
            return f"{where}[{key}]", "Invalid value: data values must be strings"
        if key in _RESERVED_KEYS or key.startswith(("google.", "gcm.")):
            return f"{where}[{key}]", "Invalid data payload key"
        size += len(key.encode()) + len(value.encode())
    if size > DATA_LIMIT:
        return where, "Message is too big"
    return None


def _rpc_error(status: int, rpc_status: str, message: str, code: str = "") -> dict[str, Any]:
    error: dict[str, Any] = {"code": status, "message": message, "status": rpc_status}
    if code:
        error["details"] = [{"@type": _FCM_ERROR_TYPE, "errorCode": code}]
    return {"error": error}


def _bad_request(where: str, text: str) -> tuple[int, Any, list[tuple[str, str]]]:
    body = _rpc_error(400, "INVALID_ARGUMENT", f"Invalid request: {text}")
    body["error"].setdefault("details", []).append(
        {
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{"field": where, "description": text}],
        }
    )
    return 400, body, []


async def _reply(
    send: Send, status: int, payload: Any, extra: list[tuple[str, str]] | None = None
) -> None:
    body = b"" if payload is None else json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json; charset=UTF-8")]
    headers += [(k.encode(), v.encode()) for k, v in extra or ()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def serve_fcm(config: FcmEmulatorConfig) -> FcmEmulator:
    """Start the emulator; it listens before this returns (``.port`` is the bound port)."""
    accounts = [load_service_account(p) for p in config.service_account_files]
    emulator = FcmEmulator(config, accounts)
    hc = HypercornConfig()
    # The push client holds one h2 connection for thousands of pushes: do not recycle it.
    hc.keep_alive_max_requests = 1_000_000
    hc.graceful_timeout = 1.0
    hc.accesslog = None
    hc.errorlog = None
    if config.certfile:
        hc.certfile, hc.keyfile = config.certfile, config.keyfile
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((config.host, config.port))
    sock.listen(128)  # listening now, so callers can connect as soon as we return
    sock.setblocking(False)
    emulator.port = sock.getsockname()[1]
    secure, insecure = ([sock], []) if config.certfile else ([], [sock])
    app = wrap_app(cast(Any, emulator), hc.wsgi_max_body_size, "asgi")
    emulator._server = asyncio.create_task(
        worker_serve(
            app,
            hc,
            sockets=Sockets(secure, insecure, []),
            shutdown_trigger=emulator._stop.wait,
        )
    )
    return emulator


def write_service_account(
    path: str | Path,
    *,
    token_uri: str,
    project_id: str = "sipwake-demo",
    client_email: str = "sipwake@sipwake-demo.iam.gserviceaccount.com",
) -> Path:
    """Write a service-account JSON with a fresh RSA key whose ``token_uri`` points at the
    emulator: what both the emulator (public key) and sipwake's FCM provider read."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    info = {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": secrets.token_hex(20),
        "private_key": pem,
        "client_email": client_email,
        "client_id": "0",
        "token_uri": token_uri,
    }
    out = Path(path)
    out.write_text(json.dumps(info, indent=2))
    out.chmod(0o600)
    return out


def main(argv: list[str] | None = None) -> int:
    """``sipwake emulate fcm``: run until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(prog="sipwake emulate fcm")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8443)
    parser.add_argument("--cert", help="PEM certificate chain (default: a throw-away CA)")
    parser.add_argument("--key", help="PEM private key for --cert")
    parser.add_argument("--plain", action="store_true", help="plain HTTP/1.1, no TLS")
    parser.add_argument(
        "--service-account", action="append", default=[], help="JSON file (repeatable)"
    )
    parser.add_argument(
        "--write-service-account",
        metavar="PATH",
        help="first write a new service-account JSON whose token_uri points here",
    )
    parser.add_argument("--project", default="sipwake-demo")
    parser.add_argument("--expires-in", type=int, default=3599)
    parser.add_argument("--forward-url")
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--error", action="append", default=[], metavar="TOKEN=CODE")
    parser.add_argument("--error-rate", action="append", default=[], metavar="CODE=P")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sipwake-fcm-") as tmp:
        # Generated keys live only as long as the emulator: nothing left in the temp dir.
        return _main(parser, args, Path(tmp))


def _main(parser: argparse.ArgumentParser, args: argparse.Namespace, tmp: Path) -> int:
    if not args.cert and not args.plain:
        # Zero setup, like the APNs emulator: a throw-away CA the client is told to trust.
        certs = make_test_certs(tmp)
        args.cert, args.key = str(certs.cert_file), str(certs.key_file)
        print(f"TLS: trust the CA in {certs.ca_file} (FcmProvider ca_file)", flush=True)
    files = list(args.service_account)
    if args.write_service_account:
        scheme = "https" if args.cert else "http"
        uri = f"{scheme}://{args.host}:{args.port}/token"
        written = write_service_account(
            args.write_service_account, token_uri=uri, project_id=args.project
        )
        files.append(str(written))
    try:
        config = FcmEmulatorConfig(
            host=args.host,
            port=args.port,
            certfile=args.cert,
            keyfile=args.key,
            service_account_files=files,
            token_expires_in=args.expires_in,
            token_errors=dict(_pair(e, str) for e in args.error),
            error_rates=dict(_pair(e, float) for e in args.error_rate),
            delay=args.delay,
            forward_url=args.forward_url,
        )
    except ValueError as exc:
        parser.error(str(exc))
    for code in [*config.token_errors.values(), *config.error_rates]:
        if code not in ERRORS:
            parser.error(f"unknown errorCode {code}; one of {', '.join(ERRORS)}")
    asyncio.run(_run(config))
    return 0


def _pair(text: str, conv: Callable[[str], _T]) -> tuple[str, _T]:
    key, eq, value = text.partition("=")
    if not eq:
        raise ValueError(f"expected NAME=VALUE, got {text!r}")
    return key, conv(value)


async def _run(config: FcmEmulatorConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    emulator = await serve_fcm(config)
    # Printed once a signal is handled: a supervisor may stop us as soon as it reads this.
    print(f"FCM emulator on {emulator.base_url} (token_uri {emulator.token_uri})", flush=True)
    await stop.wait()
    await emulator.close()
