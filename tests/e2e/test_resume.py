"""Held calls that outlive their node (issue 11 step 3), end to end with real processes.

* SQLite: ``kill -9`` of the node holding a call for a sleeping phone; the node restarts
  on the same file and ports and takes the call back at once (the SIPp caller got 110 and
  does not retransmit); the phone, woken by the one push, registers and takes the call.
* Redis, three nodes: the node holding the call dies; the caller's retransmitted INVITE
  (or its CANCEL) reaches node 2, which takes the call over with the same UUID and no
  second push; the phone wakes on node 3 and the call is answered (or gets INVITE +
  CANCEL). A CANCEL that reaches node 3 after node 2 took the call over is passed on
  to node 2.
"""

from __future__ import annotations

import re
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
import redis

from tests.e2e.harness import (
    ApnsEmulator,
    Child,
    RunningServer,
    apns_emulator,
    free_port,
    loopback_config,
    serve,
    start_phone,
    wait_output,
)
from tests.e2e.test_cluster import REDIS, call, node_config, prefix, redis_up  # noqa: F401
from tests.e2e.test_push import NO_AUTH, TOKEN_A, Relay

pytestmark = pytest.mark.e2e

AOR_URI = "sip:bob@127.0.0.1"


def fixed_ports_config(storage: str, emu: ApnsEmulator, push: str = "") -> str:
    """One node on UDP and TCP ports that a restart binds again."""
    text = loopback_config(
        storage=storage, log_level="debug", extra=f"{NO_AUTH}\n[push]\n{push}\n{emu.config()}"
    )
    for port in (free_port(), free_port(socket.SOCK_STREAM)):
        text = text.replace("port = 0", f"port = {port}", 1)
    return text


def kill_9(server: RunningServer) -> None:
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(10)


@contextmanager
def relayed_apns() -> Iterator[tuple[ApnsEmulator, Relay]]:
    relay = Relay()
    try:
        with apns_emulator("--forward-url", f"http://127.0.0.1:{relay.port}/") as emu:
            yield emu, relay
    finally:
        relay.close()


def test_kill_9_of_the_node_holding_a_call_sqlite_restart_delivers_it(tmp_path: Path) -> None:
    db = tmp_path / "held.db"
    with relayed_apns() as (emu, relay):
        cfg = fixed_ports_config(f"sqlite:{db}", emu)
        push_port = free_port(socket.SOCK_STREAM)
        relay.routes[TOKEN_A] = push_port
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        result: list[object] = []
        with ExitStack() as stack:
            first = stack.enter_context(serve(cfg, tmp_path / "a"))
            phone = start_phone(
                first.addr("tcp"), push_port, "--token", TOKEN_A, "--wake-delay", "5",
                transport="tcp",
            )  # fmt: skip
            stack.callback(phone.stop)
            caller = threading.Thread(
                target=lambda: result.append(call(first, tmp_path, timeout=60))
            )
            caller.start()
            assert wait_output(phone, "push received", 15), phone.text()
            held = sqlite3.connect(db).execute("SELECT call_id FROM held_calls").fetchall()
            kill_9(first)
            second = stack.enter_context(serve(cfg, tmp_path / "b"))
            caller.join(60)
            res = result[0]
            log = phone.text()
            out = "".join(second.output)
            assert res.returncode == 0 and res.successful == 1, res.output + log + out  # type: ignore[attr-defined]
            # Taken back at start-up, delivered to the woken phone, answered; one push.
            assert held and f"call {held[0][0]} resumed" in out, out
            assert len(emu.pushes()) == 1
            assert log.count("INVITE received") == 1, log
            for event in ("registered (wake)", "ACK received", "BYE received"):
                assert event in log, log
            assert "Traceback" not in out
            # Answered: nothing left to resume.
            assert sqlite3.connect(db).execute("SELECT * FROM held_calls").fetchall() == []


