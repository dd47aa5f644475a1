"""``sipwake phone``: a simulated mobile device that sleeps and wakes on a push.

It behaves like an iOS/Android VoIP app using RFC 8599: it REGISTERs with ``pn-provider``,
``pn-prid`` and ``pn-param`` in the Contact URI (§4.1) and a stable ``+sip.instance``
(RFC 5626 §4.1), then "sleeps" (closes its socket/connection). The APNs/FCM emulators POST
each delivered push to :attr:`Phone.push_url`; on a ``call`` push the phone opens a NEW
socket/connection, REGISTERs again (same instance, same token) and handles the INVITE the
server delivers over it, as the payload doc in ``push/payload.py`` asks an app to do.

Every step is recorded in :attr:`Phone.events` as ``(time.monotonic(), what)``::

    registered | slept | push received <call_id> | push ignored | woke | registered (wake)
    register failed <status> | auth challenge <401|407> | decline posted <status>
    INVITE received | 180 sent | 200 sent | 486 sent | 487 sent | 603 sent | ACK received
    ACK timeout | CANCEL received | BYE received | BYE sent | BYE answered <status>
    call ended | connection lost | MESSAGE received <Call-ID> <CSeq>

:meth:`Phone.wait_for` matches an event exactly, or by its name for the events with an
argument (``wait_for("push received")`` matches ``push received 1b4e...``).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sipwake.emulate.ua import TRANSPORTS, Flow, Link, UserAgentCore, authorization, new_id
from sipwake.push.http1 import Http1Error, http1_request
from sipwake.sip.headers import Headers
from sipwake.sip.message import Request, Response, make_response
from sipwake.sip.timers import DEFAULT_TIMERS, TimerConfig

ACTIONS = ("answer", "ring", "busy", "decline-url", "ignore")
ARG_EVENTS = (
    "push received",
    "CANCEL received",
    "register failed",
    "auth challenge",
    "decline posted",
    "BYE answered",
    "MESSAGE received",
)
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE"


@dataclass
class PhoneConfig:
    server: tuple[str, int]  # the SIP server (registrar/proxy); also the outbound proxy
    transport: str = "udp"  # udp | tcp | tls (tls: ca_file to trust)
    user: str = "bob"
    domain: str = "127.0.0.1"
    password: str = ""  # digest auth when challenged (401/407): MD5 and SHA-256
    provider: str = "apns"  # pn-provider
    token: str = field(default_factory=lambda: secrets.token_hex(32))  # pn-prid
    param: str = "ABCDE12345.com.example.phone.voip"  # pn-param (APNs: TEAMID.bundle.voip)
    instance: str = field(default_factory=lambda: f"urn:uuid:{uuid.uuid4()}")
    expires: int = 86400
    wake_delay: float = 0.05  # seconds between the push and the wake REGISTER
    action: str = "answer"  # answer | ring | busy | decline-url | ignore
    answer_after: float = 0.0  # ring this long before answering
    hangup_after: float | None = None  # send BYE this long after ACK (None: wait for BYE)
    push_listen: tuple[str, int] = ("127.0.0.1", 0)  # HTTP listener the emulator posts to
    ca_file: str = ""  # CA to trust for TLS (SIP and the decline URL)
    tls_name: str = ""  # TLS server name to check (default: the server host)
    decline_reason: str = "busy"  # sent to the decline URL: "busy" | "decline"
    follow_push_server: bool = False  # register to the payload's "sip" host/port
    # Wake REGISTER goes here instead (a cluster: the phone wakes on another node).
    wake_server: tuple[str, int] | None = None
    # Open but silent (an app frozen, a NAT binding gone without a FIN): nothing that
    # arrives on the connection is answered, not even with 100 Trying, until a push
    # wakes the phone, which then registers over a new connection.
    frozen: bool = False
    message_status: int = 200  # the answer to a SIP MESSAGE (RFC 3428)
    timers: TimerConfig = DEFAULT_TIMERS

    def __post_init__(self) -> None:
        self.transport = self.transport.lower()
        if self.transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {TRANSPORTS}")
        if self.action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}")


@dataclass(eq=False)
class _Call:
    """The one call a phone handles at a time: the INVITE server transaction and the
    dialog the phone, as UAS, builds from it (RFC 3261 §12.1.1)."""

    invite: Request
    txn_id: str
    flow: Flow
    to_tag: str = field(default_factory=lambda: new_id(4))
    final_sent: bool = False
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    acked: asyncio.Event = field(default_factory=asyncio.Event)
    bye: asyncio.Event = field(default_factory=asyncio.Event)


def push_payload(record: dict[str, Any]) -> dict[str, Any] | None:
    """The app payload inside what an emulator forwards: the APNs record's ``payload``,
    the FCM message's ``data`` (nested values arrive as JSON strings, as FCM requires),
    or a bare payload (webhook, tests)."""
    if isinstance(record.get("payload"), dict):
        return dict(record["payload"])
    message = record.get("message")
    if isinstance(message, dict) and isinstance(message.get("data"), dict):
        data: dict[str, Any] = {}
        for key, value in message["data"].items():
            if isinstance(value, str) and value[:1] in ("{", "["):
                try:
                    value = json.loads(value)
                except ValueError:
                    pass
            data[key] = value
        return data
    if "call_id" in record or "type" in record:
        return dict(record)
    return None


class Phone:
    def __init__(self, config: PhoneConfig) -> None:
        self.config = config
        self.events: list[tuple[float, str]] = []
        self.pushes: list[dict[str, Any]] = []  # payloads received, in order
        self.messages: list[Request] = []  # SIP MESSAGEs received, in order
        self.push_url = ""
        self.local: tuple[str, int] | None = None  # the SIP socket's address while awake
        # Called with (t, what) for each event, e.g. to print a live timeline.
        self.on_event: Callable[[float, str], None] | None = None
        self._ua = UserAgentCore(config.timers, self._on_request, self._on_cancel, self._on_ack)
        self._link: Link | None = None
        self._server = config.server
        self._call: _Call | None = None
        self._http: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._waiters: list[tuple[str, float | None, asyncio.Future[float]]] = []
        self._wake_lock = asyncio.Lock()
        self._frozen: Link | None = None  # the connection a frozen phone no longer reads
        # RFC 3261 §10.2: one Call-ID for every REGISTER of this UA, CSeq increasing, so
        # the registrar sees each wake-up REGISTER as an update, not a stale replay.
        self._reg_call_id = new_id(10)
        self._from_tag = new_id(4)
        self._cseq = 0

    # -- public API ----------------------------------------------------------------------
    async def start(self) -> None:
        host, port = self.config.push_listen
        self._http = await asyncio.start_server(self._on_http, host, port)
        bound = self._http.sockets[0].getsockname()
        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        self.push_url = f"http://{shown}:{bound[1]}/push"

    async def register(self) -> int:
        """REGISTER with the push parameters (opening a socket if asleep); final status."""
        return await self._register(wake=False)

    async def sleep(self) -> None:
        """Close the socket/connection: from now on the phone is reachable only by push."""
        if self._link is not None:
            link, self._link = self._link, None
            link.on_close = None
            link.close()
            self._ua.link_closed(link)
            await link.wait_closed()
        self.local = None
        self._record("slept")

    async def wait_for(self, what: str, timeout: float, *, since: float | None = None) -> float:
        """Time of the first event matching ``what`` (at or after ``since``), waiting up
        to ``timeout`` seconds; TimeoutError lists the events seen."""
        for t, event in self.events:
            if _matches(event, what) and (since is None or t >= since):
                return t
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        waiter = (what, since, fut)
        self._waiters.append(waiter)
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            seen = ", ".join(e for _, e in self.events)
            raise TimeoutError(f"phone: no {what!r} within {timeout}s; events: {seen}") from None
        finally:
            self._waiters.remove(waiter)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._link is not None:
            self._link.on_close = None
            self._link.close()
            self._link = None
        self._ua.close()
        if self._http is not None:
            self._http.close()
            await self._http.wait_closed()
            self._http = None

    # -- events ----------------------------------------------------------------------------
    def _record(self, what: str) -> None:
        t = time.monotonic()
        self.events.append((t, what))
        if self.on_event is not None:
            self.on_event(t, what)
        for w_what, since, fut in self._waiters:
            if not fut.done() and _matches(what, w_what) and (since is None or t >= since):
                fut.set_result(t)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- registration ------------------------------------------------------------------------
    async def _open(self) -> Link:
        cfg = self.config
        link = Link(cfg.transport, self._server, self._receive)
        await link.open(cfg.ca_file, cfg.tls_name)
        link.on_close = self._link_lost
        self._link = link
        self.local = link.local
        return link

    def _receive(self, data: bytes, link: Link, addr: tuple[str, int] | None) -> None:
        if self._frozen is link:
            if not data.startswith(b"SIP/2.0"):
                self._record("request ignored (frozen)")
            return
        self._ua.receive(data, link, addr)

    def _link_lost(self, link: Link) -> None:
        self._ua.link_closed(link)
        if link is self._link:
            self._link = None
            self.local = None
            self._record("connection lost")

    async def _register(self, wake: bool) -> int:
        link = self._link if self._link is not None else await self._open()
        status = await self._send_register(link)
        ok = 200 <= status < 300
        if ok:
            self._record("registered (wake)" if wake else "registered")
            if self.config.frozen and not wake:
                self._frozen = link
        else:
            self._record(f"register failed {status}")
        return status

    async def _send_register(self, link: Link) -> int:
        cfg = self.config
        ruri = f"sip:{cfg.domain}"
        auth: tuple[str, str] | None = None
        expires = cfg.expires
        nonces: set[str] = set()
        for _ in range(4):
            self._cseq += 1
            request = self._build_register(link, ruri, expires, auth)
            response = await self._ua.request(request, link.server_flow)
            min_expires = response.headers.get("Min-Expires") or ""
            if response.status == 423 and min_expires.isdigit():
                expires = int(min_expires)  # §10.2.8: retry with the registrar's minimum
                continue
            if response.status not in (401, 407) or not cfg.password:
                return response.status
            self._record(f"auth challenge {response.status}")
            header = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
            found = authorization(
                response.headers.get_lines(header),
                method="REGISTER",
                uri=ruri,
                username=cfg.user,
                password=cfg.password,
                cnonce=new_id(8),
            )
            if found is None:
                return response.status
            value, challenge = found
            # A second challenge for a nonce we already answered means the password is
            # wrong, unless the server says the nonce was merely stale (RFC 7616 §3.3).
            if challenge["nonce"] in nonces and challenge.get("stale", "").lower() != "true":
                return response.status
            nonces.add(challenge["nonce"])
            name = "Authorization" if response.status == 401 else "Proxy-Authorization"
            auth = (name, value)
        return response.status

    def _build_register(
        self, link: Link, ruri: str, expires: int, auth: tuple[str, str] | None
    ) -> Request:
        cfg = self.config
        aor = f"sip:{cfg.user}@{cfg.domain}"
        h = self._base_headers(link)
        h.add("From", f"<{aor}>;tag={self._from_tag}")
        h.add("To", f"<{aor}>")
        h.add("Call-ID", self._reg_call_id)
        h.add("CSeq", f"{self._cseq} REGISTER")
        # RFC 8599 §4.1.1: the pn-* parameters go in the Contact URI; +sip.instance is a
        # header parameter (RFC 5626 §4.1) so the server knows this device across wake-ups.
        contact = (
            f"<{self._contact_uri(link)};pn-provider={cfg.provider};pn-prid={cfg.token}"
            + (f";pn-param={cfg.param}" if cfg.param else "")
            + f'>;+sip.instance="<{cfg.instance}>"'
        )
        h.add("Contact", contact)
        h.add("Expires", str(expires))
        h.add("Allow", ALLOW)
        if auth is not None:
            h.add(*auth)
        h.add("Content-Length", "0")
        return Request("REGISTER", ruri, h)

    def _contact_uri(self, link: Link) -> str:
        host, port = link.local
        shown = f"[{host}]" if ":" in host else host
        return f"sip:{self.config.user}@{shown}:{port};transport={link.transport}"

    def _base_headers(self, link: Link) -> Headers:
        host, port = link.local
        shown = f"[{host}]" if ":" in host else host
        h = Headers()
        branch = "z9hG4bK" + new_id(8)
        h.add("Via", f"SIP/2.0/{link.transport.upper()} {shown}:{port};branch={branch};rport")
        h.add("Max-Forwards", "70")
        return h

    # -- pushes ------------------------------------------------------------------------------
    async def _on_http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        status, record = 400, None
        try:
            async with asyncio.timeout(5):
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method = lines[0].split(" ")[0]
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length" and value.strip().isdigit():
                        length = int(value.strip())
                body = await reader.readexactly(length) if 0 < length <= 65536 else b""
            if method != "POST":
                status = 405
            else:
                doc = json.loads(body)
                record = push_payload(doc) if isinstance(doc, dict) else None
                status = 200 if record is not None else 400
        except (OSError, ValueError, TimeoutError, asyncio.IncompleteReadError):
            status = 400
        except asyncio.LimitOverrunError:
            status = 413
        # Answer at once, like APNs/FCM: the push is delivered, what the app does is its own.
        reply = f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\n"
        writer.write(f"{reply}Content-Length: 0\r\nConnection: close\r\n\r\n".encode())
        try:
            await writer.drain()
        except OSError:
            pass
        writer.close()
        if record is not None:
            self._spawn(self._on_push(record))

    async def _on_push(self, payload: dict[str, Any]) -> None:
        cfg = self.config
        self.pushes.append(payload)
        call_id = str(payload.get("call_id") or payload.get("sip_call_id") or "")
        self._record(f"push received {call_id}".rstrip())
        if cfg.action == "ignore":
            self._record("push ignored")
            return
        if cfg.action == "decline-url":
            await self._decline(str(payload.get("decline_url") or ""))
            return
        async with self._wake_lock:
            await asyncio.sleep(cfg.wake_delay)
            self._record("woke")
            if self._frozen is not None and self._frozen is self._link:
                # The app thaws and reconnects; the old connection is left as it was.
                self._link = None
            sip = payload.get("sip")
            if cfg.wake_server is not None:
                self._server = cfg.wake_server
            elif cfg.follow_push_server and isinstance(sip, dict) and sip.get("host"):
                self._server = (str(sip["host"]), int(sip.get("port") or self._server[1]))
            # Awake already (e.g. in a call): refresh over the live connection. Asleep: a
            # new socket, so a new local port, as an app relaunched by PushKit would have.
            await self._register(wake=True)

    async def _decline(self, url: str) -> None:
        if not url:
            self._record("decline posted 0")
            return
        ctx = ssl.create_default_context(cafile=self.config.ca_file or None)
        body = json.dumps({"reason": self.config.decline_reason}).encode()
        try:
            reply = await http1_request(
                "POST", url, [("content-type", "application/json")], body, ssl_context=ctx
            )
            status = reply.status
        except Http1Error:
            status = 0
        self._record(f"decline posted {status}")

    # -- incoming requests -------------------------------------------------------------------
    def _respond(
        self,
        request: Request,
        txn_id: str,
        flow: Flow | None,
        status: int,
        *,
        to_tag: str | None = None,
        extra: list[tuple[str, str]] | None = None,
        sdp: bool = False,
    ) -> Response:
        response = make_response(request, status, to_tag=to_tag, extra=extra)
        if sdp:
            link: Link | None = flow.link if flow is not None else self._link
            host = link.local[0] if link is not None else "127.0.0.1"
            response.set_body(_sdp(host), "application/sdp")
        self._ua.respond(txn_id, response, flow)
        return response

    def _on_request(self, request: Request, txn_id: str, flow: Flow) -> None:
        method = request.method
        call = self._call
        if method == "INVITE":
            if request.to.tag is not None:
                # A re-INVITE (e.g. a session refresh) in our dialog keeps the call going.
                in_call = call is not None and self._in_dialog(call, request)
                status = 200 if in_call else 481
                extra = self._contact(flow)
                self._respond(request, txn_id, flow, status, extra=extra, sdp=in_call)
                return
            self._record("INVITE received")
            if call is not None:
                self._respond(request, txn_id, flow, 486, to_tag=new_id(4))  # one call at a time
                self._record("486 sent")
                return
            call = self._call = _Call(request, txn_id, flow)
            self._spawn(self._run_call(call))
        elif method == "BYE":
            if call is None or not self._in_dialog(call, request):
                self._respond(request, txn_id, flow, 481)
                return
            self._respond(request, txn_id, flow, 200)
            self._record("BYE received")
            call.bye.set()
        elif method == "OPTIONS":
            self._respond(request, txn_id, flow, 200, extra=[("Allow", ALLOW)])
        elif method == "MESSAGE":
            self.messages.append(request)
            self._respond(request, txn_id, flow, self.config.message_status, to_tag=new_id(4))
            self._record(f"MESSAGE received {request.call_id} {request.cseq.seq}")
        else:
            self._respond(request, txn_id, flow, 405, extra=[("Allow", ALLOW)])

    def _in_dialog(self, call: _Call, request: Request) -> bool:
        return (
            request.call_id == call.invite.call_id
            and request.to.tag == call.to_tag
            and request.from_.tag == call.invite.from_.tag
        )

    def _on_cancel(self, cancel: Request, txn_id: str, invite_txn_id: str | None) -> None:
        call = self._call
        if call is None or invite_txn_id is None or invite_txn_id != call.txn_id:
            self._respond(cancel, txn_id, None, 481)  # §9.2: no matching transaction
            return
        reason = cancel.headers.get("reason")
        self._record("CANCEL received" + (f" Reason: {reason}" if reason else ""))
        self._respond(cancel, txn_id, call.flow, 200, to_tag=call.to_tag)
        if not call.final_sent:
            # §9.2: a CANCEL before the final answer ends the INVITE with 487.
            call.final_sent = True
            self._respond(call.invite, call.txn_id, call.flow, 487, to_tag=call.to_tag)
            self._record("487 sent")
            call.cancelled.set()

    def _on_ack(self, ack: Request) -> None:
        call = self._call
        if call is not None and ack.call_id == call.invite.call_id and not call.acked.is_set():
            self._record("ACK received")
            call.acked.set()

    # -- the call --------------------------------------------------------------------------
    async def _run_call(self, call: _Call) -> None:
        cfg = self.config
        try:
            if cfg.action == "busy":
                await self._final(call, 486)
            elif cfg.action == "decline-url":  # an INVITE while awake: decline in SIP
                await self._final(call, 603)
            else:
                if not call.final_sent:
                    self._respond(call.invite, call.txn_id, call.flow, 180, to_tag=call.to_tag)
                    self._record("180 sent")
                if cfg.action in ("ring", "ignore"):
                    await call.cancelled.wait()
                elif not await _wait(call.cancelled, cfg.answer_after):
                    await self._answer(call)
                    return
            # A non-2xx went out: the ACK ends the transaction (absorbed until Timer H).
            await _wait(call.acked, cfg.timers.h)
        finally:
            self._call = None
            self._record("call ended")

    async def _final(self, call: _Call, status: int) -> None:
        if not call.final_sent:
            call.final_sent = True
            self._respond(call.invite, call.txn_id, call.flow, status, to_tag=call.to_tag)
            self._record(f"{status} sent")

    async def _answer(self, call: _Call) -> None:
        cfg = self.config
        call.final_sent = True
        # §12.1.1: a UAS copies the Record-Route set into its dialog-creating response, so
        # the caller's ACK and BYE cross every proxy (or cluster node) that asked to stay.
        rr = [("Record-Route", v) for v in call.invite.headers.get_all("record-route")]
        extra = rr + self._contact(call.flow)
        ok = self._respond(
            call.invite, call.txn_id, call.flow, 200, to_tag=call.to_tag, extra=extra, sdp=True
        )
        self._record("200 sent")
        if not await self._await_ack(call, ok):
            self._record("ACK timeout")
            await self._send_bye(call)  # §13.3.1.4: no ACK, so end the session with BYE
            return
        if cfg.hangup_after is None:
            await call.bye.wait()
        elif not await _wait(call.bye, cfg.hangup_after):
            await self._send_bye(call)

    async def _await_ack(self, call: _Call, ok: Response) -> bool:
        """Wait for the ACK, re-sending the 2xx on UDP at T1, 2*T1 ... capped at T2 for
        64*T1 (RFC 3261 §13.3.1.4: the UAS core, not the transaction, does this)."""
        t = self.config.timers
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 64 * t.t1
        interval = t.t1
        while not (call.acked.is_set() or call.bye.is_set()):
            left = deadline - loop.time()
            if left <= 0:
                return False
            await _wait(call.acked, min(interval, left))
            if not call.acked.is_set() and not call.flow.reliable and loop.time() < deadline:
                self._ua.respond(call.txn_id, ok, call.flow)
            interval = min(interval * 2, t.t2)
        return True

    def _contact(self, flow: Flow) -> list[tuple[str, str]]:
        # §12.1.1: the Contact of a dialog-creating response is the UAS's remote target.
        link: Link = flow.link
        return [("Contact", f"<{self._contact_uri(link)}>"), ("Allow", ALLOW)]

    async def _send_bye(self, call: _Call) -> None:
        link = self._link
        if link is None:
            return
        inv = call.invite
        # RFC 3261 §12.1.1: the UAS's route set is the INVITE's Record-Route list in order,
        # its remote target the caller's Contact. A strict router first in the set (no
        # ;lr) takes the Request-URI and the remote target goes last (§12.2.1.1).
        routes = inv.headers.get_all("record-route")
        target = str(inv.contacts[0].uri) if inv.contacts else str(inv.from_.uri)
        ruri = target
        rr = inv.record_routes
        if rr and "lr" not in rr[0].uri.params:
            ruri = str(rr[0].uri)
            routes = [*routes[1:], f"<{target}>"]
        h = self._base_headers(link)
        h.add("From", f"{inv.headers.get('to')};tag={call.to_tag}")
        h.add("To", inv.headers.get("from") or "")
        h.add("Call-ID", inv.call_id)
        h.add("CSeq", "1 BYE")  # §12.1.1: the UAS's local sequence starts fresh
        for route in routes:
            h.add("Route", route)
        h.add("Content-Length", "0")
        self._record("BYE sent")
        # The server is the phone's outbound proxy (§8.1.2): the BYE goes over the link.
        response = await self._ua.request(Request("BYE", ruri, h), link.server_flow)
        self._record(f"BYE answered {response.status}")


def _sdp(host: str) -> bytes:
    ip = "IP6" if ":" in host else "IP4"
    session = str(int(time.time()))
    return (
        f"v=0\r\no=- {session} {session} IN {ip} {host}\r\ns=sipwake phone\r\n"
        f"c=IN {ip} {host}\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0 8 101\r\n"
        "a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
    ).encode()


def _matches(event: str, what: str) -> bool:
    return event == what or (what in ARG_EVENTS and event.startswith(what + " "))


async def _wait(event: asyncio.Event, timeout: float) -> bool:
    """True when ``event`` is set within ``timeout`` seconds."""
    if event.is_set():
        return True
    if timeout <= 0:
        return False
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        return False
    return True


# --- `sipwake phone` ------------------------------------------------------------------------
