"""Packaging and file hygiene (issue 14 item 8): the sample ships as package data and
``init-config`` writes it, LICENSE matches pyproject, the SQLite file is private, ``user add``
refuses a store that forgets, the emulators leave no keys behind, and the emulators' test CA
passes strict X.509 verification (the Python 3.13 default)."""

from __future__ import annotations

import asyncio
import importlib.resources
import os
import re
import signal
import ssl
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from sipwake.cli import main
from sipwake.emulate.tlsutil import make_test_certs, server_context
from sipwake.storage.sqlite import SQLiteStore

ROOT = Path(__file__).resolve().parents[1]


def test_sample_is_package_data_and_init_config_writes_it(tmp_path: Path) -> None:
    shipped = (importlib.resources.files("sipwake") / "sipwake.sample.toml").read_bytes()
    assert shipped == (ROOT / "sipwake.sample.toml").read_bytes()
    target = tmp_path / "sipwake.toml"
    result = CliRunner().invoke(main, ["init-config", str(target)])
    assert result.exit_code == 0, result.output
    assert target.read_bytes() == shipped
    assert stat.S_IMODE(target.stat().st_mode) == 0o600  # it will hold secrets
    again = CliRunner().invoke(main, ["init-config", str(target)])
    assert again.exit_code == 1
    assert again.stderr.strip() == f"{target}: exists; use --force to overwrite it"
    target.write_text("x")
    assert CliRunner().invoke(main, ["init-config", str(target), "--force"]).exit_code == 0
    assert target.read_bytes() == shipped


def test_sdist_manifest_and_license() -> None:
    manifest = (ROOT / "MANIFEST.in").read_text()
    for name in ("LICENSE", "CHANGELOG.md", "sipwake.sample.toml"):
        assert name in manifest
        assert (ROOT / name).is_file()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == {"text": "Apache-2.0"}
    assert "Apache License" in (ROOT / "LICENSE").read_text()
    assert "Version 2.0, January 2004" in (ROOT / "LICENSE").read_text()


def test_sqlite_file_is_created_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "new" / "sipwake.db"
    old = os.umask(0o022)  # the usual umask, which gave 0644 before
    try:
        store = SQLiteStore.open(path)
    finally:
        os.umask(old)
    try:
        asyncio.run(store.count())
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        for side in path.parent.glob("sipwake.db-*"):  # -wal / -shm take the same mode
            assert stat.S_IMODE(side.stat().st_mode) == 0o600
    finally:
        asyncio.run(store.close())


def test_user_add_refuses_memory_store(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[storage]\nurl = "memory://"\n')
    result = CliRunner().invoke(
        main, ["user", "add", "alice", "-c", str(config), "--password", "pw"]
    )
    assert result.exit_code == 1
    assert "saved" not in result.output
    assert result.stderr.startswith(f"{config}: storage.url: memory:// keeps nothing")


def test_emulator_ca_passes_strict_verification(tmp_path: Path) -> None:
    """VERIFY_X509_STRICT (on by default in Python 3.13) wants an Authority Key Identifier
    in every issued certificate: a real handshake with the flag set, on any Python."""
    certs = make_test_certs(tmp_path)

    async def handshake() -> None:
        server = await asyncio.start_server(
            lambda r, w: w.close(),
            "127.0.0.1",
            0,
            ssl=server_context(certs.cert_file, certs.key_file, alpn=("http/1.1",)),
        )
        port = server.sockets[0].getsockname()[1]
        ctx = ssl.create_default_context(cafile=str(certs.ca_file))
        ctx.verify_flags |= ssl.VERIFY_X509_STRICT
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
            writer.close()
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(handshake())


@pytest.mark.parametrize(
    ("kind", "pattern"),
    [("apns", r"trust this CA: (\S+)"), ("fcm", r"trust the CA in (\S+)")],
)
def test_emulators_remove_their_temporary_keys(kind: str, pattern: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "sipwake.cli", "emulate", kind, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    try:
        found = None
        ready = False
        for line in proc.stdout:
            found = found or re.search(pattern, line)
            ready = ready or "emulator on" in line  # printed once signals are handled
            if found and ready:
                break
        assert found, "the emulator never printed its CA path"
        directory = Path(found.group(1)).parent
        assert any(directory.glob("*.key")) or any(directory.glob("*.p8"))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not directory.exists()


def test_systemd_unit_reloads_with_sighup(tmp_path: Path) -> None:
    """contrib/sipwake.service: ExecReload sends SIGHUP; systemd-analyze verify, where
    systemd is installed, finds nothing wrong with it (unknown keys are only warned about,
    so its output must be clean too)."""
    import shutil

    text = (ROOT / "contrib" / "sipwake.service").read_text()
    assert "ExecReload=/bin/kill -HUP $MAINPID" in text
    assert "ExecStart=/usr/local/bin/sipwake serve -c /etc/sipwake/sipwake.toml" in text
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed")
    sipwake = shutil.which("sipwake", path=str(Path(sys.executable).parent)) or sys.executable
    unit = tmp_path / "sipwake.service"
    unit.write_text(text.replace("/usr/local/bin/sipwake", sipwake))
    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert str(unit) not in result.stderr, result.stderr
