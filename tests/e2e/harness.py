"""Run the real server and SIPp for end-to-end tests (and benchmarks)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SCENARIOS = Path(__file__).parent / "scenarios"


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (SIPp binds both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        other = socket.SOCK_STREAM if kind == socket.SOCK_DGRAM else socket.SOCK_DGRAM
        try:
            with socket.socket(socket.AF_INET, other) as s2:
                s2.bind(("127.0.0.1", port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port")


@dataclass
class RunningServer:
    proc: subprocess.Popen[str]
    addresses: dict[str, tuple[str, int]]
    config_path: Path
    output: list[str]

    def addr(self, transport: str) -> tuple[str, int]:
        return self.addresses[transport.lower()]

    def alive(self) -> bool:
        return self.proc.poll() is None


def loopback_config(
    *,
    domains: tuple[str, ...] = ("127.0.0.1",),
    log_level: str = "info",
    storage: str = "memory://",
    extra: str = "",
    server: str = "",
) -> str:
    """sipwake on 127.0.0.1: UDP and TCP on free ports, the API on a free port; ``extra``
    is TOML appended as it is (auth, push, more listeners...), ``server`` more lines of
    the [server] table."""
    names = ", ".join(f'"{d}"' for d in domains)
    return f"""
[server]
domains = [{names}]
log_level = "{log_level}"
{server}
[[listen]]
transport = "udp"
host = "127.0.0.1"
port = 0
[[listen]]
transport = "tcp"
host = "127.0.0.1"
port = 0
[api]
port = 0
[storage]
url = "{storage}"
{extra}
"""


def write_config(path: Path, body: str) -> Path:
    path.write_text(body)
    return path


@dataclass
class Child:
    """A long-running subprocess whose output is drained by a thread."""

    proc: subprocess.Popen[str]
    output: list[str]
    reader: threading.Thread

    def alive(self) -> bool:
        return self.proc.poll() is None

    def text(self) -> str:
        return "".join(self.output)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.reader.join(5)


def spawn(
    cmd: list[str],
    ready: Callable[[str], bool],
    *,
    timeout: float = 15.0,
    env: dict[str, str] | None = None,
) -> Child:
    """Start ``cmd`` and wait until ``ready`` accepts a line of its output. The pipe is
    drained for the child's whole life so it never blocks on a full pipe."""
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )
    output: list[str] = []
    seen = threading.Event()
    assert proc.stdout is not None
    stdout = proc.stdout

    def pump() -> None:
        for line in stdout:
            output.append(line)
            if not seen.is_set() and ready(line):
                seen.set()
        seen.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    child = Child(proc, output, reader)
    if not seen.wait(timeout) or proc.poll() is not None:
        child.stop()
        raise RuntimeError(f"{cmd[3:5]} did not start:\n" + child.text())
    return child


@contextmanager
def serve(
    config_text: str,
    tmp: Path,
    *,
    env: dict[str, str] | None = None,
    ready_timeout: float = 15.0,
    extra_args: list[str] | None = None,
) -> Iterator[RunningServer]:
    """Start ``sipwake serve --config`` and wait for its ready line."""
    cfg = write_config(tmp / "sipwake.toml", config_text)
    child = spawn(
        [sys.executable, "-m", "sipwake", "serve", "--config", str(cfg), *(extra_args or [])],
        lambda line: line.startswith("sipwake ready:"),
        timeout=ready_timeout,
        env=env,
    )
    addresses: dict[str, tuple[str, int]] = {}
    for line in child.output:
        if line.startswith("sipwake ready:"):
            for m in re.finditer(r"(\w+):\[?([0-9a-fA-F.:]+?)\]?:(\d+)(?:\s|$)", line[14:]):
                addresses[m.group(1)] = (m.group(2), int(m.group(3)))
    server = RunningServer(child.proc, addresses, cfg, child.output)
    try:
        yield server
    finally:
        child.stop()


