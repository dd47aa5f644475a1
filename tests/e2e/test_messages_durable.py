"""SIP MESSAGEs that outlive their node (issue 13): ``kill -9`` between store and wake on
SQLite, and three nodes on one Redis (stored via node 1, the device wakes on node 3)."""

from __future__ import annotations

import asyncio
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from sipwake.config import ServerConfig, StorageConfig
from sipwake.emulate.tlsutil import CertFiles
from sipwake.server import Server
from tests.e2e.harness import Child, spawn
from tests.e2e.messaging import (
    BUNDLE,
    KEY_ID,
    TEAM,
    DeviceApns,
    Sender,
    bodies,
    make_certs,
    new_phone,
    server_config,
    start_apns,
)
from tests.storage.conftest import REDIS_HOST, REDIS_PORT, delete_prefix, redis_reachable

pytestmark = pytest.mark.e2e


@pytest.fixture
def redis_prefix() -> str:
    if not redis_reachable():
        pytest.skip(f"no Redis server on {REDIS_HOST}:{REDIS_PORT}")
    return f"sipwake-test-{uuid.uuid4().hex}:"


@pytest.fixture
async def apns(tmp_path: Path) -> AsyncIterator[tuple[DeviceApns, str, CertFiles]]:
    certs = make_certs(tmp_path)
    emu, key_file = await start_apns(tmp_path, certs)
    try:
        yield emu, key_file, certs
    finally:
        await emu.close()


def _toml(work: Path, certs: CertFiles, emu: DeviceApns, key_file: str) -> Path:
    path = work / "sipwake.toml"
    path.write_text(f"""
[server]
domains = ["127.0.0.1"]
[[listen]]
transport = "udp"
host = "127.0.0.1"
port = 0
[[listen]]
transport = "tcp"
host = "127.0.0.1"
port = 0
[api]
enabled = false
[auth]
enabled = false
[storage]
url = "sqlite://{work / "kill9.db"}"
[[push.apns]]
bundle_id = "{BUNDLE}"
team_id = "{TEAM}"
key_id = "{KEY_ID}"
key_file = "{key_file}"
base_url = "https://127.0.0.1:{emu.port}"
ca_file = "{certs.ca_file}"
""")
    return path


async def _serve(cfg: Path) -> tuple[Child, dict[str, tuple[str, int]]]:
    child = await asyncio.to_thread(
        spawn,
        [sys.executable, "-m", "sipwake", "serve", "--config", str(cfg)],
        lambda line: line.startswith("sipwake ready:"),
    )
    addresses: dict[str, tuple[str, int]] = {}
    for line in child.output:
        if line.startswith("sipwake ready:"):
            for part in line.split()[2:]:
                kind, host, port = part.rsplit(":", 2)
                addresses[kind] = (host, int(port))
    return child, addresses


async def test_kill_9_between_store_and_wake_still_delivered(
    tmp_path: Path, apns: tuple[DeviceApns, str, CertFiles]
) -> None:
    emu, key_file, certs = apns
    cfg = _toml(tmp_path, certs, emu, key_file)
    first, addr = await _serve(cfg)
    phone = alice = None
    second: Child | None = None
    try:
        phone = await new_phone(emu, addr["tcp"], "tcp", str(certs.ca_file))
        assert await phone.register() == 200
        await phone.sleep()
        alice = await Sender(addr["udp"]).open()
        assert (await alice.send("survive")).status == 202  # committed before the 202
        await emu.wait_pushes(1)
        first.proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(first.proc.wait, 10)
        second, addr2 = await _serve(cfg)
        phone.config.wake_server = addr2["tcp"]  # the restarted node (new ports)
        emu.release()
        await phone.wait_for("MESSAGE received", 15)
        assert bodies(phone) == [b"survive"]
    finally:
        if alice is not None:
            alice.close()
        if phone is not None:
            await phone.close()
        await asyncio.to_thread(first.stop)
        if second is not None:
            await asyncio.to_thread(second.stop)


