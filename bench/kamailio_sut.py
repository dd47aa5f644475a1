"""Kamailio as the system under test next to sipwake: bench/kamailio/registrar.cfg (registrar
and record-routing proxy, the job of bench_calls.py) or bench/kamailio/push.cfg (the same
plus push wake-up with tsilo and http_client, the job of bench_push_calls.py).

    with kamailio("push", port=free_port(), push_url="http://127.0.0.1:8080/") as k:
        ...  # SIPp against 127.0.0.1:k.port; k.pids() for CPU accounting

Kamailio runs in the foreground (-DD, logs on stderr, -E) in its own process group, with its
runtime directory in a temporary directory; the context manager waits until it answers an
OPTIONS and, on the way out, terminates the whole group (main process and every child).
See bench/kamailio/README.md for what the configurations do."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

KAMAILIO = "/usr/sbin/kamailio"
MODULES = Path("/usr/lib/x86_64-linux-gnu/kamailio/modules")
CONFIGS = Path(__file__).parent / "kamailio"
# Shared memory (MB) holds usrloc, the transactions, tsilo and htable: 10 000 AoRs with a
# few bindings each take a few tens of MB, a held INVITE transaction (the cloned request,
# its replies and a branch) a few KB, so thousands of held calls fit many times over.
# Kamailio maps it at start but the kernel only backs the pages it touches. Finished
# transactions linger a few seconds (tm's wait timer), so at 3 000 calls/s 256 MB ran out
# ("new_t(): out of mem", 500 answers): 1 GB leaves room at any rate this machine reaches.
SHM_MB = 1024
# Private memory (MB) per process: parsed messages and script variables; 8 MB is
# Kamailio's default, doubled for the push routes' string building.
PKG_MB = 16
# UDP workers. One: with several on the one UDP socket, messages of one call can leave
# Kamailio in the opposite order to the one they came in (a BYE before its ACK, a 180 after
# its 200: tm sends after releasing the transaction's lock, and the sending worker can be
# preempted on a busy 2-core machine), and SIPp's scenarios fail those calls. Measured on
# the shared 2-core machine, 1 500 calls at 500/s: registrar mode, 2 workers: 32 failed at
# the UAS, 4 workers: 219; push mode, 4 workers: 20 failed at the caller; 1 worker: none,
# up to 1 500 calls/s in either mode (kamailio_check.py --users 10000 --rates ...). One
# worker is also one core's worth of SIP processing, as sipwake's one process.
CHILDREN = 1
READY_TIMEOUT = 15.0


def installed() -> bool:
    """The kamailio binary and the modules the configurations load (tsilo is in the
    kamailio package, http_client in kamailio-utils-modules)."""
    return (
        os.access(KAMAILIO, os.X_OK)
        and (MODULES / "tsilo.so").exists()
        and (MODULES / "http_client.so").exists()
    )


def install() -> None:
    """apt-get install kamailio and kamailio-utils-modules (Debian's 5.6), quietly; through
    sudo when not root."""
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        [*sudo, "apt-get", "install", "-y", "-qq", "kamailio", "kamailio-utils-modules"],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )


def group_pids(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``, from /proc/<pid>/stat."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        # After the command name (which may hold spaces or parentheses): state, ppid,
        # pgrp, ...
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(entry.name))
    return sorted(found)


@dataclass
class KamailioProc:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path  # Kamailio's stderr: errors only (debug=-1), for diagnosis

    def pids(self) -> list[int]:
        """Every process of this Kamailio: the main process and all it forked (UDP
        workers, timer processes...). They share its process group, which
        start_new_session made equal to its pid."""
        return group_pids(self.proc.pid)

    def alive(self) -> bool:
        return self.proc.poll() is None


def options_ok(port: int, timeout: float = 0.5) -> bool:
    """One OPTIONS to 127.0.0.1:port; True if it is answered 200 (route[REQINIT]'s
    keepalive answer)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(timeout)
        local = s.getsockname()[1]
        s.sendto(
            (
                f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK-ready-{time.monotonic_ns()}\r\n"
                "Max-Forwards: 70\r\n"
                "From: <sip:ready@127.0.0.1>;tag=ready\r\n"
                "To: <sip:127.0.0.1>\r\n"
                f"Call-ID: ready-{local}@127.0.0.1\r\n"
                "CSeq: 1 OPTIONS\r\n"
                "Content-Length: 0\r\n\r\n"
            ).encode(),
            ("127.0.0.1", port),
        )
        try:
            return s.recv(4096).startswith(b"SIP/2.0 200")
        except OSError:  # timeout, or ICMP port unreachable while Kamailio starts
            return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the whole group (Kamailio's main process also stops its children on
    it), SIGKILL after 5 s; then SIGKILL for any child still in the group. The group is
    only signalled while it has members: an empty group's id could be a reused pid."""
    if group_pids(proc.pid):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        if group_pids(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 5
    while group_pids(proc.pid) and time.monotonic() < deadline:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        time.sleep(0.05)


@contextlib.contextmanager
def kamailio(
    mode: Literal["registrar", "push"],
    *,
    port: int,
    push_url: str = "",
    children: int = CHILDREN,
) -> Iterator[KamailioProc]:
    """Kamailio on UDP 127.0.0.1:``port`` with bench/kamailio/<mode>.cfg; in push mode
    pushes are POSTed to ``push_url``. Yields once it answers an OPTIONS."""
    if mode == "push" and not push_url:
        raise ValueError("push mode needs push_url")
    if '"' in push_url:
        raise ValueError(f"push_url {push_url!r}: quotes cannot be passed to -A")
    with tempfile.TemporaryDirectory(prefix="kamailio-bench-") as tmpdir:
        tmp = Path(tmpdir)
        log = tmp / "kamailio.log"
        cmd = [
            KAMAILIO,
            "-f",
            str(CONFIGS / f"{mode}.cfg"),
            "-DD",  # no daemon: stay the parent of every process, in the foreground
            "-E",  # log to stderr
            "-m",
            str(SHM_MB),
            "-M",
            str(PKG_MB),
            "-Y",
            str(tmp),  # runtime directory (control sockets, pid files)
            "-A",
            f"SIP_PORT={port}",
            "-A",
            f"CHILDREN={children}",
        ]
        if mode == "push":
            cmd += ["-A", f'PUSH_URL="{push_url}"']
        with log.open("wb") as out:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=tmp,
            )
        try:
            deadline = time.monotonic() + READY_TIMEOUT
            while not options_ok(port):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"kamailio ({mode}) did not answer OPTIONS on 127.0.0.1:{port} "
                        f"(exit status {proc.poll()}):\n{log.read_text()[-3000:]}"
                    )
                time.sleep(0.1)
            yield KamailioProc(proc, port, log)
        finally:
            _stop(proc)
            if proc.returncode not in (0, -signal.SIGTERM):
                # Shown, not raised: the run's own results say whether it went well.
                print(f"kamailio ({mode}) exited with {proc.returncode}; log tail:")
                print(log.read_text()[-2000:])


def version() -> str:
    """``kamailio -v``'s first line (for result files), or "" if it is not installed."""
    if shutil.which(KAMAILIO) is None:
        return ""
    out = subprocess.run([KAMAILIO, "-v"], capture_output=True, text=True, check=False)
    return out.stdout.splitlines()[0] if out.stdout else ""