@dataclass
class ApnsEmulator:
    child: Child
    port: int
    ca_file: str
    key_file: str
    key_id: str
    team_id: str

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def pushes(self) -> list[dict[str, object]]:
        """What the emulator delivered (its inspection endpoint, over HTTP/2)."""
        from sipwake.emulate.tlsutil import client_context
        from sipwake.push.http2 import H2Client

        async def get() -> list[dict[str, object]]:
            client = H2Client(self.url, ssl_context=client_context(self.ca_file))
            try:
                resp = await client.request("GET", "/_emulator/pushes", [])
                data = json.loads(resp.body)
                return data["pushes"] if isinstance(data, dict) else data  # type: ignore[no-any-return]
            finally:
                await client.close()

        return asyncio.run(get())

    def config(self, bundle_id: str = "com.example.phone") -> str:
        """The [[push.apns]] entry that points sipwake at this emulator."""
        return (
            "[[push.apns]]\n"
            f'bundle_id = "{bundle_id}"\nteam_id = "{self.team_id}"\nkey_id = "{self.key_id}"\n'
            f'key_file = "{self.key_file}"\nbase_url = "{self.url}"\nca_file = "{self.ca_file}"\n'
        )


@contextmanager
def apns_emulator(*args: str) -> Iterator[ApnsEmulator]:
    """``sipwake emulate apns`` on a free port with a generated CA and signing key."""
    child = spawn(
        [sys.executable, "-m", "sipwake", "emulate", "apns", "--port", "0", *args],
        lambda line: "pushes: GET" in line,
    )
    text = child.text()
    port = re.search(r"https://127\.0\.0\.1:(\d+) \(HTTP/2\)", text)
    ca = re.search(r"trust this CA: (\S+)", text)
    key = re.search(r"signing key \(\.p8\): (\S+)\s+key id (\S+)\s+team id (\S+)", text)
    assert port and ca and key, text
    emu = ApnsEmulator(
        child, int(port.group(1)), ca.group(1), key.group(1), key.group(2), key.group(3)
    )
    try:
        yield emu
    finally:
        child.stop()


def sipp_path() -> str:
    path = shutil.which("sipp")
    if path is None:
        raise RuntimeError("sipp not installed: run scripts/system-deps (Debian sip-tester)")
    return path


@dataclass
class SippResult:
    returncode: int
    successful: int
    failed: int
    retransmissions: int
    output: str
    elapsed: float


def run_sipp(
    scenario: str | Path,
    target: tuple[str, int],
    *,
    transport: str = "udp",
    calls: int = 1,
    rate: float = 10.0,
    limit: int | None = None,
    timeout: float = 30.0,
    extra: list[str] | None = None,
    workdir: Path | None = None,
) -> SippResult:
    """Run a SIPp client scenario to completion and parse its final statistics."""
    scen = Path(scenario)
    if not scen.is_absolute():
        scen = SCENARIOS / scen
    # "udp-per-call": a UDP socket per call (SIPp -t un), so that a server whose
    # SO_REUSEPORT workers split clients by source address sees many clients.
    mode = {"udp": "u1", "tcp": "t1", "udp-per-call": "un"}[transport]
    local_port = free_port(socket.SOCK_STREAM if transport == "tcp" else socket.SOCK_DGRAM)
    host, port = target
    cmd = [
        sipp_path(),
        f"{host}:{port}",
        "-sf",
        str(scen),
        "-t",
        mode,
        "-i",
        "127.0.0.1",
        "-p",
        str(local_port),
        "-m",
        str(calls),
        "-r",
        str(rate),
        "-timeout",
        f"{int(timeout)}s",
        "-timeout_error",
        "-nostdin",
        "-trace_stat",
        "-fd",
        "3600",
        "-stf",
        str((workdir or Path("/tmp")) / f"sipp-{local_port}.csv"),
    ]
    if limit is not None:
        cmd += ["-l", str(limit)]
    if transport == "udp-per-call":
        # Sockets are recycled past this; SIPp refuses to start if it exceeds the fd limit.
        cmd += ["-max_socket", "4000"]
    cmd += extra or []
    t0 = time.monotonic()
    proc = subprocess.run(
        cmd,
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout + 30,
        cwd=workdir or "/tmp",
    )
    elapsed = time.monotonic() - t0
    out = proc.stdout + proc.stderr
    stat_file = (workdir or Path("/tmp")) / f"sipp-{local_port}.csv"
    ok = failed = retrans = 0
    if stat_file.exists():
        rows = stat_file.read_text().splitlines()
        if len(rows) >= 2:
            head = rows[0].split(";")
            last = rows[-1].split(";")
            col = dict(zip(head, last, strict=False))
            ok = int(col.get("SuccessfulCall(C)", 0) or 0)
            failed = int(col.get("FailedCall(C)", 0) or 0)
            retrans = int(col.get("Retransmissions(C)", 0) or 0)
        stat_file.unlink()
    return SippResult(proc.returncode, ok, failed, retrans, out, elapsed)


