"""Kamailio as the unchanged "legacy box" of the edge-mode tests (tests/e2e/kamailio/
legacy.cfg): a plain registrar with digest auth and lookup("location"), on its own loopback
address so that "who sent this" is a real question (sipwake on another one)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

KAMAILIO = "/usr/sbin/kamailio"
CONFIG = Path(__file__).parent / "kamailio" / "legacy.cfg"
DOMAIN = "voip.test"
LEGACY_IP = "127.0.0.2"
SIPWAKE_IP = "127.0.0.3"
USERS = {"bob": "bobpass", "carol": "carolpass", "caller": "callerpass"}


@dataclass
class Legacy:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def address(self) -> tuple[str, int]:
        return LEGACY_IP, self.port

    def uri(self, transport: str = "udp") -> str:
        return f"sip:{LEGACY_IP}:{self.port};transport={transport}"

    def text(self) -> str:
        return self.log.read_text(errors="replace")


def _options_ok(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(0.5)
        local = s.getsockname()[1]
        s.sendto(
            (
                f"OPTIONS sip:{LEGACY_IP}:{port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK-ready-{time.monotonic_ns()}\r\n"
                "Max-Forwards: 70\r\nFrom: <sip:ready@127.0.0.1>;tag=r\r\nTo: <sip:ready@x>\r\n"
                f"Call-ID: ready-{local}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
            ).encode(),
            (LEGACY_IP, port),
        )
        try:
            return s.recv(4096).startswith(b"SIP/2.0 200")
        except OSError:
            return False


@contextlib.contextmanager
def legacy_kamailio(port: int) -> Iterator[Legacy]:
    """Kamailio with legacy.cfg on LEGACY_IP:port (UDP and TCP), in its own process
    group, stopped (the whole group) on the way out."""
    with tempfile.TemporaryDirectory(prefix="kamailio-legacy-") as tmpdir:
        tmp = Path(tmpdir)
        log = tmp / "kamailio.log"
        cmd = [
            KAMAILIO, "-f", str(CONFIG), "-DD", "-E", "-m", "64", "-M", "8", "-Y", str(tmp),
            "-A", f"SIP_PORT={port}", "-A", f'SIP_DOMAIN="{DOMAIN}"',
            "-A", f"LISTEN_IP={LEGACY_IP}", "-A", f'SIPWAKE_IP="{SIPWAKE_IP}"',
        ]  # fmt: skip
        with log.open("wb") as out:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, cwd=tmp,
            )  # fmt: skip
        try:
            deadline = time.monotonic() + 15
            while not _options_ok(port):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"kamailio did not start:\n{log.read_text()[-3000:]}")
                time.sleep(0.1)
            yield Legacy(proc, port, log)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            with contextlib.suppress(ProcessLookupError):  # a child left behind
                os.killpg(proc.pid, signal.SIGKILL)