async def test_three_redis_nodes_stored_on_one_delivered_by_three(
    tmp_path: Path, apns: tuple[DeviceApns, str, CertFiles], redis_prefix: str
) -> None:
    emu, key_file, certs = apns
    url = f"redis://{REDIS_HOST}:{REDIS_PORT}/0?prefix={redis_prefix}"
    nodes: list[Server] = []
    phone = alice = None
    try:
        for n in (1, 2, 3):
            base = server_config(tmp_path, certs, emu, key_file)
            cfg = msgspec.structs.replace(
                base,
                server=ServerConfig(domains=("127.0.0.1",), node_id=f"node{n}"),
                storage=StorageConfig(url=url),
            )
            node = Server(cfg)
            await node.start()
            nodes.append(node)
        one, _, three = nodes
        phone = await new_phone(emu, one.address("tcp"), "tcp", str(certs.ca_file))
        assert await phone.register() == 200
        await phone.sleep()
        alice = await Sender(one.address("udp")).open()
        assert (await alice.send("first")).status == 202
        assert (await alice.send("second")).status == 202
        await emu.wait_pushes(2)
        assert await three.stores.messages.users(0) == {"sip:bob@127.0.0.1": 2}  # type: ignore[union-attr]
        phone.config.wake_server = three.address("tcp")
        emu.release()
        while len(phone.messages) < 2:
            await phone.wait_for("MESSAGE received", 10)
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        assert bodies(phone) == [b"first", b"second"]
        # Delivered by node 3, which owns the new connection.
        assert (
            three.metrics.registry.get_sample_value(
                "sipwake_instant_messages_total", {"result": "delivered"}
            )
            == 2
        )
        assert await one.stores.messages.users(0) == {}  # type: ignore[union-attr]
    finally:
        if alice is not None:
            alice.close()
        if phone is not None:
            await phone.close()
        for node in nodes:
            await node.stop()
        await delete_prefix(redis_prefix)


async def test_device_registering_on_another_node_while_stored_still_gets_it(
    tmp_path: Path, apns: tuple[DeviceApns, str, CertFiles], redis_prefix: str
) -> None:
    """The race: node 1 saw the device asleep, but it registered on node 2 before node 1's
    write landed, so node 2 found nothing to deliver. Node 1 looks again after storing and
    delivers through node 2, which owns the new connection."""
    emu, key_file, certs = apns
    url = f"redis://{REDIS_HOST}:{REDIS_PORT}/0?prefix={redis_prefix}"
    nodes: list[Server] = []
    phone = alice = None
    try:
        for n in (1, 2):
            base = server_config(tmp_path, certs, emu, key_file)
            cfg = msgspec.structs.replace(
                base,
                server=ServerConfig(domains=("127.0.0.1",), node_id=f"race{n}"),
                storage=StorageConfig(url=url),
            )
            node = Server(cfg)
            await node.start()
            nodes.append(node)
        one, two = nodes
        phone = await new_phone(emu, one.address("tcp"), "tcp", str(certs.ca_file))
        assert await phone.register() == 200
        await phone.sleep()
        assert one.messages is not None
        store = one.messages.store
        real_add = store.add

        async def add_after_the_device_woke(*args: object, **kw: object) -> object:
            phone.config.wake_server = two.address("tcp")
            assert await phone._register(wake=True) == 200  # on node 2, nothing waits yet
            return await real_add(*args, **kw)  # type: ignore[arg-type]

        store.add = add_after_the_device_woke  # type: ignore[method-assign]
        alice = await Sender(one.address("udp")).open()
        reply = await alice.send("just in time")
        assert reply.status in (200, 202)
        await phone.wait_for("MESSAGE received", 10)
        assert bodies(phone) == [b"just in time"]
    finally:
        if alice is not None:
            alice.close()
        if phone is not None:
            await phone.close()
        for node in nodes:
            await node.stop()
        await delete_prefix(redis_prefix)
