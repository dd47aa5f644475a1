"""SIP MESSAGE to sleeping apps (issue 13): store throughput and the two latencies.

    python3 bench/bench_messages.py [-n 2000] [--rounds 30] [--quick]

(a) Stored messages/s on SQLite, through ``MessageStore.add`` (what the server awaits
    before it answers 202): one message each for ``-n`` distinct users, awaited one by
    one (each its own COMMIT) and 100 at a time (group commit shares a COMMIT per event
    loop turn, as under load); and ``-n`` messages into one user's inbox kept at 100
    (the quota: each add rewrites the user's whole inbox row).
(b) Over real sockets in one process: the ``Server``, the APNs emulator (TLS, HTTP/2,
    JWT checked) and a simulated phone asleep over TCP. Each round a UDP sender sends one
    MESSAGE: *MESSAGE -> push* is from handing the MESSAGE to the socket to the emulator
    accepting the alert push; then the phone sends its wake REGISTER: *wake REGISTER ->
    MESSAGE delivered* is from handing the REGISTER to its socket to the MESSAGE arriving
    at the phone (the 200 to the REGISTER comes first). Everything shares one event loop
    and the machine's cores: say so next to any figure.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.messaging import (
    DeviceApns,
    Sender,
    make_certs,
    new_phone,
    server_config,
    start_apns,
)

from bench.rig import write_result
from sipwake.policy.inbox import StoredMessage
from sipwake.server import Server
from sipwake.storage import open_stores

BODY = b"MESSAGE sip:bob@example.com SIP/2.0\r\n" + b"X: y\r\n" * 12 + b"\r\nSee you at 8?"


def message(i: int, now: float) -> StoredMessage:
    return StoredMessage(
        id=f"{i:032x}",
        call_id=f"{i:016x}@alice",
        cseq=1,
        sender="sip:alice@example.com",
        content_type="text/plain",
        stored_at=now,
        expires_at=now + 7 * 86400,
        devices=("instance:urn:uuid:00000000-0000-0000-0000-000000000001",),
        data=BODY,
    )


async def store_rates(work: Path, n: int) -> dict[str, float]:
    stores = await open_stores(f"sqlite://{work / 'bench.db'}", node_id="bench")
    m = stores.messages
    now = time.time()
    out: dict[str, float] = {}
    try:
        t = time.perf_counter()
        for i in range(n):
            await m.add(f"sip:user{i}@example.com", message(i, now), now, 100)
        out["sequential_per_s"] = n / (time.perf_counter() - t)
        t = time.perf_counter()
        for start in range(0, n, 100):
            await asyncio.gather(
                *(
                    m.add(f"sip:user{n + i}@example.com", message(n + i, now), now, 100)
                    for i in range(start, min(n, start + 100))
                )
            )
        out["batched_100_per_s"] = n / (time.perf_counter() - t)
        t = time.perf_counter()
        for i in range(n):
            await m.add("sip:busy@example.com", message(2 * n + i, now), now, 100)
        out["one_inbox_at_quota_per_s"] = n / (time.perf_counter() - t)
    finally:
        await stores.close()
    return out


class TimedApns(DeviceApns):
    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.accepted_at: list[float] = []

    def forward(self, record: dict[str, Any]) -> None:
        self.accepted_at.append(time.perf_counter())
        super().forward(record)


async def latencies(work: Path, rounds: int) -> dict[str, dict[str, float]]:
    certs = make_certs(work)
    emulator, key_file = await start_apns(work, certs, TimedApns)
    assert isinstance(emulator, TimedApns)
    apns = emulator
    cfg = server_config(work, certs, apns, key_file)
    # One device gets a message every round: lift the push budget, or only the first
    # burst rounds would push (the budgets are not what is measured here).
    push = msgspec.structs.replace(cfg.push, max_per_device=0.0, max_per_source=0.0)
    cfg = msgspec.structs.replace(cfg, push=push)
    server = Server(cfg)
    await server.start()
    phone = await new_phone(apns, server.address("tcp"), "tcp", str(certs.ca_file))
    sender = await Sender(server.address("udp")).open()
    to_push: list[float] = []
    to_delivered: list[float] = []
    try:
        assert await phone.register() == 200
        for i in range(rounds):
            await phone.sleep()
            before = len(apns.accepted_at)
            t0 = time.perf_counter()
            reply = await sender.send(f"message {i}")
            assert reply.status == 202, reply.status
            async with asyncio.timeout(10):
                while len(apns.accepted_at) == before:
                    await asyncio.sleep(0.001)
            to_push.append(apns.accepted_at[-1] - t0)
            got = len(phone.messages)
            t1 = time.perf_counter()
            assert await phone.register() == 200
            async with asyncio.timeout(10):
                while len(phone.messages) == got:
                    await asyncio.sleep(0.0005)
            to_delivered.append(time.perf_counter() - t1)
            await asyncio.sleep(0.01)
    finally:
        sender.close()
        await phone.close()
        await server.stop()
        await apns.close()
    return {
        "message_to_push_ms": summary(to_push),
        "wake_register_to_message_ms": summary(to_delivered),
    }


def summary(values: list[float]) -> dict[str, float]:
    ms = sorted(v * 1000 for v in values)
    return {
        "n": len(ms),
        "p50": round(statistics.median(ms), 2),
        "p90": round(ms[int(0.9 * (len(ms) - 1))], 2),
        "max": round(ms[-1], 2),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n, rounds = (300, 10) if args.quick else (args.n, args.rounds)
    with tempfile.TemporaryDirectory(prefix="sipwake-bench-msg-") as tmp:
        rates = await store_rates(Path(tmp), n)
        lat = await latencies(Path(tmp), rounds)
    record = {"n": n, "sqlite_store": {k: round(v) for k, v in rates.items()}, **lat}
    for key, value in record.items():
        print(f"{key}: {value}")
    if not args.quick:
        print("written to", write_result("messages", record))


if __name__ == "__main__":
    asyncio.run(main())
