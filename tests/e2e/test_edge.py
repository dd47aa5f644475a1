"""Edge mode against a real legacy box: Kamailio with a plain registrar config (digest auth,
usrloc in memory, lookup("location"), no push logic; tests/e2e/kamailio/legacy.cfg) on
127.0.0.2, sipwake in front of it on 127.0.0.3, the simulated phone and SIPp on 127.0.0.1.

The caller always calls the phone's AoR *at Kamailio*; Kamailio routes to the Contact that
sipwake registered for the phone, sipwake holds the call, pushes (APNs emulator), the phone
wakes and registers again through sipwake (Kamailio challenges it) and takes the call."""

from __future__ import annotations

import json
import re
import socket
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from sipwake.policy.edge import binding_id
from tests.e2e.harness import (
    ApnsEmulator,
    Child,
    RunningServer,
    apns_emulator,
    free_port,
    keys,
    run_sipp,
    scenario,
    serve,
    start_phone,
    start_uas,
    wait_output,
)
from tests.e2e.legacy import DOMAIN, SIPWAKE_IP, USERS, Legacy, legacy_kamailio
from tests.e2e.test_cluster import REDIS, redis_up
from tests.e2e.test_push import Relay, events

pytestmark = [pytest.mark.e2e, pytest.mark.kamailio]

TOKEN = "c3" * 32
SECRET = "edge-test-secret"  # [auth] secret: the key of our binding ids (policy/edge.py)
REMOTE = "e5" * 32  # the non-VoIP token refresh pushes go to


def edge_config(
    legacy: Legacy,
    emu: ApnsEmulator,
    upstream: str,
    edge: dict[str, object],
    push: str,
    *,
    storage: str = "memory://",
) -> str:
    settings = "\n".join(f"{k} = {json.dumps(v)}" for k, v in edge.items())
    return f"""
[server]
domains = ["{DOMAIN}"]
log_level = "debug"
[[listen]]
transport = "udp"
host = "{SIPWAKE_IP}"
port = 0
[[listen]]
transport = "tcp"
host = "{SIPWAKE_IP}"
port = 0
[api]
port = 0
[storage]
url = "{storage}"
[auth]
secret = "{SECRET}"
[edge]
upstream = "{legacy.uri(upstream)}"
{settings}
[push]
{push}
{emu.config()}
"""


@dataclass
class EdgeRig:
    legacy: Legacy
    server: RunningServer
    emu: ApnsEmulator
    relay: Relay
    tmp: Path
    transport: str
    children: list[Child] = field(default_factory=list)

    def phone(self, *args: str, remote: str = "", ready: str = "slept") -> Child:
        """The phone registers TOKEN for VoIP pushes and, with ``remote``, a second token
        for background pushes (binding refresh: APNs refreshes never use the VoIP one)."""
        port = free_port(socket.SOCK_STREAM)
        self.relay.routes[TOKEN] = port
        prid = TOKEN
        if remote:
            self.relay.routes[remote] = port
            prid = f"{TOKEN}:voip&{remote}:remote"
        child = start_phone(
            self.server.addr(self.transport),
            port,
            "--token", prid, "--user", "bob", "--domain", DOMAIN, "--password", USERS["bob"],
            *args,
            transport=self.transport,
            ready=ready,
        )  # fmt: skip
        self.children.append(child)
        return child

    def call(self, scen: str | Path = "uac_call.xml", delay_ms: int = 100, **kw: object):  # type: ignore[no-untyped-def]
        """A caller at the legacy box (not at sipwake) calls bob@voip.test."""
        return run_sipp(
            scen,
            self.legacy.address,
            extra=["-s", "bob", "-d", str(delay_ms), *keys(domain=DOMAIN)],
            **kw,
        )

    def registers_seen_upstream(self) -> int:
        return len(re.findall(r"legacy: REGISTER for bob from", self.legacy.text()))

    def pushes(self) -> list[dict[str, object]]:
        return self.emu.pushes()


