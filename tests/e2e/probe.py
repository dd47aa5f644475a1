"""A hand-driven SIP client over real UDP sockets, for attack-shaped tests: it sends what
an attacker sends (invented nonces, foreign From domains, many source addresses on
127.0.0.0/8) and reads the answers; nothing here is part of sipwake."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from sipwake.policy.auth import digest_response, ha1
from sipwake.sip.codec import parse_message
from sipwake.sip.message import Response


def add_user(config: Path, name: str, password: str) -> None:
    """``sipwake user add`` against the server's own store (SQLite)."""
    cmd = [sys.executable, "-m", "sipwake", "user", "add", name, "-c", str(config)]
    res = subprocess.run(
        [*cmd, "--password", password], capture_output=True, text=True, check=False
    )
    assert res.returncode == 0, res.stderr


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
        self.cseq += 1
        branch = "z9hG4bK" + os.urandom(6).hex()
        lines = [
            f"{method} {ruri} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.host}:{self.port};branch={branch};rport",
            "Max-Forwards: 70",
            f"From: <{from_uri}>;tag={os.urandom(4).hex()}",
            f"To: <{to_uri or ruri}>",
            f"Call-ID: {os.urandom(8).hex()}@probe",
            f"CSeq: {self.cseq} {method}",
            f"Contact: {contact or f'<sip:probe@{self.host}:{self.port}>'}",
        ]
        lines += [f"{k}: {v}" for k, v in headers or []]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode())}")
        data = ("\r\n".join(lines) + "\r\n\r\n" + body).encode()
        self.sock.sendto(data, self.server)
        while True:
            raw, _ = self.sock.recvfrom(65535)
            msg = parse_message(raw)
            if not isinstance(msg, Response) or msg.status < 200:
                continue
            if branch not in (msg.headers.get("via") or ""):
                continue  # a late answer to an earlier request
            if method == "INVITE":
                self._ack(msg, ruri, branch)
            return Answer(msg.status, msg.reason, msg)

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
