"""Edge mode figures (docs/edge-mode.md): REGISTER throttling towards the legacy box, and
the push-woken call set-up time through it next to registrar mode.

    python3 bench/bench_edge.py [--registrations 50] [--refreshes 10] [--calls 10]

Kamailio with the edge tests' legacy config (tests/e2e/kamailio/legacy.cfg: digest auth,
usrloc in memory) on 127.0.0.2, ``sipwake serve`` on 127.0.0.3, SIPp and the simulated
phone on 127.0.0.1, the APNs emulator as its own process; all on this machine's shared
cores, over UDP.

(a) Throttling. SIPp runs ``--registrations`` device sessions one after another; each
    REGISTERs (401, credentials, 200), then refreshes ``--refreshes`` times over the same
    socket with the same Call-ID and rising CSeq, as a UA does (RFC 3261 §10.2.4). Counted:
    REGISTERs sipwake received (SIPp's count) and REGISTERs that reached Kamailio (its log).
    In a deployment the ratio is set by the app's refresh interval against
    ``edge.upstream_expires``: with an app refreshing every 600 s and 3600 s upstream, 5 of
    every 6 refreshes are answered by sipwake.

(b) Set-up time of a push-woken call, INVITE sent -> 200 received at the caller (SIPp's
    response-time trace), ``--calls`` calls per mode, each to a freshly registered
    sleeping phone (wake delay 0): registrar mode (caller -> sipwake) and edge mode (caller
    -> Kamailio -> sipwake, the wake REGISTER's two round trips to Kamailio -- challenge,
    credentials -- included).
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.harness import (
    SCENARIOS,
    apns_emulator,
    free_port,
    keys,
    run_sipp,
    serve,
    start_phone,
)
from tests.e2e.legacy import DOMAIN, SIPWAKE_IP, USERS, legacy_kamailio
from tests.e2e.test_push import Relay

RESULTS = Path(__file__).parent / "results"
TOKEN = "d4" * 32


def refresh_scenario(workdir: Path, refreshes: int) -> Path:
    """tests/e2e/scenarios/edge_register_refresh.xml with ``refreshes`` refreshes: its
    third <send> (CSeq 3) and the <recv> after it, repeated with rising CSeq."""
    text = (SCENARIOS / "edge_register_refresh.xml").read_text()
    start = text.rindex("<send", 0, text.index("CSeq: 3 REGISTER"))
    end = text.index("<send", start + 1)
    out = text[:start]
    for i in range(refreshes):
        out += text[start:end].replace("CSeq: 3 REGISTER", f"CSeq: {3 + i} REGISTER")
    path = workdir / f"edge_register_refresh_{refreshes}.xml"
    path.write_text(out + "</scenario>\n")
    return path


def edge_config(upstream: str, push: str) -> str:
    return f"""
[server]
domains = ["{DOMAIN}"]
[[listen]]
transport = "udp"
host = "{SIPWAKE_IP}"
port = 0
[api]
port = 0
[storage]
url = "memory://"
[edge]
upstream = "{upstream}"
[push]
{push}
"""


def registrar_config(push: str) -> str:
    return f"""
[server]
domains = ["{DOMAIN}"]
[[listen]]
transport = "udp"
host = "{SIPWAKE_IP}"
port = 0
[api]
port = 0
[storage]
url = "memory://"
[auth]
enabled = false
[push]
{push}
"""


def setup_ms(
    calls: int,
    workdir: Path,
    relay: Relay,
    *,
    register_at: tuple[str, int],
    call_at: tuple[str, int],
    password: str,
) -> list[float]:
    """INVITE -> 200 at the caller for ``calls`` push-woken calls, one at a time."""
    out: list[float] = []
    for i in range(calls):
        port = free_port(socket.SOCK_STREAM)
        relay.routes[TOKEN] = port
        args = ["--token", TOKEN, "--user", "bob", "--domain", DOMAIN, "--wake-delay", "0"]
        if password:
            args += ["--password", password]
        phone = start_phone(register_at, port, *args)
        try:
            rtt_dir = workdir / f"rtt-{call_at[1]}-{i}"
            rtt_dir.mkdir()
            res = run_sipp(
                "uac_call.xml",
                call_at,
                extra=["-s", "bob", "-d", "10", "-trace_rtt", "-rtt_freq", "1",
                       *keys(domain=DOMAIN)],
                workdir=rtt_dir,
            )  # fmt: skip
            if res.returncode != 0:
                raise RuntimeError(res.output + phone.text())
            [trace] = list(rtt_dir.glob("*_rtt.csv"))
            rows = [r.split(";") for r in trace.read_text().splitlines()[1:] if r.strip()]
            out.append(float(rows[0][1]))
        finally:
            phone.stop()
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {}
    relay = Relay()
    try:
        with (
            tempfile.TemporaryDirectory(prefix="bench-edge-") as tmpdir,
            legacy_kamailio(free_port()) as legacy,
            apns_emulator("--forward-url", f"http://127.0.0.1:{relay.port}/") as emu,
        ):
            tmp = Path(tmpdir)
            with serve(edge_config(legacy.uri("udp"), emu.config()), tmp) as server:
                before = legacy.text().count("legacy: REGISTER for bob")
                res = run_sipp(
                    refresh_scenario(tmp, args.refreshes),
                    server.addr("udp"),
                    calls=args.registrations,
                    rate=50,
                    # One session at a time: they are one device (one socket, one Contact)
                    # registering again and again; two at once would be two devices whose
                    # refreshes interleave under different Call-IDs.
                    limit=1,
                    timeout=120,
                    extra=["-auth_uri", DOMAIN, "-au", "bob", "-ap", USERS["bob"],
                           *keys(user="bob", domain=DOMAIN)],
                )  # fmt: skip
                if res.returncode != 0 or res.successful != args.registrations:
                    raise RuntimeError(res.output)
                received = args.registrations * (2 + args.refreshes)
                forwarded = legacy.text().count("legacy: REGISTER for bob") - before
                result["throttling"] = {
                    "registrations": args.registrations,
                    "refreshes_each": args.refreshes,
                    "received": received,
                    "forwarded": forwarded,
                    "reduction": round(received / forwarded, 2),
                }
                print(json.dumps(result["throttling"]), file=sys.stderr)
                edge = setup_ms(
                    args.calls, tmp, relay,
                    register_at=server.addr("udp"), call_at=legacy.address, password=USERS["bob"],
                )  # fmt: skip
            with serve(registrar_config(emu.config()), tmp) as server:
                reg = setup_ms(
                    args.calls, tmp, relay,
                    register_at=server.addr("udp"), call_at=server.addr("udp"), password="",
                )  # fmt: skip
    finally:
        relay.close()
    for name, samples in (("edge", edge), ("registrar", reg)):
        result[f"setup_ms_{name}"] = {
            "calls": len(samples),
            "median": round(statistics.median(samples), 1),
            "min": round(min(samples), 1),
            "max": round(max(samples), 1),
        }
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--registrations", type=int, default=50)
    p.add_argument("--refreshes", type=int, default=10)
    p.add_argument("--calls", type=int, default=10)
    args = p.parse_args()
    result = run(args)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "edge.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
