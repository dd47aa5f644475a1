"""A hand-driven SIP client over real UDP sockets, for attack-shaped tests: it sends what
an attacker sends (invented nonces, foreign From domains, many source addresses on
127.0.0.0/8) and reads the answers; nothing here is part of sipwake."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from sipwake.policy.auth import digest_response, ha1
from sipwake.sip.codec import parse_message
from sipwake.sip.message import Request, Response


def add_user(config: Path, name: str, password: str) -> None:
    """``sipwake user add`` against the server's own store (SQLite)."""
    cmd = [sys.executable, "-m", "sipwake", "user", "add", name, "-c", str(config)]
    res = subprocess.run(
        [*cmd, "--password", password], capture_output=True, text=True, check=False
    )
    assert res.returncode == 0, res.stderr


@dataclass(frozen=True)
class Sent:
    method: str
    ruri: str
    branch: str
    from_: str
    to: str
    call_id: str
    cseq: int


@dataclass
class Answer:
    status: int
    reason: str
    response: Response

    def header(self, name: str) -> str:
        return self.response.headers.get(name) or ""

    def nonce(self) -> str:
        value = self.header("WWW-Authenticate") or self.header("Proxy-Authenticate")
        return value.split('nonce="', 1)[1].split('"', 1)[0]


class Prober:
    """One UDP socket bound to ``source`` (any 127.x.y.z address works on Linux)."""

    def __init__(self, server: tuple[str, int], source: str = "127.0.0.1") -> None:
        self.server = server
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((source, 0))
        self.sock.settimeout(5.0)
        self.host, self.port = self.sock.getsockname()
        self.cseq = 0
        self.finals: dict[tuple[str, str], Answer] = {}
        self.sent: dict[str, Sent] = {}  # by branch

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Prober:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        ruri: str,
        *,
        from_uri: str,
        to_uri: str | None = None,
        headers: list[tuple[str, str]] | None = None,
        body: str = "",
        contact: str | None = None,
    ) -> Answer:
        """Send one request and return its first final answer (100/110/180 are skipped)."""
        sent = self.send(
            method,
            ruri,
            from_uri=from_uri,
            to_uri=to_uri,
            headers=headers,
            body=body,
            contact=contact,
        )
        answer = self.wait_final(sent)
        assert answer is not None, f"no final answer to {method} {ruri}"
        return answer

    def send(
        self,
        method: str,
        ruri: str,
        *,
        from_uri: str,
        to_uri: str | None = None,
        headers: list[tuple[str, str]] | None = None,
        body: str = "",
        contact: str | None = None,
    ) -> Sent:
        """Send one request without waiting for anything."""
        self.cseq += 1
        sent = Sent(
            method,
            ruri,
            "z9hG4bK" + os.urandom(6).hex(),
            f"<{from_uri}>;tag={os.urandom(4).hex()}",
            f"<{to_uri or ruri}>",
            f"{os.urandom(8).hex()}@probe",
            self.cseq,
        )
        self.sent[sent.branch] = sent
        lines = [
            f"{method} {ruri} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.host}:{self.port};branch={sent.branch};rport",
            "Max-Forwards: 70",
            f"From: {sent.from_}",
            f"To: {sent.to}",
            f"Call-ID: {sent.call_id}",
            f"CSeq: {sent.cseq} {method}",
            f"Contact: {contact or f'<sip:probe@{self.host}:{self.port}>'}",
        ]
        lines += [f"{k}: {v}" for k, v in headers or []]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode())}")
        self.sock.sendto(("\r\n".join(lines) + "\r\n\r\n" + body).encode(), self.server)
        return sent

    def cancel(self, sent: Sent) -> Sent:
        """CANCEL a sent INVITE (RFC 3261 §9.1: same branch, Call-ID, From, To, CSeq number)."""
        lines = [
            f"CANCEL {sent.ruri} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.host}:{self.port};branch={sent.branch};rport",
            "Max-Forwards: 70",
            f"From: {sent.from_}",
            f"To: {sent.to}",
            f"Call-ID: {sent.call_id}",
            f"CSeq: {sent.cseq} CANCEL",
            "Content-Length: 0",
        ]
        self.sock.sendto(("\r\n".join(lines) + "\r\n\r\n").encode(), self.server)
        return Sent("CANCEL", sent.ruri, sent.branch, sent.from_, sent.to, sent.call_id, sent.cseq)

    def wait_final(self, sent: Sent, timeout: float = 5.0) -> Answer | None:
        """The final answer to ``sent`` (answers to other requests meanwhile are kept for
        their own wait_final), or None after ``timeout`` seconds."""
        key = (sent.branch, sent.method)
        deadline = time.monotonic() + timeout
        while key not in self.finals:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                raw, _ = self.sock.recvfrom(65535)
            except TimeoutError:
                return None
            msg = parse_message(raw)
            if not isinstance(msg, Response) or msg.status < 200:
                continue
            via = msg.headers.get("via") or ""
            branch = via.split("branch=", 1)[1].split(";", 1)[0] if "branch=" in via else ""
            method = msg.cseq.method
            if method == "INVITE" and branch in self.sent:
                self._ack(msg, self.sent[branch].ruri, branch)
            self.finals[branch, method] = Answer(msg.status, msg.reason, msg)
        return self.finals.pop(key)

    def _ack(self, response: Response, ruri: str, branch: str) -> None:
        # RFC 3261 §17.1.1.3: the ACK for a non-2xx final answer, same branch.
        h = response.headers
        lines = [
            f"ACK {ruri} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.host}:{self.port};branch={branch};rport",
            "Max-Forwards: 70",
            f"From: {h.get('from')}",
            f"To: {h.get('to')}",
            f"Call-ID: {h.get('call-id')}",
            f"CSeq: {(h.get('cseq') or '1 INVITE').split()[0]} ACK",
            "Content-Length: 0",
        ]
        self.sock.sendto(("\r\n".join(lines) + "\r\n\r\n").encode(), self.server)

    def register(
        self,
        user: str,
        domain: str,
        *,
        password: str | None = None,
        nonce: str | None = None,
        realm: str | None = None,
        contact: str | None = None,
    ) -> Answer:
        """REGISTER as ``user``: with ``password`` (and no ``nonce``) the whole digest
        exchange; with ``nonce`` one request answering that nonce, as a blind sender would."""
        aor = f"sip:{user}@{domain}"
        ruri = f"sip:{domain}"
        if password is None:
            return self.request("REGISTER", ruri, from_uri=aor, to_uri=aor, contact=contact)
        if nonce is None:
            first = self.request("REGISTER", ruri, from_uri=aor, to_uri=aor, contact=contact)
            if first.status != 401:
                return first
            nonce = first.nonce()
        cred = authorization(user, realm or domain, password, nonce, method="REGISTER", uri=ruri)
        auth = [("Authorization", cred)]
        return self.request(
            "REGISTER", ruri, from_uri=aor, to_uri=aor, headers=auth, contact=contact
        )


