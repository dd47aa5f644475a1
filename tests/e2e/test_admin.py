"""The admin API and its CLI against a real server: a sleeping `sipwake phone` registered
through the APNs emulator is listed, test-pushed (the phone receives it), removed, and then a
call to it is no longer pushed (the stale-binding case of issue 14)."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner

from sipwake.cli import main
from tests.e2e.harness import (
    Child,
    RunningServer,
    apns_emulator,
    free_port,
    keys,
    scenario,
    serve,
    start_phone,
    wait_output,
)
from tests.e2e.test_push import TOKEN_A, Relay, push_config, run_sipp

pytestmark = pytest.mark.e2e
TOKEN = "admin-secret"


@contextmanager
def admin_rig(tmp: Path) -> Iterator[tuple[RunningServer, Child, object]]:
    relay = Relay()
    phone: Child | None = None
    try:
        with apns_emulator("--forward-url", f"http://127.0.0.1:{relay.port}/") as emu:
            text = push_config(emu).replace("[api]\n", f'[api]\nadmin_token = "{TOKEN}"\n', 1)
            with serve(text, tmp) as server:
                port = free_port(socket.SOCK_STREAM)
                relay.routes[TOKEN_A] = port
                phone = start_phone(server.addr("udp"), port, "--token", TOKEN_A)
                try:
                    yield server, phone, emu
                finally:
                    phone.stop()
    finally:
        relay.close()


def cli(server: RunningServer, *args: str) -> tuple[int, str]:
    host, port = server.addr("api")
    result = CliRunner().invoke(main, [*args, "--api", f"http://{host}:{port}", "--token", TOKEN])
    return result.exit_code, result.output


def test_bindings_push_test_and_remove(tmp_path: Path) -> None:
    with admin_rig(tmp_path) as (server, phone, _emu):
        code, out = cli(server, "bindings", "list", "bob", "--json")
        assert code == 0, out
        listed = json.loads(out)
        assert listed["aor"] == "sip:bob@127.0.0.1"  # a bare user name: our first domain
        [binding] = listed["bindings"]
        assert binding["push"]["prid"] == TOKEN_A
        code, out = cli(server, "bindings", "list")
        assert code == 0 and "sip:bob@127.0.0.1" in out and "push apns" in out, out

        code, out = cli(server, "push", "test", "bob")
        assert code == 0, out
        assert " apns  delivered" in out, out
        assert wait_output(phone, "push received"), phone.text()

        # Without the token: refused, and nothing removed.
        host, port = server.addr("api")
        req = urllib.request.Request(
            f"http://{host}:{port}/admin/bindings?aor=bob", method="DELETE"
        )
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(req, timeout=5)
        assert info.value.code == 401

        phone.stop()  # the "old install": its binding stays behind
        code, out = cli(server, "bindings", "remove", "sip:bob@127.0.0.1")
        assert code == 0, out
        assert out.startswith("sip:bob@127.0.0.1: removed 1 binding(s)"), out
        code, out = cli(server, "bindings", "list", "bob")
        assert code == 0 and out.strip() == "no bindings", out
        code, out = cli(server, "bindings", "remove", "bob")
        assert code == 1  # nothing left to remove

        # A call now finds nobody: 480 at once, not a hold and a push to the stale token.
        res = run_sipp(
            scenario("uac_reject.xml", tmp_path, expect="480"),
            server.addr("udp"),
            extra=["-s", "bob", *keys(domain="127.0.0.1")],
        )
        assert res.returncode == 0, res.output
        code, out = cli(server, "calls", "list", "--json")
        assert code == 0 and json.loads(out)["calls"] == [], out


def test_cli_without_token_or_server(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["bindings", "list", "--api", "http://127.0.0.1:9"])
    assert result.exit_code == 1
    assert "no admin token" in result.stderr
    port = free_port(socket.SOCK_STREAM)
    result = CliRunner().invoke(
        main, ["calls", "list", "--api", f"http://127.0.0.1:{port}", "--token", "x"]
    )
    assert result.exit_code == 1
    assert "cannot reach the API" in result.stderr
