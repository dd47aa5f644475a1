"""End to end, scale-out on Redis (issue 5): three sipwake nodes on 127.0.0.1 sharing one
Redis; two workers of one node; a Redis outage in the middle of traffic.

The phone registers on node 2 and goes to sleep (its connection closes), the caller calls
through node 1, which holds the call and pushes; the phone wakes and registers on node 3;
node 1 hears of it on the cluster bus and sends the INVITE through node 3, which owns the
phone's new connection. The call connects and BYE crosses the same nodes."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
import redis

from tests.e2e.harness import (
    RunningServer,
    apns_emulator,
    free_port,
    keys,
    loopback_config,
    run_sipp,
    scenario,
    serve,
    start_phone,
    wait_output,
    wait_output_server,
)
from tests.e2e.test_push import DOMAIN, NO_AUTH, TOKEN_A, Relay

pytestmark = pytest.mark.e2e

REDIS = "redis://127.0.0.1:6379/0"


def redis_up(url: str = REDIS) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.fixture
def prefix() -> Iterator[str]:
    """A key prefix of its own per test, deleted afterwards."""
    if not redis_up():
        pytest.fail("Redis is not running on 127.0.0.1:6379 (scripts/system-deps starts it)")
    p = f"t{uuid.uuid4().hex[:10]}:"
    yield p
    client = redis.Redis.from_url(REDIS)
    for key in client.scan_iter(match=p + "*"):
        client.delete(key)


def node_config(name: str, storage: str, emu_config: str, *, push: str = "") -> str:
    return loopback_config(
        storage=storage,
        log_level="debug",
        extra=f"{NO_AUTH}\n[push]\n{push}\n{emu_config}",
    ).replace("[server]\n", f'[server]\nnode_id = "{name}"\n', 1)


@contextmanager
def cluster(
    tmp: Path, storage: str, count: int = 3, push: str = "", admin_token: str = ""
) -> Iterator[tuple[list[RunningServer], Relay]]:
    relay = Relay()
    try:
        with ExitStack() as stack:
            emu = stack.enter_context(
                apns_emulator("--forward-url", f"http://127.0.0.1:{relay.port}/")
            )
            nodes = []
            for i in range(1, count + 1):
                d = tmp / f"node{i}"
                d.mkdir()
                nodes.append(
                    stack.enter_context(
                        serve(
                            node_config(f"node{i}", storage, emu.config(), push=push).replace(
                                "[api]\n", f'[api]\nadmin_token = "{admin_token}"\n', 1
                            ),
                            d,
                        )
                    )
                )
            yield nodes, relay
            for n in nodes:
                assert n.alive(), "".join(n.output)
    finally:
        relay.close()


def call(  # type: ignore[no-untyped-def]
    server: RunningServer,
    tmp: Path,
    transport: str = "udp",
    scen: Path | None = None,
    target: tuple[str, int] | None = None,
    **kw: object,
):
    return run_sipp(
        scen or scenario("uac_call.xml", tmp),
        target or server.addr(transport),
        transport=transport,
        extra=["-s", "bob", "-d", "100", *keys(domain=DOMAIN)],
        **kw,
    )


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_register_on_2_call_via_1_wake_on_3(tmp_path: Path, prefix: str, transport: str) -> None:
    storage = f"{REDIS}?prefix={prefix}"
    with cluster(tmp_path, storage) as (nodes, relay):
        n1, n2, n3 = nodes
        push_port = free_port(socket.SOCK_STREAM)
        relay.routes[TOKEN_A] = push_port
        wake_at = n3.addr(transport)
        phone = start_phone(
            n2.addr(transport),
            push_port,
            "--token",
            TOKEN_A,
            "--wake-server",
            f"{wake_at[0]}:{wake_at[1]}",
            transport=transport,
        )
        try:
            res = call(n1, tmp_path)
        finally:
            phone.stop()
        log = phone.text()
        logs = "".join(n1.output) + "".join(n3.output)
        assert res.returncode == 0 and res.successful == 1, res.output + log + logs
        for event in ("push received", "woke", "registered (wake)", "INVITE received",
                      "ACK received", "BYE received"):  # fmt: skip
            assert event in log, log
        # Exactly one branch reached the phone, and it came through node 3 (two proxies'
        # Vias: node 1 and node 3, the owner of the phone's new connection).
        assert log.count("INVITE received") == 1, log
        client = redis.Redis.from_url(REDIS)
        key = f"{prefix}aor:sip:bob@127.0.0.1"
        binding = client.get(key)
        assert binding is not None
        if transport == "udp":
            # The wake binding names node 3 as the owner of its flow.
            assert b"node3" in binding
        else:
            # The phone stopped, closing its connection: node 3, the owner, clears the
            # flow so other nodes push instead of routing to a dead connection.
            deadline = time.monotonic() + 3
            while b"node3" in (client.get(key) or b"") and time.monotonic() < deadline:
                time.sleep(0.05)
            assert b"node3" not in (client.get(key) or b""), client.get(key)
        n1_out, n3_out = "".join(n1.output), "".join(n3.output)
        # Node 3 relayed the INVITE (debug logs one line per transaction); node 2, where
        # the phone first registered, saw no call at all.
        assert re.search(r"INVITE sip:bob@127\.0\.0\.1:\d+\S* from TCP", n3_out), n3_out
        assert "INVITE" not in "".join(n2.output)
        assert "Traceback" not in n1_out + n3_out


def test_held_call_is_registered_cluster_wide(tmp_path: Path, prefix: str) -> None:
    """While a call is held its entry (UUID, AoR, holding node, devices) is in Redis, and
    another node's admin API lists it; the phone never wakes, the caller gets 480 when the
    hold window ends, and the entry goes with that answer (nothing left to resume)."""
    storage = f"{REDIS}?prefix={prefix}"
    push = "hold_window = 2\ncancel_grace = 1"
    with cluster(tmp_path, storage, count=2, push=push, admin_token="tok") as (nodes, relay):
        n1, n2 = nodes
        push_port = free_port(socket.SOCK_STREAM)
        relay.routes[TOKEN_A] = push_port
        phone = start_phone(n1.addr("udp"), push_port, "--token", TOKEN_A, "--action", "ignore")
        client = redis.Redis.from_url(REDIS)
        result: list[object] = []
        caller = threading.Thread(
            target=lambda: result.append(
                call(n1, tmp_path, scen=scenario("uac_reject.xml", tmp_path, expect="480"))
            )
        )
        caller.start()
        listed: list[dict[str, object]] = []
        try:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not listed:
                listed = admin_calls(n2)
                time.sleep(0.05)
            entries = [client.hget(k, "node") or b"" for k in client.scan_iter(f"{prefix}held:*")]
            caller.join(40)
        finally:
            phone.stop()  # never left behind, whatever failed above
        assert listed and listed[0]["node"] == "node1", listed
        assert listed[0]["aor"] == "sip:bob@127.0.0.1" and len(listed[0]["devices"]) == 1  # type: ignore[arg-type]
        assert entries and b"node1" in entries[0]
        res = result[0]
        assert res.returncode == 0, res.output  # type: ignore[attr-defined]
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and list(client.scan_iter(f"{prefix}held:*")):
            time.sleep(0.1)
        assert not list(client.scan_iter(f"{prefix}held:*"))


def admin_calls(node: RunningServer) -> list[dict[str, object]]:
    host, port = node.addr("api")
    req = urllib.request.Request(
        f"http://{host}:{port}/admin/calls", headers={"authorization": "Bearer tok"}
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        calls: list[dict[str, object]] = json.loads(resp.read())["calls"]
        return calls


def worker_pid(server: RunningServer, index: int) -> int:
    """The pid of worker ``index`` among the supervisor's children."""
    sup = server.proc.pid
    for child in Path(f"/proc/{sup}/task/{sup}/children").read_text().split():
        cmdline = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        if f"{index}/".encode() in cmdline[-2] or cmdline[-3:-1] == [
            b"--worker",
            f"{index}/2".encode(),
        ]:
            return int(child)
    raise AssertionError(f"no worker {index} under {sup}")