def authorization(
    user: str, realm: str, password: str, nonce: str, *, method: str, uri: str
) -> str:
    """An MD5 ``qop=auth`` Authorization value (RFC 2617 §3.2.2)."""
    cnonce = os.urandom(4).hex()
    response = digest_response(
        ha1(user, realm, password), nonce, method, uri, qop="auth", nc="00000001", cnonce=cnonce
    )
    return (
        f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
        f'response="{response}", algorithm=MD5, qop=auth, nc=00000001, cnonce="{cnonce}"'
    )


class RingingCallee(threading.Thread):
    """A UAS on ``prober``'s socket that rings forever: 180 to every INVITE, and on CANCEL
    200 to the CANCEL then 487 to the INVITE (RFC 3261 §9.2). Calls stay in progress for
    as long as the caller wants, as they do when the callee is slow."""

    def __init__(self, prober: Prober) -> None:
        super().__init__(daemon=True)
        self.sock = prober.sock
        self.invites: dict[str, Request] = {}  # by Call-ID
        self.stopped = threading.Event()

    def run(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stopped.is_set():
            try:
                raw, addr = self.sock.recvfrom(65535)
            except (TimeoutError, OSError):
                continue
            msg = parse_message(raw)
            if not isinstance(msg, Request):
                continue
            call_id = msg.headers.get("call-id") or ""
            if msg.method == "INVITE":
                self.invites[call_id] = msg
                self._answer(msg, 180, "Ringing", addr)
            elif msg.method == "CANCEL":
                self._answer(msg, 200, "OK", addr)
                invite = self.invites.pop(call_id, None)
                if invite is not None:
                    self._answer(invite, 487, "Request Terminated", addr)

    def _answer(self, req: Request, status: int, reason: str, addr: tuple[str, int]) -> None:
        h = req.headers
        lines = [f"SIP/2.0 {status} {reason}"]
        lines += [f"Via: {v}" for v in h.get_lines("via")]
        to = h.get("to") or ""
        if ";tag=" not in to and req.method == "INVITE":
            to += ";tag=callee1"
        lines += [
            f"From: {h.get('from')}",
            f"To: {to}",
            f"Call-ID: {h.get('call-id')}",
            f"CSeq: {h.get('cseq')}",
            "Content-Length: 0",
        ]
        self.sock.sendto(("\r\n".join(lines) + "\r\n\r\n").encode(), addr)

    def stop(self) -> None:
        self.stopped.set()
        self.join(2)
