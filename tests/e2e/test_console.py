"""The admin console in a real browser (Debian's headless Chromium, driven by selenium
through /usr/bin/chromedriver): log in with the admin token, open a finished push-woken
call, check the waterfall it draws, and save a screenshot (tests/artifacts/console.png).

The same call's timeline is also checked as the one INFO line the server logs at its end,
under the INVITE's Call-ID."""

from __future__ import annotations

import json
import re
import shutil
import socket
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import (
    RunningServer,
    apns_emulator,
    free_port,
    keys,
    run_sipp,
    scenario,
    serve,
    start_phone,
)
from tests.e2e.test_push import TOKEN_A, Relay, push_config

pytestmark = pytest.mark.e2e
TOKEN = "console-secret"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture
def browser() -> Iterator[Any]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("chromium and chromium-driver are not installed (scripts/system-deps)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="sipwake-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # Root, no GPU, no network but loopback: without the background-networking flags
    # Chromium keeps dialling Google's hosts, which this machine refuses.
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1000",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def admin_get(server: RunningServer, path: str) -> Any:
    host, port = server.addr("api")
    req = urllib.request.Request(
        f"http://{host}:{port}{path}", headers={"authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def finished_call(server: RunningServer, timeout: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        recent = admin_get(server, "/admin/calls")["recent"]
        done = [c for c in recent if c["status"] == 200 and c["ended"]]
        if done:
            return done[0]  # type: ignore[no-any-return]
        time.sleep(0.1)
    raise AssertionError(f"no finished call in {recent}")


def test_console_draws_a_push_woken_call(tmp_path: Path, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    relay = Relay()
    try:
        with apns_emulator("--forward-url", f"http://127.0.0.1:{relay.port}/") as emu:
            # A short grace for late devices, so the call ends (and is logged) soon.
            text = (
                push_config(emu, cancel_grace=1.0)
                .replace("[api]\n", f'[api]\nadmin_token = "{TOKEN}"\n', 1)
                .replace('log_level = "info"', 'log_level = "debug"')
            )
            with serve(text, tmp_path) as server:
                port = free_port(socket.SOCK_STREAM)
                relay.routes[TOKEN_A] = port
                phone = start_phone(server.addr("udp"), port, "--token", TOKEN_A)
                try:
                    res = run_sipp(
                        scenario("uac_call.xml", tmp_path),
                        server.addr("udp"),
                        extra=["-s", "bob", "-d", "100", *keys(domain="127.0.0.1")],
                    )
                    assert res.returncode == 0 and res.successful == 1, res.output
                    row = finished_call(server)
                    host, api = server.addr("api")
                    with urllib.request.urlopen(f"http://{host}:{api}/metrics", timeout=5) as r:
                        metrics = r.read().decode()
                    # The timeline feeds the wake-latency histograms.
                    assert "sipwake_wake_register_seconds_count 1.0" in metrics
                    assert "sipwake_wake_delivery_seconds_count 1.0" in metrics
                finally:
                    phone.stop()
                call = admin_get(server, f"/admin/calls/{row['call_id']}")
                kinds = [e["event"] for e in call["events"]]
                for kind in ("invite", "push_sent", "push_answer", "wake_register", "branch"):
                    assert kind in kinds, kinds
                # The log line: one INFO line for the call, under the INVITE's Call-ID.
                lines = [
                    ln
                    for ln in server.output
                    if f"sipwake.timeline [call_id={call['sip_call_id']}] call {call['call_id']}"
                    in ln
                ]
                assert len(lines) == 1, "".join(server.output)
                assert " INFO " in lines[0] and "push_sent" in lines[0], lines[0]
                # --log-level debug: the INVITE's transaction line is DEBUG, and every line
                # naming the call carries the INVITE's Call-ID, though the wake REGISTER
                # (another Call-ID) is what delivered it.
                tag = f"[call_id={call['sip_call_id']}]"
                invite = [
                    ln for ln in server.output if " DEBUG sipwake.engine" in ln and "INVITE" in ln
                ]
                assert invite and all(tag in ln for ln in invite), invite
                naming = [ln for ln in server.output if call["call_id"] in ln]
                assert naming and all(tag in ln for ln in naming), naming
                ARTIFACTS.mkdir(exist_ok=True)
                (ARTIFACTS / "console-call.log").write_text(lines[0])

                host, api = server.addr("api")
                browser.get(f"http://{host}:{api}/admin/ui")
                browser.find_element(By.ID, "token").send_keys(TOKEN)
                browser.find_element(By.ID, "login-button").click()
                wait = WebDriverWait(browser, 10)
                selector = f'#recent tr[data-call="{call["call_id"]}"]'
                wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, selector))).click()
                wait.until(ec.visibility_of_element_located((By.ID, "waterfall")))
                wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#waterfall .mark"))
                rows = browser.find_elements(By.CSS_SELECTOR, "#waterfall .row")
                devices = [r.get_attribute("data-device") for r in rows]
                assert devices[0] == "caller"
                assert len(devices) == 1 + len(call["devices"]), devices
                device_row = rows[1]
                marks = device_row.find_elements(By.CSS_SELECTOR, ".mark")
                drawn = [m.get_attribute("data-event") for m in marks]
                for kind in ("push_sent", "push_answer", "wake_register", "branch"):
                    assert kind in drawn, drawn
                # Marks sit on the time axis in event order: x grows with t_ms.
                xs = [
                    float(m.find_element(By.TAG_NAME, "circle").get_attribute("cx")) for m in marks
                ]
                ms = [float(m.get_attribute("data-ms")) for m in marks]
                assert [x for _, x in sorted(zip(ms, xs, strict=True))] == sorted(xs)
                assert device_row.find_elements(By.CSS_SELECTOR, ".span")  # push / wake bars
                title = browser.find_element(By.ID, "detail-title").text
                assert call["call_id"] in title and "200" in title, title
                table = [
                    r.get_attribute("data-event")
                    for r in browser.find_elements(By.CSS_SELECTOR, "#events tr")
                ]
                assert table == kinds
                assert browser.save_screenshot(str(ARTIFACTS / "console.png"))
                assert re.search(r"\d+ ms", browser.find_element(By.ID, "waterfall").text)
    finally:
        relay.close()
