"""SIGHUP reload against a real server: a call held while the push provider, the admin token
and the log level change is still delivered; the next push goes to the new provider; a bad
file changes nothing and says why; what needs a restart is logged."""

from __future__ import annotations

import signal
import socket
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.harness import (
    ApnsEmulator,
    RunningServer,
    apns_emulator,
    free_port,
    keys,
    run_sipp,
    scenario,
    serve,
    start_phone,
    wait_output,
    wait_output_server,
)
from tests.e2e.test_push import TOKEN_A, Relay, push_config

pytestmark = pytest.mark.e2e


def admin_status(server: RunningServer, token: str) -> int:
    host, port = server.addr("api")
    req = urllib.request.Request(
        f"http://{host}:{port}/admin/calls", headers={"authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def call(server: RunningServer, tmp: Path) -> object:
    return run_sipp(
        scenario("uac_call.xml", tmp),
        server.addr("udp"),
        extra=["-s", "bob", "-d", "100", *keys(domain="127.0.0.1")],
    )


def test_sighup_swaps_provider_token_and_level_without_dropping_calls(tmp_path: Path) -> None:
    relay = Relay()
    try:
        forward = ("--forward-url", f"http://127.0.0.1:{relay.port}/")
        with apns_emulator(*forward) as emu_a, apns_emulator(*forward) as emu_b:
            first = push_config(emu_a).replace("[api]\n", '[api]\nadmin_token = "one"\n', 1)
            with serve(first, tmp_path) as server:
                cfg = server.config_path
                port = free_port(socket.SOCK_STREAM)
                relay.routes[TOKEN_A] = port
                # A slow phone: the call stays held ~1.5 s, long enough to reload under it.
                phone = start_phone(
                    server.addr("udp"), port, "--token", TOKEN_A, "--wake-delay", "1.5"
                )
                try:
                    results: list[object] = []
                    caller = threading.Thread(target=lambda: results.append(call(server, tmp_path)))
                    caller.start()
                    assert wait_output(phone, "push received"), phone.text()
                    second = (
                        push_config(emu_b)
                        .replace("[api]\n", '[api]\nadmin_token = "two"\n', 1)
                        .replace('log_level = "info"', 'log_level = "debug"')
                        + "\n[registrar]\nmin_expires = 30\n"
                    )
                    cfg.write_text(second)
                    server.proc.send_signal(signal.SIGHUP)
                    assert wait_output_server(server, "reloaded"), "".join(server.output)
                    caller.join(30)
                    [held] = results
                    assert held.returncode == 0 and held.successful == 1, held.output  # type: ignore[attr-defined]
                    out = "".join(server.output)
                    assert "registrar changed" in out and "next restart" in out, out
                    assert admin_status(server, "one") == 401
                    assert admin_status(server, "two") == 200
                    # The next call's push goes through the new provider entry.
                    assert wait_output(phone, "slept", timeout=10)
                    res = call(server, tmp_path)
                    assert res.returncode == 0 and res.successful == 1, res.output  # type: ignore[attr-defined]
                    # log_level = "debug": one line per transaction from now on.
                    assert "sipwake.engine" in "".join(server.output)[len(out) :]

                    # A broken file: refused with its key, nothing changes.
                    cfg.write_text(second.replace(emu_b.key_file, str(tmp_path / "missing.p8")))
                    server.proc.send_signal(signal.SIGHUP)
                    assert wait_output_server(server, "reload refused"), "".join(server.output)
                    out = "".join(server.output)
                    assert "push.apns[0].key_file" in out and "missing.p8" in out
                    assert admin_status(server, "two") == 200
                    assert server.alive()
                finally:
                    phone.stop()
            pushes_a = _count(emu_a)
            pushes_b = _count(emu_b)
            assert (pushes_a, pushes_b) == (1, 1), (pushes_a, pushes_b)
    finally:
        relay.close()


def _count(emu: ApnsEmulator) -> int:
    """Pushes an emulator received (its output log lines are not kept: ask it)."""
    return len(emu.pushes())