@contextmanager
def edge_rig(
    tmp: Path,
    upstream: str = "udp",
    *emu_args: str,
    edge: dict[str, object] | None = None,
    push: str = "",
    storage: str = "memory://",
) -> Iterator[EdgeRig]:
    relay = Relay()
    try:
        with (
            legacy_kamailio(free_port()) as legacy,
            apns_emulator("--forward-url", f"http://127.0.0.1:{relay.port}/", *emu_args) as emu,
            serve(
                edge_config(legacy, emu, upstream, edge or {}, push, storage=storage), tmp
            ) as server,
        ):
            rig = EdgeRig(legacy, server, emu, relay, tmp, upstream)
            try:
                yield rig
                assert server.alive()
            finally:
                for child in rig.children:
                    child.stop()
    finally:
        relay.close()


def test_without_sipwake_a_sleeping_phone_cannot_be_called(tmp_path: Path) -> None:
    """The problem edge mode exists for: the phone registers at the legacy box itself,
    its app sleeps (connection closed), and the box has nothing to do but fail the call."""
    relay = Relay()
    try:
        with legacy_kamailio(free_port()) as legacy:
            # Nobody registered: 404 at once.
            res = run_sipp(
                scenario("uac_reject.xml", tmp_path, expect="404"),
                legacy.address,
                extra=["-s", "bob", *keys(domain=DOMAIN)],
            )
            assert res.returncode == 0, res.output
            port = free_port(socket.SOCK_STREAM)
            relay.routes[TOKEN] = port
            phone = start_phone(
                legacy.address, port,
                "--token", TOKEN, "--user", "bob", "--domain", DOMAIN, "--password", "bobpass",
                transport="tcp",
            )  # fmt: skip
            try:
                res = run_sipp(
                    scenario("uac_reject.xml", tmp_path, expect="480"),
                    legacy.address,
                    extra=["-s", "bob", *keys(domain=DOMAIN)],
                )
                log = events(phone)
                assert res.returncode == 0, res.output + legacy.text()[-2000:]
                assert "registered" in log and "INVITE received" not in log
            finally:
                phone.stop()
    finally:
        relay.close()


@pytest.mark.parametrize(("upstream", "use_path"), [("udp", False), ("tcp", False), ("udp", True)])
def test_sleeping_phone_is_woken_through_the_legacy_box(
    tmp_path: Path, upstream: str, use_path: bool
) -> None:
    """use_path: the phone's own Contact is registered at Kamailio with a Path naming us
    (RFC 3327); Kamailio sends the INVITE to that Contact with a Route through us."""
    with edge_rig(tmp_path, upstream, edge={"use_path": use_path}) as r:
        phone = r.phone()
        assert r.registers_seen_upstream() == 2  # challenged, then with credentials
        res = r.call(scenario("uac_call.xml", tmp_path))
        log = events(phone)
        assert res.returncode == 0 and res.successful == 1, res.output + log
        order = ["registered", "slept", "push received", "woke", "auth challenge 401",
                 "registered (wake)", "200 sent", "ACK received", "BYE received"]  # fmt: skip
        positions = [log.find(e, log.find("slept") if i > 1 else 0) for i, e in enumerate(order)]
        assert all(p >= 0 for p in positions) and positions == sorted(positions), log
        # The wake REGISTER came on a new socket: the legacy box authenticated it again.
        assert r.registers_seen_upstream() == 4
        [push] = r.pushes()
        payload = push["payload"]
        assert isinstance(payload, dict) and payload["type"] == "call"
        assert payload["callee"] == f"sip:bob@{DOMAIN}"


@pytest.fixture
def redis_storage() -> Iterator[str]:
    """A Redis storage URL with a key prefix of its own, its keys deleted afterwards."""
    if not redis_up():
        pytest.fail("Redis is not running on 127.0.0.1:6379 (scripts/system-deps starts it)")
    prefix = f"edge{uuid.uuid4().hex[:10]}:"
    yield f"{REDIS}?prefix={prefix}"
    client = redis.Redis.from_url(REDIS)
    for key in client.scan_iter(match=prefix + "*"):
        client.delete(key)