def fixed_config(name: str, storage: str, emu_config: str, push: str = "") -> str:
    """Fixed ports: workers share them (SO_REUSEPORT only joins a port that is named)."""
    udp, tcp, api = free_port(), free_port(socket.SOCK_STREAM), free_port(socket.SOCK_STREAM)
    return (
        node_config(name, storage, emu_config, push=push)
        .replace(
            'transport = "udp"\nhost = "127.0.0.1"\nport = 0',
            f'transport = "udp"\nhost = "127.0.0.1"\nport = {udp}',
        )
        .replace(
            'transport = "tcp"\nhost = "127.0.0.1"\nport = 0',
            f'transport = "tcp"\nhost = "127.0.0.1"\nport = {tcp}',
        )
        .replace("[api]\nport = 0", f"[api]\nport = {api}")
    )


def worker_routes(prefix: str) -> dict[str, tuple[str, int]]:
    """Each worker's private TCP address, from the cluster registry in Redis."""
    client = redis.Redis.from_url(REDIS)
    routes: dict[str, tuple[str, int]] = {}
    for node, value in client.hgetall(f"{prefix}nodes").items():
        m = re.search(rb"(\d+\.\d+\.\d+\.\d+):(\d+);transport=tcp", value)
        assert m is not None, value
        routes[node.decode()] = (m.group(1).decode(), int(m.group(2)))
    return routes


