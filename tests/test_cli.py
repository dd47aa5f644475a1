"""The command line (via click's CliRunner) and the logging setup it performs."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import sipwake
from sipwake.buildinfo import describe
from sipwake.cli import main
from sipwake.config import Config
from sipwake.logs import call_context, get_call_id, reset_call_id, set_call_id, setup_logging

SAMPLE = Path(__file__).resolve().parents[1] / "sipwake.sample.toml"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """serve and setup_logging configure the root logger: put it back for other tests."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    noisy = {name: logging.getLogger(name).level for name in ("h2", "hpack", "websockets")}
    yield
    for name, noisy_level in noisy.items():
        logging.getLogger(name).setLevel(noisy_level)
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
def fake_server(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Stand-in for sipwake.server and sipwake.process, recording what the CLI hands it."""
    seen: dict[str, Any] = {}

    async def run(config: Config, worker: Any = None, path: str | None = None) -> None:
        seen["config"] = config
        seen["worker"] = worker
        seen["loop"] = type(asyncio.get_running_loop()).__module__
        error = seen.get("raise")
        if error is not None:
            raise error

    def run_demo(json_output: bool = False, transport: str = "udp") -> int:
        seen["json_output"] = json_output
        seen["transport"] = transport
        return int(seen.get("demo_rc", 0))

    module = types.ModuleType("sipwake.server")
    module.WorkerSlot = lambda index, count: (index, count)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sipwake.server", module)
    monkeypatch.setattr(sipwake, "server", module, raising=False)
    process = types.ModuleType("sipwake.process")
    process.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sipwake.process", process)
    monkeypatch.setattr(sipwake, "process", process, raising=False)
    demo = types.ModuleType("sipwake.emulate.demo")
    demo.main = run_demo  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sipwake.emulate.demo", demo)
    return seen


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.output.strip() == f"sipwake {sipwake.__version__}, {describe()}"


def test_help_lists_commands() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("serve", "check-config", "demo"):
        assert command in result.output


# --- check-config ----------------------------------------------------------------------


def test_check_config_loads_the_files_it_names() -> None:
    # The sample names /etc/sipwake/... keys that this machine does not have: no "OK".
    result = invoke("check-config", str(SAMPLE))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.strip() == (
        f"{SAMPLE}: push.apns[0].key_file: /etc/sipwake/AuthKey_KEY1234567.p8: "
        "cannot read: No such file or directory"
    )


def test_check_config_ok(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from sipwake.emulate.fcm import write_service_account

    p8 = tmp_path / "AuthKey.p8"
    p8.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    sa = write_service_account(tmp_path / "sa.json", token_uri="https://127.0.0.1/token")
    text = SAMPLE.read_text()
    text = text.replace("/etc/sipwake/AuthKey_KEY1234567.p8", str(p8))
    text = text.replace("/etc/sipwake/firebase-service-account.json", str(sa))
    vapid = tmp_path / "vapid.pem"
    vapid.write_bytes(p8.read_bytes())  # any P-256 key serves as a VAPID key
    text = text.replace("/etc/sipwake/vapid.pem", str(vapid))
    path = tmp_path / "sipwake.toml"
    path.write_text(text)
    result = invoke("check-config", str(path))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"{path}: OK"
    assert "  listen: udp 0.0.0.0:5060 (advertised as sip.example.com)" in lines
    assert "  listen: tcp 0.0.0.0:5060 (advertised as sip.example.com)" in lines
    assert "  storage: sqlite:///var/lib/sipwake/sipwake.db" in lines
    assert "  auth: digest, realm sip.example.com, SHA-256/MD5, random secret" in " ".join(lines)
    assert any(
        line.startswith("  push: apns ios: com.example.phone.voip, token key KEY1234567")
        for line in lines
    )
    assert any(
        line.startswith("  push: fcm android: project from the service account") for line in lines
    )
    assert any(line.startswith("  push: webpush ") for line in lines)
    assert "  credential: push.apns[0].key_file: ios: token auth, key KEY1234567" in lines
    assert any(line.startswith("  api: http://127.0.0.1:8080, admin ") for line in lines)
    assert "  edge: off (sipwake is the registrar)" in lines
    edge = tmp_path / "edge.toml"
    edge.write_text('[edge]\nupstream = "sip:sbc.example.com;transport=tcp"\n')
    result = invoke("check-config", str(edge))
    assert result.exit_code == 0, result.output
    assert "  edge: upstream sip:sbc.example.com;transport=tcp, registers for 3600 s" in (
        result.stdout
    )


def test_check_config_hides_password(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[storage]\nurl = "redis://:hunter2@db:6379/0"\n[[listen]]\nhost = "::1"\n')
    result = invoke("check-config", str(path))
    assert result.exit_code == 0
    assert "hunter2" not in result.output
    assert "  storage: redis://:***@db:6379/0" in result.stdout
    assert "  listen: udp [::1]:5060" in result.stdout


def test_check_config_error(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[[listen]]\nport = 99999\n")
    result = invoke("check-config", str(path))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.strip() == (
        f"{path}: listen[0].port: must be between 0 and 65535, got 99999"
    )


def test_check_config_missing_file(tmp_path: Path) -> None:
    result = invoke("check-config", str(tmp_path / "absent.toml"))
    assert result.exit_code == 1
    assert "absent.toml: cannot read" in result.stderr


def test_bad_arguments_exit_2() -> None:
    assert invoke("check-config").exit_code == 2
    assert invoke("serve", "--log-level", "loud").exit_code == 2
    assert invoke("no-such-command").exit_code == 2
    result = invoke("serve", "--bogus")
    assert result.exit_code == 2
    assert "Usage:" in result.stderr


# --- serve -----------------------------------------------------------------------------


def test_serve_with_bad_config_exits_1_without_traceback(
    tmp_path: Path, fake_server: dict[str, Any]
) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[server]\ncolour = 'blue'\n")
    result = invoke("serve", "--config", str(path))
    assert result.exit_code == 1
    assert result.stderr.strip() == f"{path}: server.colour: unknown key"
    assert "Traceback" not in result.output
    assert "config" not in fake_server  # the server was never started


def test_serve_missing_config_exits_1(tmp_path: Path, fake_server: dict[str, Any]) -> None:
    result = invoke("serve", "-c", str(tmp_path / "absent.toml"))
    assert result.exit_code == 1
    assert "absent.toml: cannot read" in result.stderr


def test_serve_defaults_and_uvloop(fake_server: dict[str, Any]) -> None:
    pytest.importorskip("uvloop")
    result = invoke("serve")
    assert result.exit_code == 0, result.output
    assert fake_server["config"] == Config()
    assert fake_server["loop"].startswith("uvloop")


def test_serve_no_uvloop_and_overrides(fake_server: dict[str, Any]) -> None:
    result = invoke(
        "serve", "-c", str(SAMPLE), "--no-uvloop", "--log-level", "debug", "--log-format", "json"
    )
    assert result.exit_code == 0, result.output
    config = fake_server["config"]
    assert config.server.domains == ("sip.example.com",)
    assert (config.server.log_level, config.server.log_format) == ("debug", "json")
    assert fake_server["loop"].startswith("asyncio")
    assert logging.getLogger().level == logging.DEBUG


def test_serve_config_from_environment(
    tmp_path: Path, fake_server: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[server]\nnode_id = 'from-env'\n")
    monkeypatch.setenv("SIPWAKE_CONFIG", str(path))
    assert invoke("serve", "--no-uvloop").exit_code == 0
    assert fake_server["config"].server.node_id == "from-env"


def test_serve_operational_error_exits_1(fake_server: dict[str, Any]) -> None:
    fake_server["raise"] = OSError(98, "Address already in use")
    result = invoke("serve", "--no-uvloop")
    assert result.exit_code == 1
    assert result.stderr.strip() == "sipwake: [Errno 98] Address already in use"


def test_serve_interrupted_exits_130(fake_server: dict[str, Any]) -> None:
    fake_server["raise"] = KeyboardInterrupt()
    assert invoke("serve", "--no-uvloop").exit_code == 130


# --- demo ------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "json_output"), [((), False), (("--json",), True)])
def test_demo_passes_exit_code(
    fake_server: dict[str, Any], args: tuple[str, ...], json_output: bool
) -> None:
    fake_server["demo_rc"] = 3
    result = invoke("demo", *args)
    assert result.exit_code == 3
    assert fake_server["json_output"] is json_output
    assert fake_server["transport"] == "udp"


def test_demo_transport_option(fake_server: dict[str, Any]) -> None:
    assert invoke("demo", "--transport", "tcp").exit_code == 0
    assert fake_server["transport"] == "tcp"
    assert invoke("demo", "--transport", "sctp").exit_code == 2


# --- logging ---------------------------------------------------------------------------

_TEXT_LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (?P<level>[A-Z]+) (?P<name>\S+)"
    r"(?: \[call_id=(?P<call_id>[^\]]+)\])? (?P<msg>.*)$"
)


def _capture(level: str = "info", fmt: str = "text") -> io.StringIO:
    stream = io.StringIO()
    setup_logging(level, fmt, stream=stream)
    return stream


def test_text_format_carries_call_id() -> None:
    stream = _capture()
    log = logging.getLogger("sipwake.engine")
    log.info("outside %d", 1)
    with call_context("abc@host"):
        log.warning("inside %s", "call")
    lines = [_TEXT_LINE.match(line) for line in stream.getvalue().splitlines()]
    assert all(lines), stream.getvalue()
    first, second = (m.groupdict() for m in lines if m)
    assert first == {"level": "INFO", "name": "sipwake.engine", "call_id": None, "msg": "outside 1"}
    assert second == {
        "level": "WARNING",
        "name": "sipwake.engine",
        "call_id": "abc@host",
        "msg": "inside call",
    }
    assert get_call_id() is None


def test_json_format_one_object_per_line() -> None:
    stream = _capture(fmt="json")
    log = logging.getLogger("sipwake.push")
    token = set_call_id("c-1")
    try:
        log.info("sent %s", "push", extra={"provider": "apns", "obj": object()})
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("failed")
    finally:
        reset_call_id(token)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines() if line)
    assert first["msg"] == "sent push"
    assert first["call_id"] == "c-1"
    assert first["provider"] == "apns"
    assert first["obj"].startswith("<object object")
    assert first["level"] == "INFO"
    assert first["logger"] == "sipwake.push"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["ts"])
    assert second["level"] == "ERROR"
    assert "RuntimeError: boom" in second["exc"]


def test_filtered_level_does_no_formatting() -> None:
    stream = _capture(level="warning")

    class Exploding:
        def __str__(self) -> str:
            raise AssertionError("formatted a filtered message")

    logging.getLogger("sipwake.engine").info("never %s", Exploding())
    assert stream.getvalue() == ""


async def test_call_id_is_per_task() -> None:
    stream = _capture()
    log = logging.getLogger("sipwake.app")
    ready = asyncio.Event()

    async def handle(call_id: str) -> None:
        with call_context(call_id):
            await ready.wait()  # both tasks are inside their context at once
            log.info("handled")

    tasks = [asyncio.create_task(handle(c)) for c in ("one", "two")]
    await asyncio.sleep(0)
    ready.set()
    await asyncio.gather(*tasks)
    ids = sorted(m["call_id"] for m in map(_TEXT_LINE.match, stream.getvalue().splitlines()) if m)
    assert ids == ["one", "two"]


def test_setup_logging_replaces_its_own_handler() -> None:
    first = _capture()
    second = _capture(level="debug")
    logging.getLogger("sipwake").debug("once")
    assert first.getvalue() == ""
    assert second.getvalue().count("once") == 1
    assert sum(h.get_name() == "sipwake" for h in logging.getLogger().handlers) == 1
    assert logging.getLogger("hpack").getEffectiveLevel() == logging.WARNING


def test_setup_logging_rejects_unknown_values() -> None:
    with pytest.raises(ValueError, match="log level"):
        setup_logging("chatty", "text")
    with pytest.raises(ValueError, match="log format"):
        setup_logging("info", "xml")


def test_serve_workers_need_a_shared_store(fake_server: dict[str, Any]) -> None:
    # The default store is SQLite inside one process: workers would not share bindings.
    result = invoke("serve", "--workers", "2")
    assert result.exit_code == 2
    assert "Usage:" in result.output and "redis://" in result.output
    assert "config" not in fake_server


def test_serve_workers_need_fixed_ports(tmp_path: Path, fake_server: dict[str, Any]) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[storage]\nurl = "redis://127.0.0.1:6379/0"\n[[listen]]\ntransport = "udp"\nport = 0\n'
    )
    result = invoke("serve", "-c", str(path), "--workers", "3")
    assert result.exit_code == 2
    assert "listen[0].port is 0" in result.output


def test_serve_workers_range_checked(fake_server: dict[str, Any]) -> None:
    result = invoke("serve", "--workers", "0")
    assert result.exit_code == 2
    assert "Usage:" in result.output


def test_serve_as_worker_passes_the_slot(fake_server: dict[str, Any]) -> None:
    result = invoke("serve", "--worker", "1/2")
    assert result.exit_code == 0, result.output
    assert fake_server["worker"] == (1, 2)


def test_messages_list_reads_the_configured_store(tmp_path: Path) -> None:
    """Stored through the store API, listed by the CLI from the same SQLite file."""
    from sipwake.policy.inbox import StoredMessage
    from sipwake.storage import open_stores

    db = tmp_path / "s.db"
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[storage]\nurl = "sqlite://{db}"\n')
    now = time.time()

    async def store() -> None:
        stores = await open_stores(f"sqlite://{db}", node_id="t")
        m = StoredMessage("m-1", "c1@a", 1, "sip:alice@x", "text/plain", now, now + 60,
                          ("dev-a", "dev-b"), b"MESSAGE ...")  # fmt: skip
        await stores.messages.add("sip:bob@x", m, now, 10)
        await stores.close()

    asyncio.run(store())
    runner = CliRunner()
    result = runner.invoke(main, ["messages", "list", "-c", str(cfg)])
    assert result.exit_code == 0, result.output
    assert result.output == "sip:bob@x  1\n"
    result = runner.invoke(main, ["messages", "list", "-c", str(cfg), "--aor", "sip:bob@x"])
    assert result.exit_code == 0, result.output
    assert "m-1" in result.output and "from sip:alice@x" in result.output
    assert "11 bytes  pending for dev-a,dev-b" in result.output


def test_vapid_keygen_writes_a_private_key_and_prints_the_public_one(tmp_path: Path) -> None:
    # Issue 10 item 8: the operator makes the key pair the web developer asks for.
    from sipwake.push.webpush import b64url_decode, load_vapid_key

    key_file = tmp_path / "vapid.pem"
    result = invoke("vapid-keygen", str(key_file))
    assert result.exit_code == 0, result.output
    public = result.output.strip()
    assert public == load_vapid_key(key_file).public_key_b64
    point = b64url_decode(public)
    assert len(point) == 65 and point[0] == 4  # uncompressed P-256 point (RFC 8292 §3.2)
    assert key_file.stat().st_mode & 0o777 == 0o600
    again = invoke("vapid-keygen", str(key_file))
    assert again.exit_code != 0 and "exists" in again.output
    assert load_vapid_key(key_file).public_key_b64 == public  # not overwritten
    forced = invoke("vapid-keygen", str(key_file), "--force")
    assert forced.exit_code == 0 and forced.output.strip() != public