def test_woken_through_the_legacy_box_with_bindings_in_redis(
    tmp_path: Path, redis_storage: str
) -> None:
    with edge_rig(tmp_path, "tcp", storage=redis_storage) as r:
        phone = r.phone()
        res = r.call(scenario("uac_call.xml", tmp_path))
        log = events(phone)
        assert res.returncode == 0 and res.successful == 1, res.output + log
        assert log.find("registered (wake)") < log.find("200 sent"), log


def test_callee_hangs_up_and_the_bye_crosses_sipwake_and_the_legacy_box(tmp_path: Path) -> None:
    with edge_rig(tmp_path, "tcp") as r:
        phone = r.phone("--hangup-after", "0.2")
        res = r.call(scenario("edge_uac_callee_bye.xml", tmp_path))
        log = events(phone)
        assert res.returncode == 0 and res.successful == 1, res.output + log
        assert "BYE sent" in log and "BYE answered 200" in log, log


def test_caller_cancel_while_held(tmp_path: Path) -> None:
    with edge_rig(tmp_path, "udp", push="send_180 = true") as r:
        phone = r.phone("--wake-delay", "0.8")
        res = r.call("uac_cancel.xml", delay_ms=200)
        assert res.returncode == 0, res.output
        # The phone woke for a call that had ended: INVITE then CANCEL (the iOS rule).
        assert wait_output(phone, "CANCEL received", 10), phone.text()
        log = events(phone)
        assert log.find("INVITE received") < log.find("CANCEL received")


def test_decline_link_ends_the_call_at_the_caller(tmp_path: Path) -> None:
    with edge_rig(tmp_path, "udp") as r:
        phone = r.phone("--action", "decline-url", "--decline-reason", "decline")
        res = r.call(scenario("uac_reject.xml", tmp_path, expect="603"))
        assert wait_output(phone, "decline posted")
        log = events(phone)
        assert res.returncode == 0, res.output + log
        assert "decline posted 200" in log and "registered (wake)" not in log


def test_nobody_wakes_gives_480_after_the_hold_window(tmp_path: Path) -> None:
    with edge_rig(tmp_path, "udp", push="hold_window = 1.0") as r:
        phone = r.phone("--action", "ignore")
        res = r.call(scenario("uac_reject.xml", tmp_path, expect="480"))
        log = events(phone)
        assert res.returncode == 0, res.output + log
        assert "push received" in log and "INVITE received" not in log


@pytest.mark.parametrize("upstream", ["udp", "tcp"])
def test_dead_token_deregisters_upstream(tmp_path: Path, upstream: str) -> None:
    """APNs says the token is dead: the binding goes here and, by our de-REGISTER, at the
    legacy box, which then answers the next call itself (404) instead of routing to us."""
    with edge_rig(
        tmp_path, upstream, "--token-error", f"{TOKEN}=410:Unregistered", push="hold_window = 20.0"
    ) as r:
        r.phone()
        res = r.call(scenario("uac_reject.xml", tmp_path, expect="480"))
        assert res.returncode == 0, res.output
        # The de-REGISTER goes out after the push result: wait for it to reach Kamailio.
        deadline = time.monotonic() + 5
        while r.registers_seen_upstream() < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert r.registers_seen_upstream() == 3, r.legacy.text()[-3000:]  # + our de-REGISTER
        assert f"legacy: REGISTER for bob from {SIPWAKE_IP}" in r.legacy.text()
        res = r.call(scenario("uac_reject.xml", tmp_path, expect="404"))
        assert res.returncode == 0, res.output + r.legacy.text()[-2000:]
        # Kamailio's own 404 (no binding left), not sipwake's for an unknown binding id.
        assert f"no binding for sip:bob@{DOMAIN}: 404" in r.legacy.text()


