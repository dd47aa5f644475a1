"""Drive a real baresip headless: baresip 1.0 (Debian baresip-core) with a generated
config and accounts file, commanded over its ``ctrl_tcp`` module (JSON in netstrings).

No sound card: the audio source is the ``ausine`` generator and the player ``aubridge``
(an in-process loop), so no device is opened. ``outbound=`` names sipwake as the outbound
proxy (a pre-loaded Route, RFC 3261 §8.1.2) and ``sipnat=outbound`` turns on RFC 5626
(reg-id, +sip.instance, keep-alives)."""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.e2e.harness import free_port


@dataclass
class BaresipEvent:
    at: float  # time.time() when it arrived
    type: str  # REGISTER_OK, CALL_INCOMING, CALL_ESTABLISHED, CALL_CLOSED...
    param: str
    raw: dict[str, Any]


@dataclass
class BaresipAccount:
    user: str
    password: str
    domain: str
    server: tuple[str, int]
    transport: str  # udp | tcp | tls
    ca_file: Path | None = None
    cert_file: Path | None = None  # PEM with certificate and key, for the TLS listener


@dataclass
class Baresip:
    home: Path
    account: BaresipAccount
    proc: subprocess.Popen[bytes] | None = None
    sock: socket.socket | None = None
    events: list[BaresipEvent] = field(default_factory=list)
    responses: dict[str, dict[str, Any]] = field(default_factory=dict)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _tokens: itertools.count[int] = field(default_factory=itertools.count)

    def write_config(self) -> tuple[int, int]:
        a = self.account
        self.home.mkdir(parents=True, exist_ok=True)
        sip_port = _two_free_ports()
        ctrl_port = free_port(socket.SOCK_STREAM)
        tls = ""
        if a.cert_file is not None:
            tls += f"sip_certificate {a.cert_file}\n"
        if a.ca_file is not None:
            tls += f"sip_cafile {a.ca_file}\n"
        (self.home / "config").write_text(
            f"""poll_method epoll
sip_listen 127.0.0.1:{sip_port}
{tls}
audio_player aubridge,nil
audio_source aubridge,nil
audio_alert aubridge,nil
rtp_ports 10000-40000
module_path /usr/lib/baresip/modules
module g711.so
module aubridge.so
module_tmp uuid.so
module_tmp account.so
module_app menu.so
module_app ctrl_tcp.so
ctrl_tcp_listen 127.0.0.1:{ctrl_port}
"""
        )
        host, port = a.server
        (self.home / "accounts").write_text(
            f"<sip:{a.user}@{a.domain};transport={a.transport}>"
            f";auth_user={a.user};auth_pass={a.password}"
            f';outbound="sip:{host}:{port};transport={a.transport}";sipnat=outbound'
            ";regint=600;answermode=manual;mwi=no;pubint=0\n"
        )
        return sip_port, ctrl_port

    def start(self) -> None:
        _, ctrl_port = self.write_config()
        self.proc = subprocess.Popen(
            # -s: SIP trace to stdout, line-buffered (stdbuf) so the file keeps up.
            ["stdbuf", "-oL", "baresip", "-s", "-f", str(self.home)],
            env={**os.environ, "HOME": str(self.home)},
            stdin=subprocess.DEVNULL,
            stdout=(self.home / "baresip.out").open("wb"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 15
        while True:
            try:
                self.sock = socket.create_connection(("127.0.0.1", ctrl_port), timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("baresip ctrl_tcp did not open: " + self.output()) from None
                time.sleep(0.05)
        self.sock.settimeout(None)
        threading.Thread(target=self._read, daemon=True).start()

    def registered(self, timeout: float = 15.0) -> None:
        """Wait for the account to be registered (ctrl_tcp connects too late to be sure
        of seeing REGISTER_OK, so ask)."""
        deadline = time.monotonic() + timeout
        while True:
            info = str(self.command("reginfo").get("data", ""))
            if "OK" in info:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"baresip {self.account.user} not registered: {info}")
            time.sleep(0.05)

    def wait_output(self, text: str, timeout: float = 5.0) -> str:
        """The SIP trace and log once ``text`` is in it (AssertionError after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while text not in (out := self.output()):
            if time.monotonic() > deadline:
                raise AssertionError(f"baresip {self.account.user}: no {text!r} in\n{out[-3000:]}")
            time.sleep(0.05)
        return out

    def output(self) -> str:
        path = self.home / "baresip.out"
        return path.read_text(errors="replace") if path.exists() else ""

    def _read(self) -> None:
        """Netstrings ``<len>:<json>,`` (ctrl_tcp), events and command responses."""
        sock = self.sock
        assert sock is not None
        buf = b""
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            buf += data
            while b":" in buf:
                head, _, rest = buf.partition(b":")
                size = int(head)
                if len(rest) < size + 1:
                    break
                msg = json.loads(rest[:size])
                buf = rest[size + 1 :]
                with self._cond:
                    if msg.get("event"):
                        self.events.append(
                            BaresipEvent(
                                time.time(), str(msg.get("type")), str(msg.get("param", "")), msg
                            )
                        )
                    elif msg.get("response"):
                        self.responses[str(msg.get("token"))] = msg
                    self._cond.notify_all()

    def command(self, name: str, params: str = "", timeout: float = 5.0) -> dict[str, Any]:
        token = f"t{next(self._tokens)}"
        body = json.dumps({"command": name, "params": params, "token": token}).encode()
        assert self.sock is not None
        self.sock.sendall(str(len(body)).encode() + b":" + body + b",")
        with self._cond:
            if not self._cond.wait_for(lambda: token in self.responses, timeout):
                raise AssertionError(f"baresip: no answer to {name}")
            return self.responses.pop(token)

    def wait_event(self, kind: str, timeout: float = 15.0, start: int = 0) -> BaresipEvent:
        def find() -> BaresipEvent | None:
            return next((e for e in self.events[start:] if e.type == kind), None)

        with self._cond:
            if not self._cond.wait_for(lambda: find() is not None, timeout):
                got = [(e.type, e.param) for e in self.events]
                raise AssertionError(f"baresip {self.account.user}: no {kind}; events {got}")
            ev = find()
            assert ev is not None
            return ev

    def mark(self) -> int:
        """Index for wait_event(start=...): only events after now."""
        with self._cond:
            return len(self.events)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def _two_free_ports() -> int:
    """A port p with p and p+1 free for UDP and TCP: baresip listens for UDP and TCP on
    ``sip_listen``'s port and for TLS on the next one."""
    for _ in range(50):
        port = free_port(socket.SOCK_STREAM)
        try:
            for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                with socket.socket(socket.AF_INET, kind) as s:
                    s.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    raise RuntimeError("no two free ports in a row")
