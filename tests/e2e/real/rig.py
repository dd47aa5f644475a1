"""One real `sipwake serve` (UDP, TCP, TLS, digest auth, SQLite users) with the APNs
emulator behind it, for the real-client tests: linphone and baresip are started per test
by :mod:`tests.e2e.real.linphone` and :mod:`tests.e2e.real.baresip`."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sipwake.emulate.tlsutil import CertFiles, make_test_certs
from sipwake.policy.auth import ha1
from sipwake.storage import User, open_stores
from tests.e2e.harness import (
    PHONE_PARAM,
    ApnsEmulator,
    RunningServer,
    apns_emulator,
    free_port,
    loopback_config,
    serve,
)
from tests.e2e.real.baresip import Baresip, BaresipAccount
from tests.e2e.real.linphone import Linphone, LinphoneAccount

DOMAIN = "127.0.0.1"
PASSWORD = "correct-horse"
USERS = 40  # alice-N / bob-N, one pair per test


@dataclass
class Push:
    at: float  # when the emulator's forward reached us
    record: dict[str, Any]

    @property
    def payload(self) -> dict[str, Any]:
        p = self.record.get("payload", {})
        return p if isinstance(p, dict) else {}


class PushInbox:
    """Receives the APNs emulator's copy of every push it accepted (--forward-url)."""

    def __init__(self) -> None:
        self.pushes: list[Push] = []
        self.cond = threading.Condition()
        inbox = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with inbox.cond:
                    inbox.pushes.append(Push(time.time(), json.loads(body)))
                    inbox.cond.notify_all()
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return None

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def for_token(self, token: str) -> list[Push]:
        with self.cond:
            return [p for p in self.pushes if str(p.record.get("token", "")).lower() == token]

    def wait(self, token: str, timeout: float = 10.0) -> Push:
        with self.cond:
            ok = self.cond.wait_for(lambda: bool(self.for_token(token)), timeout)
        if not ok:
            raise AssertionError(f"no push for {token}")
        return self.for_token(token)[0]

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@dataclass
class RealRig:
    server: RunningServer
    emu: ApnsEmulator
    inbox: PushInbox
    certs: CertFiles
    client_pem: Path  # certificate + key for baresip's TLS listener
    tmp: Path
    config: str = ""
    stack: ExitStack | None = None  # where the server lives (crash_and_restart)
    pairs: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    restarts: int = 0

    def crash_and_restart(self) -> None:
        """kill -9 the server, then start it again on the same config (fixed ports, the
        same SQLite file)."""
        assert self.stack is not None
        self.server.proc.send_signal(signal.SIGKILL)
        self.server.proc.wait(10)
        self.restarts += 1
        where = self.tmp / f"restart{self.restarts}"
        where.mkdir()
        self.server = self.stack.enter_context(serve(self.config, where))

    def users(self) -> tuple[str, str]:
        n = next(self.pairs)
        assert n <= USERS, "raise USERS"
        return f"alice-{n}", f"bob-{n}"

    def linphone(self, user: str, transport: str, token: str | None) -> Linphone:
        params = f"pn-provider=apns;pn-prid={token};pn-param={PHONE_PARAM}" if token else None
        account = LinphoneAccount(
            user,
            PASSWORD,
            DOMAIN,
            self.server.addr(transport),
            transport,
            ca_file=self.certs.ca_file if transport == "tls" else None,
            push_params=params,
        )
        return Linphone(self.tmp / f"linphone-{user}", account)

    def baresip(self, user: str, transport: str) -> Baresip:
        tls = transport == "tls"
        account = BaresipAccount(
            user,
            PASSWORD,
            DOMAIN,
            self.server.addr(transport),
            transport,
            ca_file=self.certs.ca_file if tls else None,
            cert_file=self.client_pem if tls else None,
        )
        return Baresip(self.tmp / f"baresip-{user}", account)

    def metric(self, name: str) -> float:
        """A value from the server's /metrics (the sum over label sets matching ``name``)."""
        host, port = self.server.addr("api")
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and not line.startswith("#"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def decline(self, url: str, reason: str) -> int:
        req = urllib.request.Request(
            url, json.dumps({"reason": reason}).encode(), {"content-type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            return int(resp.status)


def rig_config(emu: ApnsEmulator, certs: CertFiles, db: Path) -> str:
    # baresip 1.0 knows only MD5 and fails the REGISTER ("Function not implemented") as
    # soon as one WWW-Authenticate names SHA-256, in either order: offer MD5 alone (README
    # "Users and authentication"). linphone takes either.
    return loopback_config(
        storage=f"sqlite:///{db}",
        extra=f"""
[tls]
cert_file = "{certs.cert_file}"
key_file = "{certs.key_file}"
[[listen]]
transport = "tls"
host = "127.0.0.1"
port = 0
[registrar]
# RFC 5626 §5.4: baresip (sipnat=outbound) then sends its keep-alives every ~2 s.
flow_timer = 2
[auth]
algorithms = ["MD5"]
[push]
hold_window = 15.0
cancel_grace = 15.0
{emu.config()}
""",
    )


async def _add_users(db: Path) -> None:
    stores = await open_stores(f"sqlite:///{db}", node_id="test")
    try:
        for n in range(1, USERS + 1):
            for name in (f"alice-{n}", f"bob-{n}"):
                await stores.users.put_user(
                    User(
                        username=name,
                        realm=DOMAIN,
                        ha1_md5=ha1(name, DOMAIN, PASSWORD, "MD5"),
                        ha1_sha256=ha1(name, DOMAIN, PASSWORD, "SHA-256"),
                    )
                )
    finally:
        await stores.close()


@contextmanager
def real_rig(tmp: Path, *, fixed_ports: bool = False) -> Iterator[RealRig]:
    """The server and its emulator; ``fixed_ports``: on ports a restart binds again
    (``RealRig.crash_and_restart``)."""
    certs = make_test_certs(tmp / "certs")
    client_pem = tmp / "certs" / "client.pem"
    client_pem.write_bytes(certs.cert_file.read_bytes() + certs.key_file.read_bytes())
    db = tmp / "sipwake.db"
    inbox = PushInbox()
    try:
        with apns_emulator("--forward-url", inbox.url) as emu, ExitStack() as stack:
            asyncio.run(_add_users(db))
            cfg = rig_config(emu, certs, db)
            if fixed_ports:
                # UDP, TCP, the API, TLS: the "port = 0" lines in that order.
                for kind in (socket.SOCK_DGRAM, *[socket.SOCK_STREAM] * 3):
                    cfg = cfg.replace("port = 0", f"port = {free_port(kind)}", 1)
            server = stack.enter_context(serve(cfg, tmp))
            rig = RealRig(server, emu, inbox, certs, client_pem, tmp, config=cfg, stack=stack)
            yield rig
            assert rig.server.alive()
    finally:
        inbox.close()
