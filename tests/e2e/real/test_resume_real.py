"""A held call survives kill -9 of sipwake, with real clients (issue 11 step 3): baresip
calls linphone, asleep with a push token; sipwake holds the call and pushes, and is then
killed (-9) and restarted on the same SQLite file and ports. It takes the call back at
start-up (baresip got 110 and does not retransmit), linphone, woken by the one push,
registers, gets the INVITE and answers; baresip's call is established through the
restarted node, and hung up."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.e2e.real.rig import real_rig
from tests.e2e.real.test_matrix import pair, started, stop, token, uri

pytestmark = [pytest.mark.e2e, pytest.mark.realclient]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_kill_9_while_holding_a_call_for_linphone_restart_delivers_it(
    tmp_path: Path, transport: str
) -> None:
    # TCP: the caller's connection died with the node; the restarted node answers over
    # a new connection to its Via sent-by (RFC 3261 §18.2.2), where baresip listens.
    with real_rig(tmp_path, fixed_ports=True) as rig:
        tok = token()
        lp, bs = pair(rig, transport, tok)
        try:
            started(lp, bs)
            lp.kill9()  # asleep
            bmark = bs.mark()
            assert bs.command("dial", uri(lp.account.user))["ok"]
            rig.inbox.wait(tok)
            bs.wait_output("SIP/2.0 110")
            rig.crash_and_restart()
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