def test_two_workers_of_one_node(tmp_path: Path, prefix: str) -> None:
    """`serve --workers 2`: a call taken by worker 0 for a phone that wakes on worker 1
    is delivered through worker 1 (each worker owns its connections); then calls through
    the shared ports, which the kernel spreads over both workers."""
    storage = f"{REDIS}?prefix={prefix}"
    relay = Relay()
    try:
        with apns_emulator("--forward-url", f"http://127.0.0.1:{relay.port}/") as emu:
            cfg = fixed_config("box", storage, emu.config())
            with serve(cfg, tmp_path, extra_args=["--workers", "2"]) as server:
                assert "workers:2" in "".join(server.output)
                routes = worker_routes(prefix)
                assert set(routes) == {"box.w0", "box.w1"}, routes
                push_port = free_port(socket.SOCK_STREAM)
                relay.routes[TOKEN_A] = push_port
                w1 = routes["box.w1"]
                phone = start_phone(
                    server.addr("tcp"),
                    push_port,
                    "--token",
                    TOKEN_A,
                    "--wake-server",
                    f"{w1[0]}:{w1[1]}",
                    transport="tcp",
                )
                try:
                    res = call(server, tmp_path, "tcp", target=routes["box.w0"])
                    log = phone.text()
                    assert res.returncode == 0 and res.successful == 1, res.output + log
                    assert log.count("INVITE received") == 1, log
                finally:
                    phone.stop()
                # Through the shared UDP port: new source ports each time, so the
                # kernel's hash sends them to either worker.
                port2 = free_port(socket.SOCK_STREAM)
                relay.routes[TOKEN_A] = port2
                phone = start_phone(server.addr("udp"), port2, "--token", TOKEN_A)
                try:
                    for _ in range(3):
                        res = call(server, tmp_path)
                        assert res.returncode == 0 and res.successful == 1, res.output
                finally:
                    phone.stop()
                # The decline link goes to worker 0's API; the call is held by worker 1,
                # which gets it over the cluster bus and answers the caller 486.
                port3 = free_port(socket.SOCK_STREAM)
                relay.routes[TOKEN_A] = port3
                phone = start_phone(
                    server.addr("udp"), port3, "--token", TOKEN_A, "--action", "decline-url"
                )
                try:
                    res = call(
                        server,
                        tmp_path,
                        "tcp",
                        scen=scenario("uac_reject.xml", tmp_path, expect="486"),
                        target=routes["box.w1"],
                    )
                    assert wait_output(phone, "decline posted", 5), phone.text()
                    assert res.returncode == 0, res.output + phone.text()
                    assert "decline posted 202" in phone.text(), phone.text()
                finally:
                    phone.stop()
                out = "".join(server.output)
                assert "Traceback" not in out and "restarting" not in out, out
                # A worker that dies is restarted and takes its place in the cluster.
                pid = worker_pid(server, 1)
                os.kill(pid, signal.SIGKILL)
                assert wait_output_server(server, "worker 1 exited with -9; restarting")
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline and worker_routes(prefix).get("box.w1") == w1:
                    time.sleep(0.1)
                assert worker_routes(prefix).get("box.w1") not in (None, w1)
                relay.routes[TOKEN_A] = port2
                phone = start_phone(server.addr("udp"), port2, "--token", TOKEN_A)
                try:
                    for _ in range(2):
                        res = call(server, tmp_path)
                        assert res.returncode == 0 and res.successful == 1, (
                            res.output + phone.text() + "".join(server.output)
                        )
                finally:
                    phone.stop()
                assert server.alive()
    finally:
        relay.close()


