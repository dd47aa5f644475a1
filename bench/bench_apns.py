"""APNs pushes/s over one HTTP/2 connection: ApnsProvider -> the APNs emulator.

    python3 bench/bench_apns.py [--pushes 20000] [--concurrency 200] [--uvloop]

The emulator runs in a separate process, so the figure "CPU per push" is the client's own
(process CPU time / pushes). Both share the machine's cores: say so next to the figure.
DEPENDENCIES.md's target: >= 3,000 pushes/s per core over one connection.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sipwake.emulate.tlsutil import make_test_certs
from sipwake.policy.bindings import PushTarget
from sipwake.push.apns import ApnsProvider
from sipwake.push.base import Delivered, PushRequest
from sipwake.push.payload import build_payload

EMULATOR = "import sys; from sipwake.emulate.apns import main; sys.exit(main(sys.argv[1:]))"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def run(
    pushes: int, concurrency: int, port: int, certs_ca: Path, p8: Path
) -> dict[str, float]:
    provider = ApnsProvider(
        "apns",
        topic_bundle_id="com.example.app",
        team_id="BENCHTEAM1",
        key_id="BENCHKEY01",
        key_file=p8,
        base_url=f"https://127.0.0.1:{port}",
        ca_file=certs_ca,
    )
    now = time.time()
    payload = build_payload(
        type="call",
        call_id="1b4e28ba-2fa1-41d2-883f-0016d3cca427",
        caller_uri="sip:alice@example.com",
        caller_display="Alice",
        callee="sip:bob@example.com",
        sent_at=now,
        expires_at=now + 30,
        sip_host="sip.example.com",
        sip_port=5061,
        sip_transport="tls",
    )
    requests = [
        PushRequest(PushTarget("apns", f"{i:064x}"), payload, expires_at=now + 600)
        for i in range(concurrency)
    ]
    # Warm up: connect, first JWT, the emulator lifts the one-stream limit.
    await provider.send(requests[0], time.time())
    queue = iter(range(pushes))
    delivered = 0

    async def worker(request: PushRequest) -> None:
        nonlocal delivered
        for _ in queue:
            if isinstance(await provider.send(request, time.time()), Delivered):
                delivered += 1

    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(r) for r in requests))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    await provider.close()
    return {
        "pushes": pushes,
        "delivered": delivered,
        "pushes_per_s": pushes / wall,
        "client_cpu_us_per_push": cpu / pushes * 1e6,
        "pushes_per_client_cpu_s": pushes / cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pushes", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        certs = make_test_certs(Path(tmp))
        key = ec.generate_private_key(ec.SECP256R1())
        p8 = Path(tmp) / "AuthKey.p8"
        p8.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        port = free_port()
        cmd = [sys.executable, "-c", EMULATOR, "--port", str(port)]
        cmd += ["--cert", str(certs.cert_file), "--key", str(certs.key_file)]
        cmd += ["--signing-key", f"BENCHKEY01:BENCHTEAM1:{p8}"]
        emulator = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        try:
            assert emulator.stdout is not None
            emulator.stdout.readline()  # "APNs emulator on ...": it is listening
            coro = run(args.pushes, args.concurrency, port, certs.ca_file, p8)
            if args.uvloop:
                import uvloop

                result = uvloop.run(coro)
            else:
                result = asyncio.run(coro)
        finally:
            emulator.terminate()
            emulator.wait(10)
    print(json.dumps({k: round(v, 1) for k, v in result.items()}))


if __name__ == "__main__":
    main()