def scenario(name: str, workdir: Path, **subs: str) -> Path:
    """A scenario file with ``{{key}}`` placeholders filled (for what SIPp cannot take as a
    -key, such as an expected response code or a regexp)."""
    text = (SCENARIOS / name).read_text()
    for key, value in subs.items():
        text = text.replace("{{" + key + "}}", value)
    out = workdir / f"{Path(name).stem}-{abs(hash(tuple(subs.items())))}.xml"
    out.write_text(text)
    return out


def keys(**values: object) -> list[str]:
    """SIPp ``-key name value`` arguments."""
    out: list[str] = []
    for k, v in values.items():
        out += ["-key", k, str(v)]
    return out


@dataclass
class Uas:
    proc: subprocess.Popen[str]
    port: int
    transport: str

    def wait(self, timeout: float = 30.0) -> tuple[int, str]:
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
            return -1, out
        return self.proc.returncode, out


def start_uas(
    scenario_path: str | Path,
    *,
    transport: str = "udp",
    calls: int = 1,
    extra: list[str] | None = None,
    timeout: float = 30.0,
) -> Uas:
    """A SIPp callee listening on a free port of 127.0.0.1; exits after ``calls`` calls."""
    scen = Path(scenario_path)
    if not scen.is_absolute():
        scen = SCENARIOS / scen
    port = free_port(socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM)
    mode = {"udp": "u1", "tcp": "t1"}[transport]
    cmd = [
        sipp_path(),
        "-sf",
        str(scen),
        "-t",
        mode,
        "-i",
        "127.0.0.1",
        "-p",
        str(port),
        "-m",
        str(calls),
        "-timeout",
        f"{int(timeout)}s",
        "-timeout_error",
        "-nostdin",
        "-fd",
        "3600",
    ] + (extra or [])
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd="/tmp"
    )
    time.sleep(0.2)  # let it bind before anyone sends to it
    return Uas(proc, port, transport)


PHONE_PARAM = "EMULATORTM.com.example.phone.voip"  # pn-param: TEAMID.bundle.voip


def start_phone(
    server: tuple[str, int],
    push_port: int,
    *args: str,
    transport: str = "udp",
    ready: str = "slept",
) -> Child:
    """`sipwake phone`, registered with a push token and asleep (or ``ready`` reached)."""
    return spawn(
        [
            sys.executable,
            "-m",
            "sipwake",
            "phone",
            "--server",
            f"{server[0]}:{server[1]}",
            "--transport",
            transport,
            "--push-listen",
            f"127.0.0.1:{push_port}",
            "--param",
            PHONE_PARAM,
            *args,
        ],
        lambda line: ready in line,
    )


def wait_output(child: Child, text: str, timeout: float = 10.0) -> bool:
    """Wait until ``text`` appears in the child's output."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in child.text():
            return True
        time.sleep(0.02)
    return False


def wait_output_server(server: RunningServer, text: str, timeout: float = 10.0) -> bool:
    """Wait until ``text`` appears in the server's output (read by another thread)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in "".join(server.output):
            return True
        time.sleep(0.05)
    return False