class RawCaller:
    """A caller on one UDP socket that can send the same INVITE to another node (as a
    UA does when it retransmits to the next address of the service)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.call_id = f"resume-{time.monotonic_ns()}"
        self.got: list[str] = []

    def invite(self) -> bytes:
        return self._request("INVITE", 1, "Content-Type: application/sdp\r\n", SDP)

    def cancel(self) -> bytes:
        return self._request("CANCEL", 1, "", b"")

    def _request(self, method: str, cseq: int, extra: str, body: bytes) -> bytes:
        head = (
            f"{method} {AOR_URI} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{self.call_id};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:caller@127.0.0.1>;tag=raw{self.port}\r\n"
            f"To: <{AOR_URI}>\r\n"
            f"Call-ID: {self.call_id}\r\n"
            f"CSeq: {cseq} {method}\r\n"
            f"Contact: <sip:caller@127.0.0.1:{self.port}>\r\n"
            f"{extra}Content-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body

    def send(self, data: bytes, to: tuple[str, int]) -> None:
        self.sock.sendto(data, to)

    def wait_for(self, pattern: str, timeout: float) -> str:
        """The first message received (since the start) matching ``pattern``."""
        deadline = time.monotonic() + timeout
        while True:
            for text in self.got:
                if re.search(pattern, text):
                    return text
            if time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} in {[t[:40] for t in self.got]}")
            try:
                data, _ = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            self.got.append(data.decode(errors="replace"))

    def ack(self, ok: str, cancel_ack: bool = False) -> None:
        """ACK a 2xx end to end over its route set (RFC 3261 §13.2.2.4)."""
        to = re.search(r"^To: (.*)$", ok, re.M | re.I)
        contact = re.search(r"^(?:Contact|m): *<([^>]+)>", ok, re.M | re.I)
        rr = re.findall(r"^Record-Route: *(.*)$", ok, re.M | re.I)
        assert to and contact, ok
        # §12.1.2: the UAC's route set is the Record-Route list in reverse order.
        routes = [r.strip() for line in rr for r in line.split(",")][::-1]
        hop = re.search(r"[:@]([\d.]+):(\d+)", routes[0] if routes else contact.group(1))
        assert hop and "transport=tcp" not in (routes[0] if routes else ""), ok
        ack = (
            f"ACK {contact.group(1)} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bKack{self.call_id};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:caller@127.0.0.1>;tag=raw{self.port}\r\n"
            f"To: {to.group(1).strip()}\r\n"
            f"Call-ID: {self.call_id}\r\n"
            "CSeq: 1 ACK\r\n"
            + "".join(f"Route: {r}\r\n" for r in routes)
            + "Content-Length: 0\r\n\r\n"
        )
        self.send(ack.encode(), (hop.group(1), int(hop.group(2))))

    def close(self) -> None:
        self.sock.close()


SDP = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 0\r\n"
)


@contextmanager
def held_on_node1_then_killed(
    tmp: Path,
    prefix: str,  # noqa: F811
    *phone_args: str,
) -> Iterator[tuple[list[RunningServer], Child, RawCaller, ApnsEmulator]]:
    """Three nodes on one Redis; a phone registered on node 2 and asleep (it wakes on
    node 3); a call for it held by node 1, pushed; then node 1 is killed (-9)."""
    if not redis_up():
        pytest.fail("Redis is not running on 127.0.0.1:6379 (scripts/system-deps starts it)")
    storage = f"{REDIS}?prefix={prefix}"
    with relayed_apns() as (emu, relay), ExitStack() as stack:
        nodes = []
        for i in (1, 2, 3):
            (tmp / f"node{i}").mkdir()
            cfg = node_config(f"node{i}", storage, emu.config())
            nodes.append(stack.enter_context(serve(cfg, tmp / f"node{i}")))
        n1, n2, n3 = nodes
        push_port = free_port(socket.SOCK_STREAM)
        relay.routes[TOKEN_A] = push_port
        wake = n3.addr("tcp")
        phone = start_phone(
            n2.addr("tcp"), push_port, "--token", TOKEN_A, *phone_args,
            "--wake-server", f"{wake[0]}:{wake[1]}", transport="tcp",
        )  # fmt: skip
        # Asleep: its connection closed, node 2 clears the flow from the binding.
        client = redis.Redis.from_url(REDIS)
        key = f"{prefix}aor:{AOR_URI}"
        deadline = time.monotonic() + 10
        while b"node2" in (client.get(key) or b"node2") and time.monotonic() < deadline:
            time.sleep(0.05)
        # Said, not assumed: a binding still naming node 2's dead flow sends the resumed
        # call's INVITE to node 2, whose 430 (RFC 5626 §11.5) ends the call at once.
        assert b"node2" not in (client.get(key) or b"node2"), "node 2 kept the phone's flow"
        caller = RawCaller()
        try:
            caller.send(caller.invite(), n1.addr("udp"))
            caller.wait_for(r"^SIP/2.0 110 ", 10)
            assert wait_output(phone, "push received", 15), phone.text() + "".join(n1.output)
            kill_9(n1)
            yield nodes, phone, caller, emu
        finally:
            caller.close()
            phone.stop()


def test_redis_node_dies_retransmitted_invite_on_another_node_is_answered(
    tmp_path: Path,
    prefix: str,  # noqa: F811
) -> None:
    with held_on_node1_then_killed(tmp_path, prefix, "--wake-delay", "3") as (
        nodes,
        phone,
        caller,
        emu,
    ):
        _, n2, n3 = nodes
        caller.got.clear()
        caller.send(caller.invite(), n2.addr("udp"))  # the caller's retransmission
        ok = caller.wait_for(r"^SIP/2.0 200 ", 20)
        caller.ack(ok)
        assert wait_output(phone, "ACK received", 10), phone.text()
        out2 = "".join(n2.output)
        assert re.search(r"call (\S+) taken over from node1", out2), out2 + "".join(n3.output)
        assert len(emu.pushes()) == 1  # the same call UUID: no second push
        assert phone.text().count("INVITE received") == 1, phone.text()
        assert "Traceback" not in out2 + "".join(n3.output)


def test_redis_node_dies_cancel_on_another_node_gets_487_and_woken_phone_its_cancel(
    tmp_path: Path,
    prefix: str,  # noqa: F811
) -> None:
    with held_on_node1_then_killed(
        tmp_path, prefix, "--wake-delay", "2", "--answer-after", "3"
    ) as (nodes, phone, caller, emu):
        _, n2, _ = nodes
        caller.got.clear()
        caller.send(caller.cancel(), n2.addr("udp"))
        caller.wait_for(r"^SIP/2.0 200 [^\r]*\r\n(?:.*\r\n)*CSeq: 1 CANCEL", 10)
        caller.wait_for(r"^SIP/2.0 487 ", 10)
        # The phone, woken by the push, still gets the call it reports to CallKit, and
        # at once its CANCEL (the PushKit rule, docs/app-developers.md).
        assert wait_output(phone, "CANCEL received", 15), phone.text()
        assert len(emu.pushes()) == 1


def test_redis_cancel_on_a_third_node_reaches_the_survivor_that_took_the_call_over(
    tmp_path: Path,
    prefix: str,  # noqa: F811
) -> None:
    """Node 1 dies; the caller's retransmitted INVITE makes node 2 take the call over;
    the caller's CANCEL then reaches node 3, which does not hold the call: it answers
    200 and passes the cancel on over the bus to node 2, which answers the INVITE 487.
    The phone, woken by the one push, gets the call and at once its CANCEL. (Node 3
    answered 481 before, and the phone rang for a caller who had hung up.)"""
    with held_on_node1_then_killed(
        tmp_path, prefix, "--wake-delay", "3", "--answer-after", "3"
    ) as (nodes, phone, caller, emu):
        _, n2, n3 = nodes
        caller.send(caller.invite(), n2.addr("udp"))  # the caller's retransmission
        deadline = time.monotonic() + 10
        while not any("taken over from node1" in line for line in n2.output):
            assert time.monotonic() < deadline, "".join(n2.output)
            time.sleep(0.05)
        caller.got.clear()
        caller.send(caller.cancel(), n3.addr("udp"))
        caller.wait_for(r"^SIP/2.0 200 [^\r]*\r\n(?:.*\r\n)*CSeq: 1 CANCEL", 10)
        caller.wait_for(r"^SIP/2.0 487 ", 10)
        assert wait_output(phone, "CANCEL received", 15), phone.text()
        assert phone.text().count("INVITE received") == 1, phone.text()
        assert len(emu.pushes()) == 1
        out3 = "".join(n3.output)
        assert "taken over" not in out3 and "Traceback" not in out3 + "".join(n2.output)


def test_redis_node_dies_silent_caller_a_survivor_adopts_the_call_when_it_sees_the_death(
    tmp_path: Path,
    prefix: str,  # noqa: F811
) -> None:
    """No retransmission (the caller got 110): the surviving nodes notice node 1 gone from
    the registry (NODE_TTL + a heartbeat), one claims the call; the phone, which woke and
    registered on node 3 meanwhile, gets the INVITE at once."""
    with held_on_node1_then_killed(tmp_path, prefix, "--wake-delay", "1") as (
        nodes,
        phone,
        caller,
        emu,
    ):
        _, n2, n3 = nodes
        assert wait_output(phone, "registered (wake)", 10), phone.text()
        ok = caller.wait_for(r"^SIP/2.0 200 ", 30)
        caller.ack(ok)
        assert wait_output(phone, "ACK received", 10), phone.text()
        out = "".join(n2.output) + "".join(n3.output)
        assert len(re.findall(r"call \S+ taken over from node1", out)) == 1, out
        assert len(emu.pushes()) == 1
        assert phone.text().count("INVITE received") == 1, phone.text()
