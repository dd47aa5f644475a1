"""The simulated phone against small local fakes: a registrar/proxy stand-in on a real
UDP socket or TCP/TLS listener, and plain HTTP POSTs to the phone's push listener."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sipwake.emulate.apns import post_json
from sipwake.emulate.phone import Phone, PhoneConfig, push_payload
from sipwake.emulate.phone_cli import main
from sipwake.emulate.tlsutil import CertFiles, make_test_certs, server_context
from sipwake.emulate.ua import authorization, parse_challenges
from sipwake.policy import auth
from sipwake.policy.pushparams import parse_push_target
from sipwake.sip.codec import StreamFramer, parse_message
from sipwake.sip.message import Request, Response, make_response
from sipwake.sip.timers import TimerConfig
from sipwake.sip.transactions.client import build_ack, build_cancel

FAST = TimerConfig(t1=0.05, t2=0.2, t4=0.2)


# --- the fake server ----------------------------------------------------------------------


@dataclass
class Got:
    msg: Request | Response
    peer: Any  # UDP: (host, port); TCP/TLS: the StreamWriter of that connection
    server: FakeServer

    @property
    def request(self) -> Request:
        assert isinstance(self.msg, Request), self.msg
        return self.msg

    @property
    def response(self) -> Response:
        assert isinstance(self.msg, Response), self.msg
        return self.msg

    def reply(self, msg: Request | Response | bytes) -> None:
        self.server.send(msg, self.peer)


class FakeServer(asyncio.DatagramProtocol):
    """Plays registrar and proxy: every message received is queued with the flow it came
    on; replies and new requests go back over that flow (as the real server does with a
    registration's flow)."""

    def __init__(self, transport: str, certs: CertFiles | None = None) -> None:
        self.transport = transport
        self.certs = certs
        self.queue: asyncio.Queue[Got] = asyncio.Queue()
        self.addr: tuple[str, int] = ("127.0.0.1", 0)
        self.closed_conns: asyncio.Queue[Any] = asyncio.Queue()
        self._udp: asyncio.DatagramTransport | None = None
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.transport == "udp":
            self._udp, _ = await loop.create_datagram_endpoint(
                lambda: self, local_addr=("127.0.0.1", 0)
            )
            self.addr = self._udp.get_extra_info("sockname")[:2]
            return
        ctx = None
        if self.transport == "tls":
            assert self.certs is not None
            ctx = server_context(self.certs.cert_file, self.certs.key_file, alpn=())
        self._server = await asyncio.start_server(self._conn, "127.0.0.1", 0, ssl=ctx)
        self.addr = self._server.sockets[0].getsockname()[:2]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait(Got(parse_message(data), addr, self))

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        framer = StreamFramer()
        try:
            while data := await reader.read(65536):
                for item in framer.feed(data):
                    if isinstance(item, bytes):
                        self.queue.put_nowait(Got(parse_message(item, stream=True), writer, self))
        except OSError:
            pass
        self.closed_conns.put_nowait(writer)

    def send(self, msg: Request | Response | bytes, peer: Any) -> None:
        data = msg if isinstance(msg, bytes) else msg.serialise()
        if self._udp is not None:
            self._udp.sendto(data, peer)
        else:
            peer.write(data)

    async def recv(self, timeout: float = 3.0, *, skip_100: bool = True) -> Got:
        while True:
            got = await asyncio.wait_for(self.queue.get(), timeout)
            if skip_100 and isinstance(got.msg, Response) and got.msg.status == 100:
                continue
            return got

    async def expect_nothing(self, wait: float) -> None:
        with pytest.raises(TimeoutError):
            got = await self.recv(wait)
            pytest.fail(f"unexpected message {got.msg!r}")

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._server is not None:
            self._server.close()
            for w in self._writers:
                w.close()
            await self._server.wait_closed()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return make_test_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
async def fake(request: pytest.FixtureRequest, certs: CertFiles) -> AsyncIterator[FakeServer]:
    server = FakeServer(getattr(request, "param", "udp"), certs)
    await server.start()
    yield server
    await server.close()


def make_phone(fake: FakeServer, certs: CertFiles, **kw: Any) -> Phone:
    kw.setdefault("wake_delay", 0.01)
    kw.setdefault("timers", FAST)
    return Phone(
        PhoneConfig(server=fake.addr, transport=fake.transport, ca_file=str(certs.ca_file), **kw)
    )


@pytest.fixture
async def phone_factory(fake: FakeServer, certs: CertFiles) -> AsyncIterator[Any]:
    phones: list[Phone] = []

    async def factory(**kw: Any) -> Phone:
        phone = make_phone(fake, certs, **kw)
        phones.append(phone)
        await phone.start()
        return phone

    yield factory
    for phone in phones:
        await phone.close()


async def do_register(phone: Phone, fake: FakeServer) -> Got:
    """Run the phone's REGISTER against the fake, answering 200; the REGISTER received."""
    task = asyncio.create_task(phone.register())
    got = await fake.recv()
    assert got.request.method == "REGISTER"
    got.reply(make_response(got.request, 200, to_tag="reg"))
    assert await asyncio.wait_for(task, 3) == 200
    return got


def apns_record(
    call_id: str = "1b4e28ba-2fa1-41d2-883f-0016d3cca427", **extra: Any
) -> dict[str, Any]:
    """What the APNs emulator forwards: its delivery record with the payload inside."""
    payload = {
        "type": "call",
        "call_id": call_id,
        "sip_call_id": "a84b4c76e66710@pc33",
        "caller": {"display": "Alice", "uri": "sip:alice@example.com"},
        "callee": "sip:bob@127.0.0.1",
        "sent_at": time.time(),
        "expires_at": time.time() + 30,
        "decline_url": "",
        "sip": {"host": "127.0.0.1", "port": 5060, "transport": "udp"},
        **extra,
    }
    return {"token": "ab" * 32, "topic": "com.example.phone.voip", "payload": payload}


async def wake(phone: Phone, fake: FakeServer, record: dict[str, Any] | None = None) -> Got:
    """Register, sleep, push; answer the wake REGISTER with 200 and return it."""
    await do_register(phone, fake)
    await phone.sleep()
    assert await post_json(phone.push_url, record or apns_record()) == 200
    got = await fake.recv()
    assert got.request.method == "REGISTER"
    got.reply(make_response(got.request, 200, to_tag="reg"))
    await phone.wait_for("registered (wake)", 3)
    return got


def make_invite(fake: FakeServer, contact: str, *, branch: str = "inv1") -> Request:
    host, port = fake.addr
    t = fake.transport.upper()
    sdp = b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"
    text = (
        f"INVITE {contact} SIP/2.0\r\n"
        f"Via: SIP/2.0/{t} {host}:{port};branch=z9hG4bK{branch}\r\n"
        "Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKcaller\r\n"
        "Max-Forwards: 69\r\n"
        f"Record-Route: <sip:{host}:{port};transport={fake.transport};lr>\r\n"
        "Record-Route: <sip:edge.example.com;lr>\r\n"
        'From: "Alice" <sip:alice@example.com>;tag=alice1\r\n'
        "To: <sip:bob@127.0.0.1>\r\n"
        "Call-ID: call-1@example.com\r\n"
        "CSeq: 10 INVITE\r\n"
        "Contact: <sip:alice@10.0.0.1:5070>\r\n"
        "Content-Type: application/sdp\r\n"
        f"Content-Length: {len(sdp)}\r\n\r\n"
    )
    msg = parse_message(text.encode() + sdp)
    assert isinstance(msg, Request)
    return msg


def contact_of(register: Request) -> str:
    """The phone's contact URI (what the server would put in the INVITE's Request-URI)."""
    return str(register.contacts[0].uri)


def in_dialog(invite: Request, ok: Response, method: str, seq: int, branch: str) -> Request:
    """A request from the caller's side in the dialog the 2xx made: the ACK (§13.2.2.4, a
    new branch) or a BYE, to the phone's Contact (its remote target)."""
    h = invite.headers.copy()
    for name in ("content-type", "contact", "record-route"):
        h.remove(name)
    via = h.pop_first_value("via")
    assert via is not None
    h.prepend("Via", via.split(";branch=")[0] + f";branch=z9hG4bK{branch}")
    h.set("To", ok.headers.get("to") or "")
    h.set("CSeq", f"{seq} {method}")
    h.set("Content-Length", "0")
    return Request(method, str(ok.contacts[0].uri), h)


def events(phone: Phone) -> list[str]:
    return [e for _, e in phone.events]


# --- registration -------------------------------------------------------------------------


@pytest.mark.parametrize("fake", ["udp", "tcp", "tls"], indirect=True)
async def test_register_carries_rfc8599_contact(fake: FakeServer, phone_factory: Any) -> None:
    phone = await phone_factory(provider="apns", token="0a" * 32, expires=3600)
    got = await do_register(phone, fake)
    req = got.request
    assert req.ruri.host == "127.0.0.1" and req.expires == 3600
    (contact,) = req.contacts
    uri = contact.uri
    assert uri.params["pn-provider"] == "apns"
    assert uri.params["pn-prid"] == "0a" * 32
    assert uri.params["pn-param"] == "ABCDE12345.com.example.phone.voip"
    assert uri.params["transport"] == fake.transport
    assert contact.params["+sip.instance"] == f'"<{phone.config.instance}>"'
    # The Contact names the socket the REGISTER came from.
    assert (uri.host, uri.port) == phone.local
    if fake.transport == "udp":
        assert got.peer == phone.local
    # The server side's parser accepts it as a push binding.
    target = parse_push_target(uri, contact.params)
    assert target is not None and target.prid == "0a" * 32
    assert events(phone) == ["registered"]


@pytest.mark.parametrize("fake", ["udp", "tcp", "tls"], indirect=True)
async def test_push_wakes_phone_on_a_new_socket(fake: FakeServer, phone_factory: Any) -> None:
    phone = await phone_factory()
    first = await do_register(phone, fake)
    old = phone.local
    assert old is not None
    await phone.sleep()
    assert phone.local is None
    if fake.transport == "udp":
        # The socket is really closed: its port can be bound again.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(old)
    else:
        assert await asyncio.wait_for(fake.closed_conns.get(), 3) is first.peer
    assert await post_json(phone.push_url, apns_record("uuid-1")) == 200
    second = await fake.recv()
    second.reply(make_response(second.request, 200, to_tag="reg"))
    await phone.wait_for("registered (wake)", 3)
    assert phone.local is not None and phone.local != old
    c1, c2 = first.request.contacts[0], second.request.contacts[0]
    assert (c2.uri.host, c2.uri.port) == phone.local
    assert c2.params["+sip.instance"] == c1.params["+sip.instance"]
    assert c2.uri.params["pn-prid"] == c1.uri.params["pn-prid"]
    # One registration Call-ID, CSeq moving on (RFC 3261 §10.2).
    assert second.request.call_id == first.request.call_id
    assert second.request.cseq.seq > first.request.cseq.seq
    assert events(phone) == [
        "registered",
        "slept",
        "push received uuid-1",
        "woke",
        "registered (wake)",
    ]
    assert phone.pushes[0]["call_id"] == "uuid-1"


async def test_asleep_phone_ignores_sip(fake: FakeServer, phone_factory: Any) -> None:
    phone = await phone_factory()
    reg = await do_register(phone, fake)
    await phone.sleep()
    fake.send(make_invite(fake, contact_of(reg.request)), reg.peer)
    await fake.expect_nothing(0.2)
    assert "INVITE received" not in events(phone)


# --- calls --------------------------------------------------------------------------------


@pytest.mark.parametrize("fake", ["udp", "tcp"], indirect=True)
async def test_answers_call_and_takes_bye(fake: FakeServer, phone_factory: Any) -> None:
    phone = await phone_factory(action="answer", answer_after=0.05)
    reg = await wake(phone, fake)
    invite = make_invite(fake, contact_of(reg.request))
    fake.send(invite, reg.peer)
    ringing = await fake.recv()
    assert ringing.response.status == 180
    tag = ringing.response.to.tag
    ok = (await fake.recv()).response
    assert ok.status == 200 and ok.to.tag == tag
    assert ok.headers.get("content-type") == "application/sdp" and ok.body.startswith(b"v=0")
    assert ok.contacts[0].uri.port == phone.local[1]
    fake.send(in_dialog(invite, ok, "ACK", 10, "ack1"), reg.peer)
    await phone.wait_for("ACK received", 3)
    fake.send(in_dialog(invite, ok, "BYE", 11, "bye1"), reg.peer)
    bye_ok = (await fake.recv()).response
    assert bye_ok.status == 200 and bye_ok.cseq.method == "BYE"
    await phone.wait_for("call ended", 3)
    call = events(phone)[events(phone).index("INVITE received") :]
    assert call == [
        "INVITE received",
        "180 sent",
        "200 sent",
        "ACK received",
        "BYE received",
        "call ended",
    ]
    t_180 = await phone.wait_for("180 sent", 0)
    t_200 = await phone.wait_for("200 sent", 0)
    assert t_200 - t_180 >= 0.04  # answer_after


@pytest.mark.parametrize("fake", ["udp", "tcp"], indirect=True)
async def test_hangs_up_with_route_set_from_record_route(
    fake: FakeServer, phone_factory: Any
) -> None:
    phone = await phone_factory(action="answer", hangup_after=0.05)
    reg = await wake(phone, fake)
    invite = make_invite(fake, contact_of(reg.request))
    fake.send(invite, reg.peer)
    assert (await fake.recv()).response.status == 180
    ok = (await fake.recv()).response
    fake.send(in_dialog(invite, ok, "ACK", 10, "ack1"), reg.peer)
    got = await fake.recv()
    bye = got.request
    # RFC 3261 §12.1.1: the callee's route set is the Record-Route list in order, and the
    # Request-URI the caller's Contact.
    assert bye.method == "BYE" and bye.uri == "sip:alice@10.0.0.1:5070"
    assert bye.headers.get_all("route") == invite.headers.get_all("record-route")
    assert bye.call_id == invite.call_id
    assert bye.from_.tag == ok.to.tag and bye.to.tag == "alice1"
    assert bye.from_.uri.user == "bob" and bye.to.uri.user == "alice"
    got.reply(make_response(bye, 200))
    await phone.wait_for("BYE answered 200", 3)
    await phone.wait_for("call ended", 3)
    assert "BYE sent" in events(phone)


async def test_retransmits_200_until_ack_on_udp(fake: FakeServer, phone_factory: Any) -> None:
    phone = await phone_factory(action="answer")
    reg = await wake(phone, fake)
    invite = make_invite(fake, contact_of(reg.request))
    fake.send(invite, reg.peer)
    fake.send(invite, reg.peer)  # a retransmission: absorbed, still one call
    responses: list[Response] = []
    while [r.status for r in responses].count(200) < 2:  # the 2xx again (T1 = 50 ms here)
        responses.append((await fake.recv()).response)
    ok = responses[-1]
    fake.send(in_dialog(invite, ok, "ACK", 10, "ack1"), reg.peer)
    await phone.wait_for("ACK received", 3)
    assert events(phone).count("INVITE received") == 1
    assert 180 in [r.status for r in responses]


@pytest.mark.parametrize("fake", ["udp", "tcp"], indirect=True)
async def test_busy_answers_486(fake: FakeServer, phone_factory: Any) -> None:
    phone = await phone_factory(action="busy")
    reg = await wake(phone, fake)
    invite = make_invite(fake, contact_of(reg.request))
    fake.send(invite, reg.peer)
    busy = (await fake.recv()).response
    assert busy.status == 486 and busy.to.tag
    fake.send(build_ack(invite, busy), reg.peer)
    await phone.wait_for("call ended", 3)
    call = events(phone)[events(phone).index("INVITE received") :]
    assert call == ["INVITE received", "486 sent", "ACK received", "call ended"]


@pytest.mark.parametrize("action", ["ring", "answer"])
async def test_cancel_before_answer_gets_487(
    fake: FakeServer, phone_factory: Any, action: str
) -> None:
    # "answer" with a CANCEL right behind the INVITE is the iOS-safe path: the phone was
    # woken for this call, the caller is gone, the INVITE is delivered and cancelled.
    phone = await phone_factory(action=action, answer_after=0.5)
    reg = await wake(phone, fake)
    invite = make_invite(fake, contact_of(reg.request))
    fake.send(invite, reg.peer)
    if action == "ring":
        assert (await fake.recv()).response.status == 180
    fake.send(build_cancel(invite), reg.peer)
    got: dict[str, Response] = {}
    while len(got) < 2:
        r = (await fake.recv()).response
        if r.status >= 200:
            got[r.cseq.method] = r
    assert got["CANCEL"].status == 200
    assert got["INVITE"].status == 487
    fake.send(build_ack(invite, got["INVITE"]), reg.peer)
    await phone.wait_for("call ended", 3)
    assert "200 sent" not in events(phone)
    assert events(phone)[-3:] == ["487 sent", "ACK received", "call ended"]
    assert "CANCEL received" in events(phone)


async def test_two_pushes_two_calls(fake: FakeServer, phone_factory: Any) -> None:
    phone = await phone_factory(action="busy")
    for n in (1, 2):
        reg = await wake(phone, fake, apns_record(f"uuid-{n}"))
        invite = make_invite(fake, contact_of(reg.request), branch=f"inv{n}")
        fake.send(invite, reg.peer)
        busy = (await fake.recv()).response
        assert busy.status == 486
        fake.send(build_ack(invite, busy), reg.peer)
        since = await phone.wait_for("ACK received", 3, since=phone.events[-2][0])
        await phone.wait_for("call ended", 3, since=since)
    assert events(phone).count("registered (wake)") == 2
    assert [p["call_id"] for p in phone.pushes] == ["uuid-1", "uuid-2"]


# --- decline and ignore ---------------------------------------------------------------------


async def test_decline_url_posts_and_does_not_register(
    fake: FakeServer, phone_factory: Any
) -> None:
    posted: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()

    async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        length = int(head.lower().split("content-length:")[1].split("\r\n")[0])
        posted.put_nowait((head.split(" ")[1], await reader.readexactly(length)))
        writer.write(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(http, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        phone = await phone_factory(action="decline-url")
        await do_register(phone, fake)
        await phone.sleep()
        url = f"http://127.0.0.1:{port}/api/v1/decline?token=abc"
        assert await post_json(phone.push_url, apns_record(decline_url=url)) == 200
        path, body = await asyncio.wait_for(posted.get(), 3)
        assert path == "/api/v1/decline?token=abc"
        assert json.loads(body) == {"reason": "busy"}
        await phone.wait_for("decline posted 202", 3)
        await fake.expect_nothing(0.2)
        assert "woke" not in events(phone)
    finally:
        server.close()
        await server.wait_closed()


async def test_ignore_does_nothing(fake: FakeServer, phone_factory: Any) -> None:
    phone = await phone_factory(action="ignore")
    await do_register(phone, fake)
    await phone.sleep()
    assert await post_json(phone.push_url, apns_record("u-9")) == 200
    await phone.wait_for("push received u-9", 3)
    await fake.expect_nothing(0.2)
    assert events(phone)[-1] == "push ignored"


async def test_push_listener_rejects_junk(phone_factory: Any) -> None:
    phone = await phone_factory()
    assert await post_json(phone.push_url, {"unrelated": 1}) == 400
    assert phone.pushes == []


# --- digest -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "algorithm"), [(401, "SHA-256"), (407, "MD5")])
async def test_answers_digest_challenge(
    fake: FakeServer, phone_factory: Any, status: int, algorithm: str
) -> None:
    phone = await phone_factory(password="s3cret")
    secret, realm, now = b"k" * 32, "127.0.0.1", time.time()
    task = asyncio.create_task(phone.register())
    first = await fake.recv()
    header = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
    extra = [(header, c) for c in auth.challenges(realm, now, secret, (algorithm,))]
    first.reply(make_response(first.request, status, to_tag="x", extra=extra))
    second = await fake.recv()
    name = "Authorization" if status == 401 else "Proxy-Authorization"
    creds = auth.parse_authorization(second.request.headers.get(name) or "")
    assert creds.algorithm == algorithm and creds.username == "bob"
    result = auth.verify(
        creds,
        "REGISTER",
        auth.ha1("bob", realm, "s3cret", algorithm),
        now=now,
        secret=secret,
        max_age=30,
    )
    assert result is auth.AuthResult.OK
    assert second.request.cseq.seq == first.request.cseq.seq + 1
    assert second.request.top_via.branch != first.request.top_via.branch
    second.reply(make_response(second.request, 200, to_tag="x"))
    assert await asyncio.wait_for(task, 3) == 200
    assert events(phone) == [f"auth challenge {status}", "registered"]


async def test_wrong_password_gives_up(fake: FakeServer, phone_factory: Any) -> None:
    phone = await phone_factory(password="wrong")
    task = asyncio.create_task(phone.register())
    challenge = auth.challenges("r", time.time(), b"k" * 32, ("MD5",))[0]
    for _ in range(2):
        got = await fake.recv()
        extra = [("WWW-Authenticate", challenge)]  # the same nonce again: not stale
        got.reply(make_response(got.request, 401, to_tag="x", extra=extra))
    assert await asyncio.wait_for(task, 3) == 401
    assert events(phone)[-1] == "register failed 401"


def test_digest_prefers_first_supported_challenge() -> None:
    values = [
        'Digest realm="r", nonce="n1", algorithm=SHA-512-256, qop="auth"',
        'Digest realm="r", nonce="n2", algorithm=MD5, qop="auth", opaque="o\\"x"',
    ]
    assert [c["nonce"] for c in parse_challenges(values)] == ["n1", "n2"]
    found = authorization(
        values, method="REGISTER", uri="sip:r", username="u", password="p", cnonce="c"
    )
    assert found is not None
    value, challenge = found
    assert challenge["nonce"] == "n2" and challenge["opaque"] == 'o"x'
    creds = auth.parse_authorization(value)
    expected = auth.digest_response(
        auth.ha1("u", "r", "p"), "n2", "REGISTER", "sip:r", qop="auth", nc="00000001", cnonce="c"
    )
    assert creds.response == expected


# --- payload formats and the CLI --------------------------------------------------------------


def test_push_payload_from_each_emulator() -> None:
    record = apns_record("u-1")
    assert push_payload(record) == record["payload"]
    data = {k: v if isinstance(v, str) else json.dumps(v) for k, v in record["payload"].items()}
    fcm = {"project": "p", "message": {"token": "t", "data": data}, "name": "n"}
    got = push_payload(fcm)
    assert got is not None and got["sip"] == record["payload"]["sip"]
    assert got["caller"]["display"] == "Alice" and got["call_id"] == "u-1"
    assert push_payload({"call_id": "x"}) == {"call_id": "x"}
    assert push_payload({"other": 1}) is None


def test_main_fails_cleanly_without_server(tmp_path: Path, capsys: Any) -> None:
    # A TCP port nobody listens on: REGISTER cannot even be sent.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["--server", f"127.0.0.1:{port}", "--transport", "tcp", "--run-for", "1"]) == 1
    out = capsys.readouterr()
    assert "push url: http://127.0.0.1:" in out.out
    assert "cannot reach" in out.err


def test_config_rejects_unknown_action() -> None:
    with pytest.raises(ValueError, match="action"):
        PhoneConfig(server=("127.0.0.1", 5060), action="dance")
