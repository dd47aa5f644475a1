"""A small in-process calling UA for the demo and tests: INVITE with SDP, follow the
provisional responses (100, 110 Push sent, 180), ACK the 2xx, talk a little, BYE.

It reuses the sans-I/O :class:`~sipwake.sip.transactions.layer.TransactionLayer` (so the
INVITE and BYE are retransmitted over UDP by Timers A/E, RFC 3261 §17.1) and the phone's
:class:`~sipwake.emulate.ua.Link`; the UA-core duties the layer leaves to us are here: the
ACK for a 2xx, sent again for each 2xx retransmission (§13.2.2.4), and the dialog's route
set and remote target for the BYE (§12.1.2, §12.2.1.1).

Every step is recorded in :attr:`Caller.events` as ``(time.monotonic(), what)``::

    INVITE sent | <status> received (100, 110, 180, 183, 200, 486, ...) | ACK sent
    BYE sent | BYE answered <status> | BYE received
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from sipwake.emulate.ua import Flow, Link, new_id
from sipwake.sip.codec import parse_message
from sipwake.sip.errors import ParseError
from sipwake.sip.events import (
    RequestReceived,
    ResponseReceived,
    TransactionTimeout,
)
from sipwake.sip.headers import Headers
from sipwake.sip.message import Request, Response, make_response
from sipwake.sip.timers import DEFAULT_TIMERS, TimerConfig
from sipwake.sip.transactions.layer import TransactionLayer

log = logging.getLogger(__name__)


@dataclass
class CallerConfig:
    server: tuple[str, int]  # the proxy; every request goes there (outbound proxy, §8.1.2)
    target: str  # the AoR to call, e.g. "sip:bob@127.0.0.1"
    user: str = "alice"
    domain: str = "127.0.0.1"
    display: str = "Alice"
    transport: str = "udp"  # udp | tcp
    talk_time: float = 0.1  # seconds between the ACK and the BYE
    answer_timeout: float = 15.0  # give up (and report 408) without a final answer by then
    timers: TimerConfig = DEFAULT_TIMERS


@dataclass(frozen=True, slots=True)
class CallResult:
    status: int  # the final answer to the INVITE (408 made here on timeout)
    reason: str
    bye_status: int | None  # the answer to our BYE, None when the call was not set up

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300 and self.bye_status == 200


@dataclass(frozen=True, slots=True)
class _Dialog:
    """What the UAC keeps of the dialog a 2xx created (RFC 3261 §12.1.2)."""

    invite: Request
    target: str  # the remote target: the 2xx's Contact
    routes: list[str]  # the route set: the 2xx's Record-Route, reversed
    to_value: str  # the To header with the callee's tag


class Caller:
    """One caller with one socket/connection to the proxy, one call at a time."""

    def __init__(self, config: CallerConfig) -> None:
        self.config = config
        self.events: list[tuple[float, str]] = []
        # Called with (t, what) for each event, e.g. to timestamp a demo timeline.
        self.on_event: Callable[[float, str], None] | None = None
        self.layer = TransactionLayer(config.timers, new_id)
        self._link: Link | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._finals: dict[str, asyncio.Future[Response]] = {}
        self._invite_txn = ""
        self._ack: tuple[bytes, Flow] | None = None  # re-sent on each 2xx retransmission
        self._seen: set[tuple[int, str]] = set()  # (status, to-tag): record each once

    async def open(self) -> Caller:
        link = Link(self.config.transport.lower(), self.config.server, self._receive)
        await link.open()
        self._link = link
        return self

    @property
    def local(self) -> tuple[str, int]:
        assert self._link is not None, "open() first"
        return self._link.local

    async def call(self) -> CallResult:
        """INVITE the target; on 2xx: ACK, wait ``talk_time``, BYE. The INVITE's final
        answer and the BYE's."""
        link = self._link
        assert link is not None, "open() first"
        cfg = self.config
        invite = self._invite(link)
        flow = link.server_flow
        self._record("INVITE sent")
        final = await self._request(invite, flow, cfg.answer_timeout, invite=True)
        if not 200 <= final.status < 300:
            # A non-2xx final was ACKed by the client transaction itself (§17.1.1.3).
            return CallResult(final.status, final.reason, None)
        # §12.1.2: the route set is the 2xx's Record-Route list reversed; the remote
        # target its Contact. Every entry here is a loose router (sipwake adds ;lr).
        dialog = _Dialog(
            invite,
            target=str(final.contacts[0].uri) if final.contacts else cfg.target,
            routes=list(reversed(final.headers.get_all("record-route"))),
            to_value=final.headers.get("to") or "",
        )
        ack = self._in_dialog(link, "ACK", dialog, invite.cseq.seq)
        self._ack = (ack.serialise(), flow)
        self.layer.send_stateless(ack, flow)
        self._record("ACK sent")
        self._pump()
        await asyncio.sleep(cfg.talk_time)
        bye = self._in_dialog(link, "BYE", dialog, invite.cseq.seq + 1)
        self._record("BYE sent")
        answer = await self._request(bye, flow, 64 * cfg.timers.t1 + 1)
        self._record(f"BYE answered {answer.status}")
        return CallResult(final.status, final.reason, answer.status)

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for fut in self._finals.values():
            fut.cancel()
        if self._link is not None:
            link, self._link = self._link, None
            link.close()
            await link.wait_closed()

    # -- building requests -------------------------------------------------------------------
    def _headers(self, link: Link) -> Headers:
        host, port = link.local
        h = Headers()
        # A fresh branch per transaction; the ACK for a 2xx is a transaction of its own
        # (RFC 3261 §17, §13.2.2.4), so it gets a new one as well.
        h.add(
            "Via",
            f"SIP/2.0/{link.transport.upper()} {host}:{port};branch=z9hG4bK{new_id(8)};rport",
        )
        h.add("Max-Forwards", "70")
        return h

    def _invite(self, link: Link) -> Request:
        cfg = self.config
        host, port = link.local
        h = self._headers(link)
        h.add("From", f'"{cfg.display}" <sip:{cfg.user}@{cfg.domain}>;tag={new_id(4)}')
        h.add("To", f"<{cfg.target}>")
        h.add("Call-ID", new_id(10))
        h.add("CSeq", "1 INVITE")
        h.add("Contact", f"<sip:{cfg.user}@{host}:{port};transport={link.transport}>")
        h.add("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS")
        request = Request("INVITE", cfg.target, h)
        request.set_body(_sdp(host), "application/sdp")
        return request

    def _in_dialog(self, link: Link, method: str, dialog: _Dialog, seq: int) -> Request:
        h = self._headers(link)
        h.add("From", dialog.invite.headers.get("from") or "")
        h.add("To", dialog.to_value)
        h.add("Call-ID", dialog.invite.call_id)
        # §13.2.2.4: the ACK repeats the INVITE's CSeq number; the BYE takes the next one.
        h.add("CSeq", f"{seq} {method}")
        for route in dialog.routes:
            h.add("Route", route)
        h.add("Content-Length", "0")
        return Request(method, dialog.target, h)

    # -- the transaction layer, driven by the loop --------------------------------------------
    async def _request(
        self, request: Request, flow: Flow, timeout: float, *, invite: bool = False
    ) -> Response:
        fut: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        txn_id = self.layer.send_request(request, flow, self._now())
        if invite:
            self._invite_txn = txn_id
        self._finals[txn_id] = fut
        self._pump()
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            self.layer.terminate(txn_id)
            return Response(408, "Request Timeout (no final answer)")
        finally:
            self._finals.pop(txn_id, None)

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _record(self, what: str) -> None:
        t = time.monotonic()
        self.events.append((t, what))
        if self.on_event is not None:
            self.on_event(t, what)

    def _receive(self, data: bytes, link: Link, addr: tuple[str, int] | None) -> None:
        try:
            msg = parse_message(data, stream=link.reliable)
            msg.validate()
            self.layer.receive(msg, Flow(link, addr, link.reliable), self._now())
        except ParseError as exc:
            log.info("caller dropped a malformed message: %s", exc)
            return
        self._pump()

    def _fire(self) -> None:
        self._timer = None
        self.layer.handle_timer(self._now())
        self._pump()

    def _pump(self) -> None:
        layer = self.layer
        while (event := layer.next_event()) is not None:
            if isinstance(event, ResponseReceived):
                self._on_response(event.response, event.txn_id)
            elif isinstance(event, TransactionTimeout):
                fut = self._finals.get(event.txn_id)
                if fut is not None and not fut.done():
                    fut.set_result(Response(408, "Request Timeout (no response)"))
            elif isinstance(event, RequestReceived) and event.txn_id is not None:
                self._on_request(event.request, event.txn_id)
        for data, dest in layer.outbox():
            assert isinstance(dest, Flow)
            dest.link.send(data, dest.addr)
        when = layer.get_timer()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if when is not None:
            self._timer = asyncio.get_running_loop().call_at(when, self._fire)

    def _on_response(self, response: Response, txn_id: str) -> None:
        status = response.status
        key = (status, response.to.tag or "")
        if txn_id == self._invite_txn and key not in self._seen:
            # Retransmitted provisionals and 2xx are recorded once.
            self._seen.add(key)
            self._record(f"{status} received")
        fut = self._finals.get(txn_id)
        if status >= 200 and fut is not None and not fut.done():
            fut.set_result(response)
        elif 200 <= status < 300 and txn_id == self._invite_txn and self._ack is not None:
            # §13.2.2.4: a retransmitted 2xx means our ACK was lost: send it again.
            data, flow = self._ack
            flow.link.send(data, flow.addr)

    def _on_request(self, request: Request, txn_id: str) -> None:
        # The callee may hang up first: answer its BYE (§15.1.2); nothing else is expected.
        if request.method == "BYE":
            self._record("BYE received")
            status = 200
        else:
            status = 405
        extra = [("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS")] if status == 405 else None
        response = make_response(request, status, extra=extra)
        self.layer.send_response(txn_id, response, self._now())


def _sdp(host: str) -> bytes:
    session = str(int(time.time()))
    return (
        f"v=0\r\no=- {session} {session} IN IP4 {host}\r\ns=sipwake caller\r\n"
        f"c=IN IP4 {host}\r\nt=0 0\r\nm=audio 40002 RTP/AVP 0 8\r\n"
        "a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=sendrecv\r\n"
    ).encode()
