"""Drive a real linphone headless: ``linphone-daemon`` (Debian linphone-cli, liblinphone
5.1) with a generated linphonerc, commanded over its ``--pipe`` Unix socket.

No sound card is needed: liblinphone logs that it finds none and runs calls without
audio devices. Each instance gets its own HOME (liblinphone keeps a database there) and
its own pipe name. The daemon answers every command with ``Status: Ok|Error`` and a body;
call events are queued and fetched with ``pop-event``."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class LinphoneEvent:
    at: float  # time.time() when it was popped (polled every 20 ms)
    kind: str  # Event-type, e.g. call-state-changed
    name: str  # Event, e.g. LinphoneCallIncomingReceived
    fields: dict[str, str]


@dataclass
class LinphoneAccount:
    user: str
    password: str
    domain: str
    server: tuple[str, int]
    transport: str  # udp | tcp | tls
    ca_file: Path | None = None
    # RFC 8599 parameters for the Contact (contact_uri_parameters); None: no push.
    push_params: str | None = None


@dataclass
class Linphone:
    home: Path
    account: LinphoneAccount
    instance: str = field(default_factory=lambda: str(uuid.uuid4()))
    proc: subprocess.Popen[bytes] | None = None
    sock: socket.socket | None = None
    events: list[LinphoneEvent] = field(default_factory=list)
    started_at: float = 0.0
    runs: int = 0  # starts so far; each run logs to its own file

    @property
    def pipe(self) -> str:
        return f"sipwake-test-{self.instance[:13]}"

    @property
    def log_file(self) -> Path:
        return self.home / f"linphone-{self.runs}.log"

    def write_config(self) -> Path:
        a = self.account
        self.home.mkdir(parents=True, exist_ok=True)
        # liblinphone cannot start its core without a place for its database.
        (self.home / ".local/share/linphone").mkdir(parents=True, exist_ok=True)
        ports = {"udp": "0", "tcp": "0", "tls": "0"}
        ports[a.transport] = "-1"  # -1: a random port; 0: transport off
        tls = ""
        if a.ca_file is not None:
            # The chain is verified against the test CA. The name is not: liblinphone's
            # mbedTLS matches DNS names only and the test certificate names 127.0.0.1 in
            # an IP SAN (its handshake fails with "CN-mismatch").
            tls = f"root_ca={a.ca_file}\nverify_server_certs=1\nverify_server_cn=0\n"
        push = f"contact_uri_parameters={a.push_params}\n" if a.push_params else ""
        rc = self.home / "linphonerc"
        rc.write_text(
            f"""[sip]
sip_port={ports["udp"]}
sip_tcp_port={ports["tcp"]}
sip_tls_port={ports["tls"]}
default_proxy=0
{tls}
[proxy_0]
reg_proxy=<sip:{a.server[0]}:{a.server[1]};transport={a.transport}>
reg_identity="{a.user}" <sip:{a.user}@{a.domain}>
reg_expires=3600
reg_sendregister=1
publish=0
{push}
[auth_info_0]
username={a.user}
passwd={a.password}
domain={a.domain}

[rtp]
audio_rtp_port=-1
video_rtp_port=-1

[video]
capture=0
display=0
automatically_initiate=0
automatically_accept=0

[misc]
uuid={self.instance}
"""
        )
        return rc

    def start(self) -> None:
        """Start the daemon (writing the config the first time) and connect to its pipe."""
        rc = self.home / "linphonerc"
        if not rc.exists():
            self.write_config()
        path = f"/tmp/{self.pipe}"
        if os.path.exists(path):
            os.unlink(path)
        self.started_at = time.time()
        self.runs += 1
        self.proc = subprocess.Popen(
            ["linphone-daemon", "--config", str(rc), "--pipe", self.pipe,
             "--log", str(self.log_file), "--disable-stats-events"],
            env={**os.environ, "HOME": str(self.home)},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 15
        while True:
            try:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.connect(path)
                break
            except OSError:
                sock.close()
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"linphone-daemon did not open {path}") from None
                time.sleep(0.05)
        self.sock = sock

    def command(self, line: str, timeout: float = 5.0) -> str:
        """Send one command and return the daemon's answer (it writes each at once)."""
        sock = self.sock
        assert sock is not None, "not started"
        sock.sendall(line.encode() + b"\n")
        sock.settimeout(timeout)
        data = sock.recv(65536)
        if not data:
            raise RuntimeError("linphone-daemon closed its pipe")
        sock.settimeout(0.02)
        while True:
            try:
                more = sock.recv(65536)
            except (TimeoutError, BlockingIOError):
                break
            if not more:
                break
            data += more
        return data.decode(errors="replace")

    def ok(self, line: str) -> str:
        answer = self.command(line)
        if not answer.startswith("Status: Ok"):
            raise AssertionError(f"linphone {line!r}: {answer}")
        return answer

    def poll_events(self) -> None:
        while True:
            answer = self.command("pop-event")
            m = re.search(r"Event-type: (\S+)\s+Event: (\S+)(.*)", answer, re.S)
            if m is None:
                return
            fields = dict(re.findall(r"^([\w-]+): (.*)$", m.group(3), re.M))
            self.events.append(LinphoneEvent(time.time(), m.group(1), m.group(2), fields))

    def wait_event(self, name: str, timeout: float = 15.0, start: int = 0) -> LinphoneEvent:
        """The first event called ``name`` at index ``start`` or later of ``events``."""
        deadline = time.monotonic() + timeout
        while True:
            self.poll_events()
            for ev in self.events[start:]:
                if ev.name == name:
                    return ev
            if time.monotonic() > deadline:
                got = [e.name for e in self.events]
                raise AssertionError(f"linphone {self.account.user}: no {name}; events {got}")
            time.sleep(0.02)

    def wait_registered(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            answer = self.command("register-status ALL")
            if "LinphoneRegistrationOk" in answer:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"linphone {self.account.user} not registered: {answer}")
            time.sleep(0.05)

    def call_id(self, ev: LinphoneEvent) -> str:
        return ev.fields.get("Id", "")

    def kill9(self) -> None:
        """The app is gone without a word (iOS suspends or kills it): no un-REGISTER."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)
        self._close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.command("quit", timeout=2)
            except (OSError, RuntimeError):
                pass
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._close()

    def _close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def sip_trace(self) -> list[tuple[float, str, str]]:
        """(time, "sent" | "received", start line) of every SIP message in the log of the
        latest run (belle-sip logs each one with a millisecond timestamp, local time)."""
        out: list[tuple[float, str, str]] = []
        if not self.log_file.exists():
            return out
        current: tuple[float, str] | None = None
        for line in self.log_file.read_text(errors="replace").splitlines():
            m = _TRACE.match(line)
            if m is not None:
                stamp = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S"))
                direction = "sent" if m.group(3) == "message sent to" else "received"
                current = (stamp + int(m.group(2)) / 1000, direction)
            elif _STAMP.match(line):
                current = None  # another log line: the message text is over
            elif current is not None and _START.match(line):
                # One read over TCP/TLS may hold several messages (the 200 and the INVITE).
                out.append((*current, line.strip()))
        return out


_STAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d:\d{3} ")
_START = re.compile(r"(SIP/2\.0 \d{3} |[A-Z]+ \S+ SIP/2\.0\s*$)")
_TRACE = re.compile(
    r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d):(\d{3}) belle-sip-message-channel \[\w+\]: "
    r"(message sent to|received \[\d+\] new bytes from)"
)
