"""Helpers for the transport tests: a recording sink, waiting, sample messages."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from sipwake.sip.codec import Limits
from sipwake.transport.flow import Flow


def sip_message(n: int = 0, body: bytes = b"", method: str = "OPTIONS") -> bytes:
    """A small but complete request with Content-Length, as a stream transport needs."""
    return (
        f"{method} sip:bob@example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK-{n}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@example.com>;tag=a1\r\n"
        "To: <sip:bob@example.com>\r\n"
        f"Call-ID: call-{n}@example.com\r\n"
        f"CSeq: {n + 1} {method}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "\r\n"
    ).encode() + body


@dataclass
class Recorder:
    """A Sink that keeps what it got and lets a test wait for a count."""

    got: list[tuple[bytes, Flow]] = field(default_factory=list)

    def __call__(self, data: bytes, flow: Flow) -> None:
        self.got.append((data, flow))

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[tuple[bytes, Flow]]:
        await wait_until(lambda: len(self.got) >= count, timeout)
        return self.got


async def wait_until(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.002)


def has_ipv6() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not has_ipv6(), reason="no IPv6 loopback")

LIMITS = Limits()
