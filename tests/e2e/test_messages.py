"""End to end, SIP MESSAGE to sleeping apps (issue 13), over real sockets: the server,
the APNs emulator (TLS, HTTP/2, JWT checked) and simulated phones in this process."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sipwake.app import messages as messages_module
from sipwake.config import FcmConfig
from sipwake.emulate.fcm import FcmEmulatorConfig, serve_fcm, write_service_account
from sipwake.emulate.phone import Phone, PhoneConfig
from sipwake.emulate.tlsutil import CertFiles
from sipwake.push.http1 import http1_request
from sipwake.push.oauth import load_service_account
from sipwake.server import Server
from tests.e2e.harness import keys, run_sipp, scenario
from tests.e2e.messaging import (
    ADMIN_TOKEN,
    BUNDLE,
    DeviceApns,
    Sender,
    bodies,
    make_certs,
    new_phone,
    server_config,
    start_apns,
)

pytestmark = pytest.mark.e2e


@dataclass
class Rig:
    work: Path
    certs: CertFiles
    apns: DeviceApns
    key_file: str
    server: Server | None = None

    async def start(self, **message: Any) -> Server:
        self.server = Server(
            server_config(self.work, self.certs, self.apns, self.key_file, **message)
        )
        await self.server.start()
        return self.server

    async def phone(self, transport: str = "tcp", **kw: Any) -> Phone:
        assert self.server is not None
        return await new_phone(
            self.apns, self.server.address(transport), transport, str(self.certs.ca_file), **kw
        )

    async def sender(self) -> Sender:
        assert self.server is not None
        return await Sender(self.server.address("udp")).open()

    def metric(self, result: str) -> float:
        assert self.server is not None
        value = self.server.metrics.registry.get_sample_value(
            "sipwake_instant_messages_total", {"result": result}
        )
        return value or 0.0


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    certs = make_certs(tmp_path)
    apns, key_file = await start_apns(tmp_path, certs)
    r = Rig(tmp_path, certs, apns, key_file)
    try:
        yield r
    finally:
        if r.server is not None:
            await r.server.stop()
        await apns.close()


async def asleep(rig: Rig, transport: str = "tcp", **kw: Any) -> Phone:
    phone = await rig.phone(transport, **kw)
    assert await phone.register() == 200
    await phone.sleep()
    return phone


async def test_live_device_gets_it_at_once_with_200(rig: Rig) -> None:
    await rig.start()
    phone = await rig.phone("tcp")
    assert await phone.register() == 200  # and stays awake: a live TCP connection
    alice = await rig.sender()
    try:
        reply = await alice.send("hello")
        assert reply.status == 200
        assert bodies(phone) == [b"hello"]
        assert not rig.apns.pushes  # nobody was pushed
        assert rig.metric("stored") == 0
    finally:
        alice.close()
        await phone.close()


@pytest.mark.parametrize("transport", ["tcp", "tls"])
async def test_sleeping_device_202_one_alert_push_each_then_delivered_in_order_once(
    rig: Rig, transport: str
) -> None:
    await rig.start()
    phone = await asleep(rig, transport)
    alice = await rig.sender()
    try:
        for text in ("one", "two", "three"):
            reply = await alice.send(text, content_type="text/plain;charset=utf-8")
            assert reply.status == 202  # RFC 3428 §7: stored, delivery not known yet
        pushes = await rig.apns.wait_pushes(3)
        assert phone.messages == []
        # Pushes go out concurrently: any order at APNs, one per message.
        assert sorted(p["payload"]["sip_call_id"] for p in pushes) == sorted(alice.call_ids)
        for push in pushes:
            headers = push["headers"]
            assert headers["apns-push-type"] == "alert"  # never voip for a message
            assert headers["apns-topic"] == BUNDLE
            assert headers["apns-priority"] == "10"
            assert push["token"] == phone.remote_token  # type: ignore[attr-defined]
            payload = push["payload"]
            assert payload["type"] == "message" and payload["recipient"] == "sip:bob@127.0.0.1"
            assert payload["sender"] == {"display": "Alice", "uri": "sip:alice@127.0.0.1"}
            assert payload["preview"] == ""  # message.preview is off by default
            assert payload["aps"]["alert"] == "New message from Alice"
            assert headers["apns-collapse-id"] == payload["message_id"]
        assert len({p["payload"]["message_id"] for p in pushes}) == 3
        since = asyncio.get_running_loop().time()
        rig.apns.release()  # the device wakes and registers again
        await phone.wait_for("registered (wake)", 10, since=since)
        while len(phone.messages) < 3:
            await phone.wait_for("MESSAGE received", 10, since=since)
            since = phone.events[-1][0] + 1e-9
        await asyncio.sleep(0.2)  # the later pushes re-register: nothing comes twice
        assert bodies(phone) == [b"one", b"two", b"three"]
        assert [m.call_id for m in phone.messages] == alice.call_ids
        got = phone.messages[0]
        assert got.headers.get("content-type") == "text/plain;charset=utf-8"
        assert "Alice" in (got.headers.get("from") or "")
        assert rig.metric("stored") == 3 and rig.metric("delivered") == 3
        assert rig.server is not None
        assert await rig.server.stores.messages.users(0) == {}  # type: ignore[union-attr]
    finally:
        alice.close()
        await phone.close()


async def test_one_awake_one_woken_later_both_get_it_once(rig: Rig) -> None:
    await rig.start()
    awake = await rig.phone("tcp")
    assert await awake.register() == 200
    later = await asleep(rig, "tcp")
    alice = await rig.sender()
    try:
        assert (await alice.send("hi both")).status == 200  # the awake one accepted it
        assert bodies(awake) == [b"hi both"]
        [push] = await rig.apns.wait_pushes(1)
        assert push["token"] == later.remote_token  # type: ignore[attr-defined]
        rig.apns.release()
        await later.wait_for("MESSAGE received", 10)
        await awake.register()  # a refresh of the awake one must not bring it again
        await asyncio.sleep(0.2)
        assert bodies(later) == [b"hi both"] and bodies(awake) == [b"hi both"]
    finally:
        alice.close()
        await awake.close()
        await later.close()


async def test_duplicate_call_id_cseq_stored_once(rig: Rig) -> None:
    await rig.start()
    phone = await asleep(rig, "tcp")
    alice = await rig.sender()
    try:
        assert (await alice.send("once", call_id="dup@alice", cseq=7)).status == 202
        assert (await alice.send("once", call_id="dup@alice", cseq=7)).status == 202
        assert len(await rig.apns.wait_pushes(1)) == 1
        rig.apns.release()
        await phone.wait_for("MESSAGE received", 10)
        await asyncio.sleep(0.2)
        assert bodies(phone) == [b"once"] and len(rig.apns.pushes) == 1
    finally:
        alice.close()
        await phone.close()


async def test_expired_message_is_not_delivered(rig: Rig) -> None:
    await rig.start(store_for=0.3)
    phone = await asleep(rig, "tcp")
    alice = await rig.sender()
    try:
        assert (await alice.send("too old")).status == 202
        await asyncio.sleep(0.4)
        assert (await alice.send("fresh")).status == 202
        rig.apns.release()
        await phone.wait_for("MESSAGE received", 10)
        await asyncio.sleep(0.2)
        assert bodies(phone) == [b"fresh"]
        assert rig.metric("expired") == 1  # removed when "fresh" was stored
    finally:
        alice.close()
        await phone.close()


async def test_over_quota_drops_the_oldest(rig: Rig) -> None:
    await rig.start(max_per_user=2)
    phone = await asleep(rig, "tcp")
    alice = await rig.sender()
    try:
        for text in ("a", "b", "c"):
            assert (await alice.send(text)).status == 202
        rig.apns.release()
        await phone.wait_for("MESSAGE received", 10)
        while len(phone.messages) < 2:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        assert bodies(phone) == [b"b", b"c"]
        assert rig.metric("dropped") == 1
    finally:
        alice.close()
        await phone.close()


async def test_refused_dropped_for_that_device_transient_kept(rig: Rig) -> None:
    """A device answering 4xx gives the message up; 5xx keeps it for the next REGISTER."""
    await rig.start()
    refuser = await asleep(rig, "tcp", user="carol", message_status=415)
    busy = await asleep(rig, "tcp", message_status=503)
    alice = await rig.sender()
    try:
        assert (await alice.send("for carol", to="carol")).status == 202
        assert (await alice.send("for bob")).status == 202
        rig.apns.release()
        await refuser.wait_for("MESSAGE received", 10)
        await busy.wait_for("MESSAGE received", 10)
        assert rig.server is not None
        store = rig.server.stores.messages  # type: ignore[union-attr]
        for _ in range(100):
            if rig.metric("refused") == 1:
                break
            await asyncio.sleep(0.02)
        assert rig.metric("refused") == 1
        assert await store.users(0) == {"sip:bob@127.0.0.1": 1}  # kept for bob's phone
        busy.config.message_status = 200
        since = asyncio.get_running_loop().time()
        assert await busy.register() == 200
        await busy.wait_for("MESSAGE received", 10, since=since)
        for _ in range(100):
            if not await store.users(0):
                break
            await asyncio.sleep(0.02)
        assert await store.users(0) == {}
        assert bodies(busy) == [b"for bob", b"for bob"]  # 503 once, then accepted
    finally:
        alice.close()
        await refuser.close()
        await busy.close()


async def test_too_large_is_413(rig: Rig) -> None:
    await rig.start(max_message_size=2000)
    phone = await asleep(rig, "tcp")
    alice = await rig.sender()
    try:
        assert (await alice.send("x" * 1600)).status == 413  # fits, but not with our Via
        assert (await alice.send("x" * 1000)).status == 202
    finally:
        alice.close()
        await phone.close()


async def test_other_content_types_pass_through_and_preview(rig: Rig) -> None:
    await rig.start(preview=True)
    phone = await asleep(rig, "tcp")
    alice = await rig.sender()
    cpim = (
        b"From: <sip:alice@127.0.0.1>\r\nTo: <sip:bob@127.0.0.1>\r\n\r\n"
        b"Content-Type: text/plain\r\n\r\nsee you at 8"
    )
    png = bytes(range(256))
    try:
        assert (await alice.send(cpim, content_type="message/cpim")).status == 202
        assert (await alice.send(png, content_type="image/png")).status == 202
        pushes = await rig.apns.wait_pushes(2)
        assert pushes[0]["payload"]["preview"] == "see you at 8"
        assert pushes[0]["payload"]["aps"]["alert"] == "Alice: see you at 8"
        assert pushes[1]["payload"]["preview"] == ""
        rig.apns.release()
        while len(phone.messages) < 2:
            await phone.wait_for("MESSAGE received", 10)
            await asyncio.sleep(0.02)
        assert bodies(phone) == [cpim, png]
        assert [m.headers.get("content-type") for m in phone.messages] == [
            "message/cpim",
            "image/png",
        ]
    finally:
        alice.close()
        await phone.close()


async def test_admin_lists_pending_messages(rig: Rig) -> None:
    server = await rig.start()
    phone = await asleep(rig, "tcp")
    alice = await rig.sender()
    try:
        assert (await alice.send("waiting")).status == 202
        assert server.api is not None
        auth = [("authorization", f"Bearer {ADMIN_TOKEN}")]
        reply = await http1_request("GET", server.api.url + "/admin/messages", auth, b"")
        assert json.loads(reply.body) == {"users": {"sip:bob@127.0.0.1": 1}}
        url = server.api.url + "/admin/messages?aor=sip%3Abob%40127.0.0.1"
        rows = json.loads((await http1_request("GET", url, auth, b"")).body)["messages"]
        assert [r["call_id"] for r in rows] == alice.call_ids
        assert rows[0]["sender"] == "sip:alice@127.0.0.1" and len(rows[0]["devices"]) == 1
        assert "waiting" not in json.dumps(rows)  # operators see who and when, not what
    finally:
        alice.close()
        await phone.close()


async def test_sipp_messages_to_a_sleeping_phone_202_then_delivered_in_order(
    rig: Rig, tmp_path: Path
) -> None:
    server = await rig.start()
    phone = await asleep(rig, "tcp")
    try:
        res = await asyncio.to_thread(
            run_sipp,
            scenario("uac_message.xml", tmp_path, expect="202"),
            server.address("udp"),
            calls=3,
            rate=1000,
            limit=1,  # one at a time: each is stored before the next is sent
            extra=["-s", "bob", *keys(domain="127.0.0.1")],
            workdir=tmp_path,
        )
        assert res.returncode == 0 and res.successful == 3, res.output
        rig.apns.release()
        while len(phone.messages) < 3:
            await phone.wait_for("MESSAGE received", 10)
            await asyncio.sleep(0.02)
        assert bodies(phone) == [b"SIPp message %d\r\n" % n for n in (1, 2, 3)]
    finally:
        await phone.close()


async def test_android_sleeping_gets_a_high_priority_fcm_data_message(
    rig: Rig, tmp_path: Path
) -> None:
    fcm = await serve_fcm(
        FcmEmulatorConfig(certfile=str(rig.certs.cert_file), keyfile=str(rig.certs.key_file))
    )
    account = write_service_account(
        tmp_path / "sa.json", token_uri=fcm.token_uri, project_id="sipwake-e2e"
    )
    fcm.add_account(load_service_account(account))
    phone: Phone | None = None
    alice: Sender | None = None
    try:
        entry = FcmConfig(
            service_account_file=str(account), base_url=fcm.base_url, ca_file=str(rig.certs.ca_file)
        )
        await rig.start(fcm=(entry,))
        assert rig.server is not None
        phone = Phone(
            PhoneConfig(
                server=rig.server.address("tcp"),
                transport="tcp",
                provider="fcm",
                token="dGVzdC10b2tlbg:APA91bF-example_token.1",
                param="sipwake-e2e",
                wake_delay=0.0,
            )
        )
        await phone.start()
        assert await phone.register() == 200
        await phone.sleep()
        fcm.config.forward_url = phone.push_url  # stands in for Google's delivery
        alice = await rig.sender()
        assert (await alice.send("hi android")).status == 202
        for _ in range(200):
            if fcm.pushes:
                break
            await asyncio.sleep(0.02)
        [push] = fcm.pushes
        message = push["message"]
        assert message["android"]["priority"] == "high"  # shown at once: a chat message
        assert message["data"]["type"] == "message" and "notification" not in message
        assert message["data"]["alert"] == "New message from Alice"
        assert not rig.apns.pushes  # nothing went to APNs
        await phone.wait_for("registered (wake)", 10)  # woken by the forwarded push
        await phone.wait_for("MESSAGE received", 10)
        assert bodies(phone) == [b"hi android"]
    finally:
        if alice is not None:
            alice.close()
        if phone is not None:
            await phone.close()
        await fcm.close()


async def test_silent_live_device_sender_still_answered_202_in_time(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A live device that never answers (frozen app, dead NAT binding) must not hold the
    sender until its own Timer F: the engine's timer answers 202 after ANSWER_WITHIN."""
    monkeypatch.setattr(messages_module, "ANSWER_WITHIN", 0.3)
    await rig.start()
    frozen = await rig.phone("tcp", frozen=True)
    assert await frozen.register() == 200
    later = await asleep(rig, "tcp")
    alice = await rig.sender()
    try:
        started = asyncio.get_running_loop().time()
        assert (await alice.send("anyone?")).status == 202
        assert asyncio.get_running_loop().time() - started < 5  # not Timer F's 32 s
        rig.apns.release()
        await later.wait_for("MESSAGE received", 10)
        assert bodies(later) == [b"anyone?"]
    finally:
        alice.close()
        await frozen.close()
        await later.close()