def test_refresh_push_keeps_the_upstream_registration_alive(tmp_path: Path) -> None:
    """Upstream lifetime 4 s, refresh 2 s before: the sleeping app gets a refresh push,
    registers again through us (the legacy box authenticates it) and is still callable
    at the legacy box well after the first upstream registration would have ended."""
    with edge_rig(tmp_path, "udp", edge={"upstream_expires": 4, "refresh_before": 2}) as r:
        phone = r.phone(remote=REMOTE)
        assert wait_output(phone, "registered (wake)", 6), phone.text()
        time.sleep(4.5 - 2)  # past the first upstream expiry
        res = r.call(scenario("uac_call.xml", tmp_path))
        log = events(phone)
        assert res.returncode == 0 and res.successful == 1, res.output + log
        pushes = r.pushes()
        kinds = [p["payload"]["type"] for p in pushes]  # type: ignore[index]
        assert kinds[0] == "refresh" and "call" in kinds, kinds
        # The refresh never rings: a background push to the non-VoIP token (app/refresh.py).
        headers = {k.lower(): v for k, v in dict(pushes[0]["headers"]).items()}  # type: ignore[call-overload]
        assert headers["apns-push-type"] == "background", headers


def test_app_that_ignores_refresh_pushes_lapses_upstream(tmp_path: Path) -> None:
    with edge_rig(
        tmp_path,
        "udp",
        edge={"upstream_expires": 3, "refresh_before": 2},
        push="refresh_backoff = 0.5",
    ) as r:
        phone = r.phone("--action", "ignore", remote=REMOTE)
        time.sleep(3.5)
        res = r.call(scenario("uac_reject.xml", tmp_path, expect="404"))
        events(phone)
        assert res.returncode == 0, res.output
        assert f"no binding for sip:bob@{DOMAIN}: 404" in r.legacy.text()  # lapsed there
        kinds = [p["payload"]["type"] for p in r.pushes()]  # type: ignore[index]
        assert len(kinds) >= 2 and set(kinds) == {"refresh"}, kinds  # retried


def test_refreshes_on_the_same_socket_are_answered_locally(tmp_path: Path) -> None:
    with edge_rig(tmp_path, "udp") as r:
        res = run_sipp(
            "edge_register_refresh.xml",
            r.server.addr("udp"),
            extra=["-auth_uri", DOMAIN, "-au", "bob", "-ap", USERS["bob"],
                   *keys(user="bob", domain=DOMAIN)],
        )  # fmt: skip
        assert res.returncode == 0 and res.successful == 1, res.output
        # Four REGISTERs received; the challenged one and the authenticated one went up.
        assert r.registers_seen_upstream() == 2
        host, port = r.server.addr("api")
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        assert 'sipwake_edge_registers_total{result="forwarded"} 2.0' in text, text
        assert 'sipwake_edge_registers_total{result="throttled"} 2.0' in text, text


def test_device_calls_out_through_the_legacy_box(tmp_path: Path) -> None:
    with edge_rig(tmp_path, "udp") as r:
        uas = start_uas("uas_answer.xml", extra=["-d", "50", *keys(user="carol")])
        reg = run_sipp(
            "register_auth.xml",
            r.legacy.address,
            extra=["-auth_uri", DOMAIN, "-au", "carol", "-ap", USERS["carol"],
                   *keys(user="carol", domain=DOMAIN, contact_port=uas.port, ctransport="udp")],
        )  # fmt: skip
        assert reg.returncode == 0, reg.output
        res = run_sipp(
            "edge_device_call.xml",
            r.server.addr("udp"),
            extra=["-s", "carol", "-auth_uri", DOMAIN, "-au", "bob", "-ap", USERS["bob"],
                   *keys(user="bob", domain=DOMAIN)],
        )  # fmt: skip
        code, out = uas.wait()
        assert res.returncode == 0 and res.successful == 1, res.output + out
        assert code == 0, out


def test_not_an_open_relay(tmp_path: Path) -> None:
    with edge_rig(tmp_path, "udp") as r:
        # Neither the upstream nor a device with a binding here: refused.
        res = run_sipp(
            scenario("uac_reject.xml", tmp_path, expect="403"),
            r.server.addr("udp"),
            extra=["-s", "bob", *keys(domain=DOMAIN)],
        )
        assert res.returncode == 0, res.output


