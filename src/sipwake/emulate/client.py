"""A minimal SIP client over UDP or TCP: send a request, wait for its final response.

Used by the demo and the simulated phone; not a user agent (no transactions, no retries
beyond what a single UDP exchange on loopback needs)."""

from __future__ import annotations

import asyncio
import os

from sipwake.sip.codec import StreamFramer, parse_message
from sipwake.sip.message import Response


def build_request(
    method: str,
    ruri: str,
    *,
    transport: str,
    local: tuple[str, int],
    from_uri: str,
    to_uri: str,
    call_id: str | None = None,
    cseq: int = 1,
    extra: list[tuple[str, str]] | None = None,
    body: bytes = b"",
) -> bytes:
    branch = "z9hG4bK" + os.urandom(6).hex()
    host = f"[{local[0]}]" if ":" in local[0] else local[0]
    lines = [
        f"{method} {ruri} SIP/2.0",
        f"Via: SIP/2.0/{transport} {host}:{local[1]};branch={branch};rport",
        "Max-Forwards: 70",
        f"From: <{from_uri}>;tag={os.urandom(4).hex()}",
        f"To: <{to_uri}>",
        f"Call-ID: {call_id or os.urandom(8).hex()}",
        f"CSeq: {cseq} {method}",
    ]
    lines += [f"{k}: {v}" for k, v in extra or ()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class _UdpProto(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait(data)


class SipClient:
    """One socket to one server; ``exchange`` sends bytes and returns the final response."""

    def __init__(self, transport: str, server: tuple[str, int]) -> None:
        self.transport = transport.upper()
        self.server = server
        self.local: tuple[str, int] = ("127.0.0.1", 0)
        self._udp: asyncio.DatagramTransport | None = None
        self._proto: _UdpProto | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._framer = StreamFramer()
        self._pending: list[bytes] = []

    async def open(self) -> SipClient:
        loop = asyncio.get_running_loop()
        if self.transport == "UDP":
            self._udp, self._proto = await loop.create_datagram_endpoint(
                _UdpProto, remote_addr=self.server
            )
            self.local = self._udp.get_extra_info("sockname")[:2]
        else:
            self._reader, self._writer = await asyncio.open_connection(*self.server)
            self.local = self._writer.get_extra_info("sockname")[:2]
        return self

    def send(self, data: bytes) -> None:
        if self._udp is not None:
            self._udp.sendto(data)
        elif self._writer is not None:
            self._writer.write(data)

    async def receive(self, timeout: float = 2.0) -> bytes:
        if self._proto is not None:
            return await asyncio.wait_for(self._proto.queue.get(), timeout)
        assert self._reader is not None
        while not self._pending:
            chunk = await asyncio.wait_for(self._reader.read(65536), timeout)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self._pending += [m for m in self._framer.feed(chunk) if isinstance(m, bytes)]
        return self._pending.pop(0)

    async def exchange(self, data: bytes, timeout: float = 2.0) -> Response:
        """Send and wait for the first final response (provisional ones are skipped)."""
        self.send(data)
        while True:
            msg = parse_message(await self.receive(timeout))
            if isinstance(msg, Response) and msg.status >= 200:
                return msg

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except OSError:
                pass
