"""Webhook pushes: CPU per push of the sender, a fresh connection per push or kept alive.

    python3 bench/bench_webhook.py [--pushes 5000] [--concurrency 1,8] [--tls]

The receiver is bench/wake_relay.py's HTTP side (it keeps a connection open unless the
client sends ``Connection: close``), in its own process, so "CPU per push" is the sender's
own (process CPU time / pushes): ``WebhookProvider.send`` with its keep-alive client
(push/http1.py ``Http1Client``) against the one-shot ``http1_request`` that opens and
closes a connection for each push, as the provider did before. ``--tls`` puts the receiver
behind TLS (a test CA; a TLS handshake per push is what a fresh connection costs an https
webhook). Runs alternate, A B A B. Both share the machine's cores: say so next to a figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.harness import free_port

from sipwake.emulate.tlsutil import make_test_certs
from sipwake.policy.bindings import PushTarget
from sipwake.push.base import Delivered, PushRequest
from sipwake.push.http1 import http1_request
from sipwake.push.webhook import TIMESTAMP_HEADER, WebhookProvider, encode_request

# The wake relay's HTTP side behind TLS (asyncio's own), for --tls.
RECEIVER = """
import asyncio, ssl, sys
sys.path.insert(0, {root!r})
from bench.wake_relay import WakeRelay, _Http
async def main():
    relay = WakeRelay(("127.0.0.1", 9), 1, 9)
    ctx = None
    if {cert!r}:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain({cert!r}, {key!r})
    server = await asyncio.get_running_loop().create_server(
        lambda: _Http(relay), "127.0.0.1", {port}, ssl=ctx)
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def request(i: int) -> PushRequest:
    target = PushTarget("relay", f"{i:064x}")
    return PushRequest(target=target, payload={"type": "call", "call_id": f"c{i}"})


async def run(
    mode: str, url: str, pushes: int, concurrency: int, ca_file: str | None
) -> dict[str, float]:
    provider = WebhookProvider("relay", url=url, secret="bench", timeout=5.0, ca_file=ca_file)
    ctx = ssl.create_default_context(cafile=ca_file) if ca_file else None
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> bool:
        async with sem:
            if mode == "keepalive":
                return await provider.send(request(i), time.time()) == Delivered()
            # What the provider did before: the same signed body, a connection per push.
            now = time.time()
            body = encode_request(request(i), now)
            reply = await http1_request(
                "POST",
                url,
                [("content-type", "application/json"), (TIMESTAMP_HEADER, str(int(now)))],
                body,
                ssl_context=ctx,
                timeout=5.0,
            )
            return reply.status == 200

    await asyncio.gather(*(one(i) for i in range(50)))  # warm-up (and TLS session setup)
    cpu0, t0 = time.process_time(), time.perf_counter()
    ok = sum(await asyncio.gather(*(one(i) for i in range(pushes))))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    await provider.close()
    return {"ok": ok, "cpu_us_per_push": 1e6 * cpu / pushes, "pushes_per_s": pushes / wall}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pushes", type=int, default=5000)
    ap.add_argument("--concurrency", default="1,8")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--tls", action="store_true")
    args = ap.parse_args()
    port = free_port(socket.SOCK_STREAM)
    root = str(Path(__file__).resolve().parents[1])
    results: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        cert = key = ""
        ca_file = None
        if args.tls:
            certs = make_test_certs(Path(tmp))
            cert, key = str(certs.cert_file), str(certs.key_file)
            ca_file = str(certs.ca_file)
        code = RECEIVER.format(root=root, cert=cert, key=key, port=port)
        child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
            url = f"{'https' if args.tls else 'http'}://127.0.0.1:{port}/"
            for conc in (int(c) for c in args.concurrency.split(",")):
                for rnd in range(args.rounds):
                    for mode in ("fresh", "keepalive"):
                        r = asyncio.run(run(mode, url, args.pushes, conc, ca_file))
                        r |= {"mode": mode, "concurrency": conc, "round": rnd + 1}
                        results.append(r)
                        print(
                            f"{mode:>9}  concurrency {conc:>3}  round {rnd + 1}: "
                            f"{r['cpu_us_per_push']:7.0f} µs CPU a push, "
                            f"{r['pushes_per_s']:7.0f} pushes/s, ok {r['ok']}/{args.pushes}"
                        )
        finally:
            child.terminate()
            child.wait()
    out = Path(__file__).parent / "results" / f"webhook{'_tls' if args.tls else ''}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
