"""``sipwake demo``: the push-woken call, end to end, as the README's first command runs it
(a subprocess), in text and JSON, over UDP and TCP; and that it fails loudly when the phone
never wakes."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from sipwake.emulate.caller import CallResult
from sipwake.emulate.demo import TIMELINE, DemoReport, Marks, _judge, run_demo

pytestmark = pytest.mark.e2e

LABELS = [what for _, what, _, _ in TIMELINE]
CHECKS = ["OPTIONS over UDP", "OPTIONS over TCP", "garbage datagram", "malformed request"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    # Unclosed sockets and transports only warn (ResourceWarning, ignored by default):
    # show them all, and in dev mode asyncio also reports tasks destroyed while pending.
    return subprocess.run(
        [sys.executable, "-X", "dev", "-W", "always", "-m", "sipwake", "demo", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_clean_exit(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for noise in ("Warning", "Task was destroyed", "Traceback", "Exception ignored"):
        assert noise not in proc.stderr, proc.stderr


def test_demo_text_shows_every_step_in_order() -> None:
    proc = run()
    assert_clean_exit(proc)
    out = proc.stdout
    call = out[out.index("the call (ms since the INVITE)") : out.index("\nchecks")]
    rows = [re.fullmatch(r"\s+(\d+\.\d) ms  (\w+)\s+(.+)", line) for line in call.splitlines()[1:]]
    assert all(rows), call
    times = [float(m[1]) for m in rows if m]
    whats = [m[3] for m in rows if m]
    assert sorted(whats) == sorted(LABELS), call
    assert times == sorted(times), call
    # The steps each depends on come first in the printed timeline.
    for _, what, _, after in TIMELINE:
        for before in after:
            label = next(w for k, w, _, _ in TIMELINE if k == before)
            assert whats.index(label) < whats.index(what), call
    for check in CHECKS:
        assert re.search(rf"^  ok    {check}", out, re.M), out
    assert "FAIL" not in out
    summary = out.rstrip().splitlines()[-1]
    assert re.match(r"push-woken call set up in \d+ ms", summary), summary


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_demo_json_timeline(transport: str) -> None:
    proc = run("--json", "--transport", transport)
    assert_clean_exit(proc)
    doc = json.loads(proc.stdout)
    assert doc["ok"] is True and doc["problems"] == []
    assert doc["transport"] == transport
    assert doc["summary"].startswith("push-woken call set up in ")
    at = {step["key"]: step["at_ms"] for step in doc["timeline"]}
    assert set(at) == {key for key, _, _, _ in TIMELINE}
    assert all(isinstance(t, float) for t in at.values()), at
    assert at["invite_sent"] == 0.0
    for key, _, _, after in TIMELINE:
        assert all(at[before] <= at[key] for before in after), (key, at)
    # The push really went through the emulator before the phone heard of the call.
    assert at["push_sent"] <= at["push_at_apns"] <= at["push_at_phone"] < at["invite_at_phone"]
    assert at["got_110"] <= at["got_180"] <= at["got_200"] < at["bye_ok"]  # 0.1 ms ties
    assert [c["ok"] for c in doc["checks"]] == [True] * len(CHECKS)
    assert any(f"over {transport.upper()}" in line for line in doc["setup"])


def test_bad_transport_is_a_usage_error() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "sipwake", "demo", "--transport", "carrier-pigeon"],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr


async def test_phone_that_never_wakes_fails_the_demo() -> None:
    report = await run_demo(phone_action="ignore", hold_window=0.5)
    assert not report.ok
    assert "the call failed: 480 Temporarily Unavailable" in report.problems, report.problems
    assert "never happened: phone wakes up (nor 9 later steps)" in report.problems
    assert not report.summary
    # What did happen is still timed: the push reached the phone, which ignored it.
    at = {s.key: s.at_ms for s in report.timeline}
    assert at["push_at_phone"] is not None and at["woke"] is None
    assert all(c.ok for c in report.checks)


def test_steps_out_of_order_are_reported() -> None:
    marks = Marks()
    for i, (key, _, _, _) in enumerate(TIMELINE):
        marks.mark(key, 100.0 + i / 1000)
    marks.at["got_180"] = marks.at["got_200"] + 0.001  # 180 after 200
    report = DemoReport("udp")
    _judge(report, marks, CallResult(200, "OK", 200), [])
    assert report.problems == [
        "out of order: 'caller gets 200 OK (answered)' came before 'caller gets 180 Ringing'"
    ]
    times = [s.at_ms for s in report.timeline]
    assert times == sorted(t or 0.0 for t in times)  # printed in the order things happened