@contextmanager
def own_redis(tmp: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """A Redis of our own, to stop and start without disturbing other tests."""
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp),
        ],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 5
    while not redis_up(url):
        assert time.monotonic() < deadline and proc.poll() is None, "redis-server did not start"
        time.sleep(0.05)
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(5)


def sip_status(addr: tuple[str, int], method: str, user: str = "carol") -> tuple[int, str]:
    """Send one REGISTER or INVITE over UDP and return the final status and the message."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    port = sock.getsockname()[1]
    ruri = "sip:127.0.0.1" if method == "REGISTER" else f"sip:{user}@127.0.0.1"
    msg = (
        f"{method} {ruri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{uuid.uuid4().hex};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:{user}@127.0.0.1>;tag=x{uuid.uuid4().hex[:8]}\r\n"
        f"To: <sip:{user}@127.0.0.1>\r\n"
        f"Call-ID: {uuid.uuid4().hex}\r\nCSeq: 1 {method}\r\n"
        f"Contact: <sip:{user}@127.0.0.1:{port}>\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    try:
        sock.sendto(msg.encode(), addr)
        while True:
            data = sock.recv(65535).decode()
            status = int(data.split(" ", 2)[1])
            if status >= 200:
                return status, data
    finally:
        sock.close()


def test_redis_outage_gives_503_then_recovers(tmp_path: Path) -> None:
    """Redis goes away mid-traffic: new REGISTERs and INVITEs get 503 with Retry-After, a
    call already held in memory still completes when its phone wakes, and everything
    works again, by itself, once Redis is back."""
    port = free_port(socket.SOCK_STREAM)
    storage = f"redis://127.0.0.1:{port}/0?timeout=0.5"
    relay = Relay()
    try:
        with (
            own_redis(tmp_path, port) as rds,
            apns_emulator("--forward-url", f"http://127.0.0.1:{relay.port}/") as emu,
            serve(node_config("solo", storage, emu.config()), tmp_path) as node,
        ):
            assert sip_status(node.addr("udp"), "REGISTER")[0] == 200
            push_port = free_port(socket.SOCK_STREAM)
            relay.routes[TOKEN_A] = push_port
            phone = start_phone(
                node.addr("udp"), push_port, "--token", TOKEN_A, "--wake-delay", "1.0"
            )
            result: list[object] = []
            caller = threading.Thread(target=lambda: result.append(call(node, tmp_path)))
            caller.start()
            try:
                # The call is held and the push is out; Redis dies before the phone wakes.
                assert wait_output(phone, "push received", 5), phone.text()
                rds.terminate()
                rds.wait(5)
                status, msg = sip_status(node.addr("udp"), "REGISTER")
                assert status == 503 and "Retry-After:" in msg, msg
                status, msg = sip_status(node.addr("udp"), "INVITE", user="bob")
                assert status == 503 and "Retry-After:" in msg, msg
                caller.join(30)
            finally:
                phone.stop()
            res = result[0]
            log = phone.text()
            # The woken phone's REGISTER got 503, yet the held call reached it.
            assert res.returncode == 0 and res.successful == 1, res.output + log  # type: ignore[attr-defined]
            assert "INVITE received" in log, log
            with own_redis(tmp_path, port):
                deadline = time.monotonic() + 10
                status = 0
                while status != 200 and time.monotonic() < deadline:
                    status = sip_status(node.addr("udp"), "REGISTER")[0]
                    time.sleep(0.2)
                assert status == 200
                assert node.alive()
    finally:
        relay.close()
