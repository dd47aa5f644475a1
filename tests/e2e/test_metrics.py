"""/metrics against real servers: the bindings gauge counts what the store holds, by push
provider; with --workers 2 the counters are every worker's, added up; and the Grafana
dashboard in contrib/ only asks for series the server exports."""

from __future__ import annotations

import json
import re
import socket
import time
import urllib.request
from pathlib import Path

import pytest

from sipwake.server import WORKER_SAMPLE_INTERVAL
from tests.e2e.harness import RunningServer, apns_emulator, free_port, serve, start_phone
from tests.e2e.test_cluster import REDIS, fixed_config, prefix  # noqa: F401 (fixture)
from tests.e2e.test_push import TOKEN_A, Relay, push_config

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def scrape(server: RunningServer) -> dict[str, float]:
    host, port = server.addr("api")
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def options(port: int, count: int) -> None:
    """``count`` OPTIONS, each from a socket of its own (so SO_REUSEPORT spreads them)."""
    for i in range(count):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(5)
            s.bind(("127.0.0.1", 0))
            me = s.getsockname()[1]
            s.sendto(
                (
                    f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
                    f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK-m{i}-{me}\r\n"
                    "Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=1\r\n"
                    f"To: <sip:127.0.0.1>\r\nCall-ID: metrics-{i}-{me}\r\nCSeq: 1 OPTIONS\r\n"
                    "Content-Length: 0\r\n\r\n"
                ).encode(),
                ("127.0.0.1", port),
            )
            answer, _ = s.recvfrom(65535)
            assert answer.startswith(b"SIP/2.0 200"), answer


def test_bindings_by_provider_and_push_series(tmp_path: Path) -> None:
    relay = Relay()
    try:
        with apns_emulator("--forward-url", f"http://127.0.0.1:{relay.port}/") as emu:
            text = push_config(emu).replace("[api]\n", '[api]\nadmin_token = "t"\n', 1)
            with serve(text, tmp_path) as server:
                port = free_port(socket.SOCK_STREAM)
                relay.routes[TOKEN_A] = port
                phone = start_phone(server.addr("udp"), port, "--token", TOKEN_A)
                try:
                    # The first scrape walks the store (then at most every 10 s).
                    after = scrape(server)
                    assert after['sipwake_bindings{provider="apns"}'] == 1
                    assert after['sipwake_bindings{provider="fcm"}'] == 0
                    # A test push through the admin API: counted with its provider.
                    host, api = server.addr("api")
                    req = urllib.request.Request(
                        f"http://{host}:{api}/admin/push-test?aor=bob",
                        method="POST",
                        headers={"authorization": "Bearer t"},
                    )
                    with urllib.request.urlopen(req, timeout=30) as resp:
                        assert json.loads(resp.read())["results"][0]["ok"] is True
                    pushed = scrape(server)
                    key = 'sipwake_pushes_total{outcome="delivered",provider="apns",reason=""}'
                    assert pushed[key] == 1
                    assert pushed['sipwake_push_latency_seconds_count{provider="apns"}'] == 1
                    assert pushed['sipwake_pushes_in_flight{provider="apns"}'] == 0
                    assert pushed['sipwake_registrations_total{result="ok"}'] >= 1
                    assert pushed['sipwake_sip_responses_sent_total{code="200"}'] >= 1
                finally:
                    phone.stop()
    finally:
        relay.close()


def test_workers_metrics_are_added_up(tmp_path: Path, prefix: str) -> None:  # noqa: F811
    with apns_emulator() as emu:
        cfg = fixed_config("box", f"{REDIS}?prefix={prefix}", emu.config())
        with serve(cfg, tmp_path, extra_args=["--workers", "2"]) as server:
            base = scrape(server).get("sipwake_sip_messages_received_total", 0.0)
            sent = 40  # from 40 source ports: all on one worker has odds of 2**-39
            options(server.addr("udp")[1], sent)
            # Each worker writes its own values every WORKER_SAMPLE_INTERVAL (5 s);
            # worker 0's scrape adds them up.
            deadline = time.monotonic() + 3 * WORKER_SAMPLE_INTERVAL
            while True:
                samples = scrape(server)
                total = samples["sipwake_sip_messages_received_total"]
                if total - base >= sent or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert total - base == sent
            assert samples['sipwake_sip_responses_sent_total{code="200"}'] >= sent


def exported_names() -> set[str]:
    from sipwake.api.metrics import Metrics

    text = Metrics().render().decode()
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            names.add(name)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


def test_grafana_dashboard_names_only_exported_series() -> None:
    dashboard = json.loads((ROOT / "contrib" / "grafana-dashboard.json").read_text())
    exprs = [
        t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", []) if "expr" in t
    ]
    assert len(exprs) >= 10
    exported = exported_names()
    used = set()
    for expr in exprs:
        names = set(re.findall(r"\bsipwake_[a-z0-9_]+", expr))
        assert names, expr
        assert names <= exported, (expr, names - exported)
        used |= names
    # Every family is on the dashboard somewhere (histograms through one of their series).
    families = {n for n in exported if not n.endswith(("_bucket", "_sum", "_count", "_created"))}
    missing = {f for f in families if not any(u == f or u.startswith(f + "_") for u in used)}
    assert not missing, missing
