"""SIPVicious (PyPI: sipvicious), the scanner attackers run, against a server with digest
authentication on (issue 15): svwar must find no user with REGISTER, INVITE or OPTIONS,
and svcrack must get no more than ``max_failures`` guesses checked in a window."""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import RunningServer, loopback_config, serve, write_config
from tests.e2e.probe import Prober, add_user

pytestmark = pytest.mark.e2e

DOMAIN = "127.0.0.1"
MAX_FAILURES = 5
BIN = Path(sys.executable).parent


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[RunningServer]:
    # MD5 only: svcrack computes MD5 digests and cannot answer a SHA-256 challenge.
    text = loopback_config(
        domains=(DOMAIN,),
        storage=f"sqlite:///{tmp_path}/users.db",
        extra=f'[auth]\nalgorithms = ["MD5"]\nmax_failures = {MAX_FAILURES}\n',
    )
    cfg = write_config(tmp_path / "sipwake.toml", text)
    for user in ("100", "101", "150", "200"):
        add_user(cfg, user, "1238")
    with serve(text, tmp_path) as server:
        yield server
        assert server.alive(), "server died during the test"


def sipvicious(tool: str, server: RunningServer, *args: str, timeout: float) -> str:
    """Run ``sipvicious_<tool>`` from 127.0.0.1 for at most ``timeout`` seconds (svcrack
    never stops by itself while every attempt is answered 403); its output."""
    host, port = server.addr("udp")
    cmd = [str(BIN / f"sipvicious_{tool}"), "-p", str(port), "-b", "127.0.0.1", *args, host]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        return res.stdout + res.stderr
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout or b""
        err = exc.stderr or b""
        return (out if isinstance(out, str) else out.decode()) + (
            err if isinstance(err, str) else err.decode()
        )


def metric(server: RunningServer, name: str) -> float:
    host, port = server.addr("api")
    text = urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5).read().decode()
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert m is not None, name
    return float(m.group(1))


@pytest.mark.parametrize("method", ["REGISTER", "INVITE", "OPTIONS"])
def test_svwar_finds_no_user(guarded: RunningServer, method: str) -> None:
    out = sipvicious("svwar", guarded, "-e", "90-210", "-m", method, "--force", timeout=60)
    assert "found nothing" in out, out
    assert "exists" not in out, out


def test_svcrack_gets_at_most_max_failures_guesses(guarded: RunningServer) -> None:
    # The password is the 9th guess of the range; the budget is 5 a minute.
    out = sipvicious("svcrack", guarded, "-u", "100", "-r", "1230-1240", timeout=8)
    assert "The password for" not in out, out
    assert 1 <= metric(guarded, "sipwake_auth_failures_total") <= MAX_FAILURES
    # The budget is the attacked account's and the attacker's address: others carry on.
    with Prober(guarded.addr("udp"), "127.0.0.60") as phone:
        assert phone.register("101", DOMAIN, password="1238").status == 200
