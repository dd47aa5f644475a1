"""``sipwake demo``: run the server on loopback with embedded defaults and show it working.

Foundation milestone: keep-alive OPTIONS over UDP and TCP, a garbage datagram that changes
nothing, a malformed request answered 400 naming the fault. Each step is printed with its
time since start, and the exit code says whether every step behaved."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from dataclasses import dataclass

from sipwake.config import ApiConfig, AuthConfig, Config, ListenConfig, StorageConfig
from sipwake.emulate.client import SipClient, build_request
from sipwake.server import Server


@dataclass(slots=True)
class Step:
    at_ms: float
    what: str
    result: str
    ok: bool


def demo_config() -> Config:
    return Config(
        listen=(
            ListenConfig(transport="udp", host="127.0.0.1", port=0),
            ListenConfig(transport="tcp", host="127.0.0.1", port=0),
        ),
        storage=StorageConfig(url="memory://"),
        auth=AuthConfig(enabled=False),
        api=ApiConfig(port=0),
    )


async def _demo() -> list[Step]:
    t0 = time.perf_counter()
    steps: list[Step] = []

    def step(what: str, result: str, ok: bool) -> None:
        steps.append(Step(round((time.perf_counter() - t0) * 1000, 2), what, result, ok))

    server = Server(demo_config())
    await server.start()
    step("server started", " ".join(str(b) for b in server.bound), True)
    try:
        for transport in ("UDP", "TCP"):
            host, port = server.address(transport)
            client = await SipClient(transport, (host, port)).open()
            try:
                resp = await client.exchange(_options(transport, client.local, host, port))
                step(
                    f"OPTIONS over {transport}", f"{resp.status} {resp.reason}", resp.status == 200
                )
            finally:
                await client.close()

        host, port = server.address("UDP")
        dropped_before = server.engine.stats.dropped
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
            raw.sendto(b"\x00\xffgarbage that is not SIP\r\n\r\n", (host, port))
        await asyncio.sleep(0.05)
        dropped = server.engine.stats.dropped - dropped_before
        step("garbage datagram", f"dropped and counted ({dropped})", dropped == 1)

        client = await SipClient("UDP", (host, port)).open()
        try:
            bad = _options("UDP", client.local, host, port).replace(
                b"CSeq: 1 OPTIONS", b"CSeq: one OPTIONS"
            )
            resp = await client.exchange(bad)
            step("malformed request (bad CSeq)", f"{resp.status} {resp.reason}", resp.status == 400)
            resp = await client.exchange(_options("UDP", client.local, host, port))
            step("OPTIONS after both", f"{resp.status} {resp.reason}", resp.status == 200)
        finally:
            await client.close()
    finally:
        await server.stop()
    step("server stopped", "", True)
    return steps


def _options(transport: str, local: tuple[str, int], host: str, port: int) -> bytes:
    return build_request(
        "OPTIONS",
        f"sip:{host}:{port}",
        transport=transport,
        local=local,
        from_uri=f"sip:demo@{local[0]}",
        to_uri=f"sip:{host}:{port}",
    )


def main(json_output: bool = False) -> int:
    steps = asyncio.run(_demo())
    if json_output:
        print(json.dumps([s.__dict__ for s in steps], indent=2))
    else:
        print("sipwake demo (foundation build: the push-woken call arrives with push support)")
        for s in steps:
            mark = "ok  " if s.ok else "FAIL"
            print(f"{s.at_ms:9.2f} ms  {mark}  {s.what:<30} {s.result}")
    return 0 if all(s.ok for s in steps) else 1