def test_a_binding_id_is_only_taken_from_the_upstream(tmp_path: Path) -> None:
    """An INVITE naming the phone's binding id (our Contact at Kamailio) straight to
    sipwake from anywhere but the upstream's address is refused: knowing the Contact
    does not make us an open door to the phone."""
    with edge_rig(tmp_path, "udp") as r:
        phone = r.phone()
        instance = re.search(r"\+sip\.instance=(\S+)", phone.text())
        assert instance, phone.text()
        user = binding_id(SECRET.encode(), f"sip:bob@{DOMAIN}", "instance:" + instance[1])
        host, port = r.server.addr("udp")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            s.settimeout(5)
            me = s.getsockname()[1]
            s.sendto(
                (
                    f"INVITE sip:{user}@{host}:{port} SIP/2.0\r\n"
                    f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK-{uuid.uuid4().hex};rport\r\n"
                    "Max-Forwards: 70\r\nFrom: <sip:mallory@evil.test>;tag=1\r\n"
                    f"To: <sip:{user}@{host}>\r\nCall-ID: {uuid.uuid4().hex}\r\n"
                    f"CSeq: 1 INVITE\r\nContact: <sip:mallory@127.0.0.1:{me}>\r\n"
                    "Content-Length: 0\r\n\r\n"
                ).encode(),
                (host, port),
            )
            answer = s.recv(65535).decode()
            while answer.startswith("SIP/2.0 100"):
                answer = s.recv(65535).decode()
        log = events(phone)
        assert answer.startswith("SIP/2.0 403"), answer
        assert "push received" not in log and r.pushes() == []


def test_upstream_that_never_answers_gives_408_and_stores_nothing(tmp_path: Path) -> None:
    """The device sees the upstream's silence as 408 (Timer F, 64*T1: T1 = 50 ms here)
    and nothing is stored: a call for it still finds no binding here."""
    silent = free_port()  # nothing listens there
    config = f"""
[server]
domains = ["{DOMAIN}"]
[[listen]]
transport = "udp"
host = "{SIPWAKE_IP}"
port = 0
[api]
port = 0
admin_token = "t0ken"
[storage]
url = "memory://"
[sip]
t1 = 0.05
t2 = 0.4
[edge]
upstream = "sip:127.0.0.2:{silent}"
[[push.webhook]]
provider = "acme"
url = "http://127.0.0.1:9/"
secret = "s"
"""
    with serve(config, tmp_path) as server:
        port = free_port(socket.SOCK_STREAM)
        phone = start_phone(
            server.addr("udp"), port,
            "--token", TOKEN, "--user", "bob", "--domain", DOMAIN, "--password", "bobpass",
            "--provider", "acme",
            ready="REGISTER failed",
        )  # fmt: skip
        try:
            assert "REGISTER failed: 408" in phone.text(), phone.text()
        finally:
            phone.stop()
        host, api = server.addr("api")
        with urllib.request.urlopen(f"http://{host}:{api}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        assert 'sipwake_edge_registers_total{result="forwarded"} 1.0' in text
        req = urllib.request.Request(
            f"http://{host}:{api}/admin/bindings?aor=sip%3Abob%40{DOMAIN}",
            headers={"authorization": "Bearer t0ken"},
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert json.loads(resp.read())["bindings"] == []


def test_device_de_register_goes_upstream(tmp_path: Path) -> None:
    """Expires: 0 from the device is relayed (the legacy box challenges it, the device
    answers) and on the 2xx the binding is gone here and there: Kamailio itself answers
    the next call 404."""
    with edge_rig(tmp_path, "udp") as r:
        res = run_sipp(
            "edge_register_unregister.xml",
            r.server.addr("udp"),
            extra=["-auth_uri", DOMAIN, "-au", "bob", "-ap", USERS["bob"],
                   *keys(user="bob", domain=DOMAIN)],
        )  # fmt: skip
        assert res.returncode == 0 and res.successful == 1, res.output
        assert r.registers_seen_upstream() == 4
        res = r.call(scenario("uac_reject.xml", tmp_path, expect="404"))
        assert res.returncode == 0, res.output
        assert f"no binding for sip:bob@{DOMAIN}: 404" in r.legacy.text()
