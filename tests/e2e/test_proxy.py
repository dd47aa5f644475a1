"""End to end: registrar + forking proxy, SIPp callers and callees through `sipwake serve`."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.harness import (
    RunningServer,
    keys,
    loopback_config,
    run_sipp,
    scenario,
    serve,
    start_uas,
)

pytestmark = pytest.mark.e2e

DOMAIN = "127.0.0.1"


def config(storage: str = "memory://", auth: bool = False) -> str:
    extra = f'[auth]\nenabled = {"true" if auth else "false"}\nalgorithms = ["MD5"]\n'
    return loopback_config(storage=storage, extra=extra + "[sip]\ntimer_c = 185.0\n")


@pytest.fixture
def proxy(tmp_path: Path):  # type: ignore[no-untyped-def]
    with serve(config(), tmp_path) as running:
        yield running
        assert running.alive()


def register(
    server: RunningServer,
    user: str,
    contact_port: int,
    *,
    transport: str = "udp",
    ctransport: str = "udp",
    expires: int = 3600,
) -> None:
    res = run_sipp(
        "register.xml",
        server.addr(transport),
        transport=transport,
        extra=keys(
            user=user,
            domain=DOMAIN,
            contact_port=contact_port,
            ctransport=ctransport,
            expires=expires,
        ),
    )
    assert res.returncode == 0 and res.successful == 1, res.output


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_call_through_proxy(proxy: RunningServer, transport: str) -> None:
    uas = start_uas("uas_answer.xml", transport=transport, extra=["-d", "50", *keys(user="bob")])
    register(proxy, "bob", uas.port, transport=transport, ctransport=transport)
    res = run_sipp(
        "uac_call.xml",
        proxy.addr(transport),
        transport=transport,
        extra=["-s", "bob", "-d", "100", *keys(domain=DOMAIN)],
    )
    assert res.returncode == 0 and res.successful == 1, res.output
    rc, out = uas.wait()
    assert rc == 0, out


def test_udp_caller_tcp_callee(proxy: RunningServer) -> None:
    """Transport switch: double Record-Route (RFC 5658), in-dialog requests still routed."""
    uas = start_uas("uas_answer.xml", transport="tcp", extra=["-d", "50", *keys(user="bob")])
    register(proxy, "bob", uas.port, ctransport="tcp")
    res = run_sipp(
        "uac_call.xml",
        proxy.addr("udp"),
        transport="udp",
        extra=["-s", "bob", "-d", "100", *keys(domain=DOMAIN)],
    )
    assert res.returncode == 0 and res.successful == 1, res.output
    rc, out = uas.wait()
    assert rc == 0, out


def test_cancel_before_answer_gives_487(proxy: RunningServer, tmp_path: Path) -> None:
    ring = scenario("uas_ring.xml", tmp_path, cancel_reason=".*")
    uas = start_uas(ring, extra=keys(user="bob"))
    register(proxy, "bob", uas.port)
    res = run_sipp("uac_cancel.xml", proxy.addr("udp"), extra=["-s", "bob", *keys(domain=DOMAIN)])
    assert res.returncode == 0 and res.successful == 1, res.output
    rc, out = uas.wait()
    assert rc == 0, out


def test_busy_reaches_caller(proxy: RunningServer, tmp_path: Path) -> None:
    uas = start_uas("uas_reject.xml", extra=keys(user="bob"))
    register(proxy, "bob", uas.port)
    res = run_sipp(
        scenario("uac_reject.xml", tmp_path, expect="486"),
        proxy.addr("udp"),
        extra=["-s", "bob", *keys(domain=DOMAIN)],
    )
    assert res.returncode == 0 and res.successful == 1, res.output
    rc, out = uas.wait()
    assert rc == 0, out


def test_fork_one_answers_other_cancelled_elsewhere(proxy: RunningServer, tmp_path: Path) -> None:
    answering = start_uas("uas_answer.xml", extra=["-d", "300", *keys(user="bob")])
    ringing = start_uas(
        scenario(
            "uas_ring.xml",
            tmp_path,
            cancel_reason='Reason: SIP;cause=200;text="Call completed elsewhere"',
        ),
        extra=keys(user="bob"),
    )
    register(proxy, "bob", answering.port)
    register(proxy, "bob", ringing.port)
    res = run_sipp(
        "uac_call.xml", proxy.addr("udp"), extra=["-s", "bob", "-d", "100", *keys(domain=DOMAIN)]
    )
    assert res.returncode == 0 and res.successful == 1, res.output
    rc, out = ringing.wait()
    assert rc == 0, out
    rc, out = answering.wait()
    assert rc == 0, out


def test_unregistered_user_gets_480(proxy: RunningServer, tmp_path: Path) -> None:
    res = run_sipp(
        scenario("uac_reject.xml", tmp_path, expect="480"),
        proxy.addr("udp"),
        extra=["-s", "nobody", *keys(domain=DOMAIN)],
    )
    assert res.returncode == 0, res.output


def test_digest_challenge_and_success(tmp_path: Path) -> None:
    cfg_text = config(storage=f"sqlite:///{tmp_path}/auth.db", auth=True)
    cfg = tmp_path / "users.toml"
    cfg.write_text(cfg_text)
    add = subprocess.run(
        [
            sys.executable,
            "-m",
            "sipwake",
            "user",
            "add",
            "alice",
            "-c",
            str(cfg),
            "--password",
            "s3cret",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert add.returncode == 0, add.stderr
    with serve(cfg_text, tmp_path) as server:
        ok = run_sipp(
            "register_auth.xml",
            server.addr("udp"),
            extra=[
                "-auth_uri",
                DOMAIN,
                "-au",
                "alice",
                "-ap",
                "s3cret",
                *keys(user="alice", domain=DOMAIN, contact_port=5999, ctransport="udp"),
            ],
        )
        assert ok.returncode == 0 and ok.successful == 1, ok.output
        bad = run_sipp(
            scenario("register_auth.xml", tmp_path),
            server.addr("udp"),
            extra=[
                "-auth_uri",
                DOMAIN,
                "-au",
                "alice",
                "-ap",
                "wrong",
                *keys(user="alice", domain=DOMAIN, contact_port=5999, ctransport="udp"),
            ],
        )
        assert bad.successful == 0 and bad.failed == 1  # 403 instead of 200
        # Without credentials a call from a local user is challenged with 407.
        res = run_sipp(
            scenario("uac_reject.xml", tmp_path, expect="407"),
            server.addr("udp"),
            extra=["-s", "alice", *keys(domain=DOMAIN)],
        )
        assert res.returncode == 0, res.output


def test_bindings_survive_kill_9(tmp_path: Path) -> None:
    cfg_text = config(storage=f"sqlite:///{tmp_path}/restart.db")
    uas = start_uas("uas_answer.xml", extra=["-d", "20", *keys(user="bob")], timeout=60)
    with serve(cfg_text, tmp_path) as first:
        register(first, "bob", uas.port)
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
    with serve(cfg_text, tmp_path) as second:
        res = run_sipp(
            "uac_call.xml",
            second.addr("udp"),
            extra=["-s", "bob", "-d", "50", *keys(domain=DOMAIN)],
        )
        assert res.returncode == 0 and res.successful == 1, res.output
    rc, out = uas.wait()
    assert rc == 0, out
