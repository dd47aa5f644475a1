"""A held call survives kill -9 of sipwake, with real clients (issue 11 step 3): baresip
calls linphone, asleep with a push token; sipwake holds the call and pushes, and is then
killed (-9) and restarted on the same SQLite file and ports. It takes the call back at
start-up (baresip got 110 and does not retransmit), linphone, woken by the one push,
registers, gets the INVITE and answers; baresip's call is established through the
restarted node, and hung up."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from sipwake.emulate.tlsutil import make_test_certs
from tests.e2e.harness import apns_emulator, free_port, serve
from tests.e2e.real.rig import PushInbox, RealRig, _add_users, rig_config
from tests.e2e.real.test_matrix import pair, started, stop, token, uri

pytestmark = [pytest.mark.e2e, pytest.mark.realclient]


@contextmanager
def restartable_rig(tmp: Path) -> Iterator[tuple[RealRig, ExitStack, str]]:
    """The real-client rig on fixed ports (a restart binds them again); yields the rig,
    the stack its server lives on, and the config to restart it with."""
    certs = make_test_certs(tmp / "certs")
    client_pem = tmp / "certs" / "client.pem"
    client_pem.write_bytes(certs.cert_file.read_bytes() + certs.key_file.read_bytes())
    db = tmp / "sipwake.db"
    inbox = PushInbox()
    try:
        with apns_emulator("--forward-url", inbox.url) as emu, ExitStack() as stack:
            asyncio.run(_add_users(db))
            cfg = rig_config(emu, certs, db)
            # UDP, TCP, API, TLS: the first three "port = 0" of the config, then TLS.
            for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                cfg = cfg.replace("port = 0", f"port = {free_port(kind)}", 1)
            cfg = cfg.replace("[api]\nport = 0", f"[api]\nport = {free_port(socket.SOCK_STREAM)}")
            cfg = cfg.replace("port = 0", f"port = {free_port(socket.SOCK_STREAM)}", 1)
            (tmp / "first").mkdir()
            server = stack.enter_context(serve(cfg, tmp / "first"))
            yield RealRig(server, emu, inbox, certs, client_pem, tmp), stack, cfg
    finally:
        inbox.close()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_kill_9_while_holding_a_call_for_linphone_restart_delivers_it(
    tmp_path: Path, transport: str
) -> None:
    # TCP: the caller's connection died with the node; the restarted node answers over
    # a new connection to its Via sent-by (RFC 3261 §18.2.2), where baresip listens.
    with restartable_rig(tmp_path) as (rig, stack, cfg):
        tok = token()
        lp, bs = pair(rig, transport, tok)
        try:
            started(lp, bs)
            lp.kill9()  # asleep
            bmark = bs.mark()
            assert bs.command("dial", uri(lp.account.user))["ok"]
            rig.inbox.wait(tok)
            bs.wait_output("SIP/2.0 110")
            first = rig.server
            first.proc.send_signal(signal.SIGKILL)
            first.proc.wait(10)
            (tmp_path / "second").mkdir()
            rig.server = stack.enter_context(serve(cfg, tmp_path / "second"))
            out = "".join(rig.server.output)
            assert " resumed" in out, out
            woke = len(lp.events)
            lp.start()  # woken by the push it got before the crash
            ev = lp.wait_event("LinphoneCallIncomingReceived", start=woke)
            lp.ok(f"answer {ev.fields['Id']}")
            bs.wait_event("CALL_ESTABLISHED", start=bmark)
            time.sleep(0.3)
            assert bs.command("hangup")["ok"]
            lp.wait_event("LinphoneCallEnd", start=woke)
            assert len(rig.inbox.for_token(tok)) == 1  # one push for the one call
        finally:
            stop(lp, bs)
