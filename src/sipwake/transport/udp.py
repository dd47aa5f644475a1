"""UDP: a raw non-blocking socket read with ``loop.add_reader``, drained until EAGAIN.

asyncio's datagram transport reads one datagram per wake-up into a fresh 256 KiB buffer,
which costs about twice as much per SIP message (DEPENDENCIES.md, "Event loop and sockets").
Here one wake-up drains the socket into a preallocated buffer, and sends go straight to
``sendto``: a full socket buffer drops the datagram, as the network would, and the
transaction layer retransmits (RFC 3261 §17.1.1.2, §17.2.1).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import time

from sipwake.transport.connections import TransportContext, normalise_host
from sipwake.transport.flow import Flow
from sipwake.transport.stun import binding_response, is_stun, maybe_stun

log = logging.getLogger("sipwake.transport.udp")

RCVBUF_BYTES = 4 * 1024 * 1024  # absorb bursts (the kernel caps it at net.core.rmem_max)
SNDBUF_BYTES = 1024 * 1024
MAX_READS_PER_WAKEUP = 512  # fairness: other sockets get a turn; the reader fires again
# Overload shedding (policy/overload.py) watches how long datagrams waited in the kernel's
# receive queue: every SAMPLE_EVERY-th read takes the kernel's receive timestamp along
# (SO_TIMESTAMPNS). One reading per wakeup stood for up to 512 messages; per 32, the
# shedding follows the queue closely, for about one extra syscall's cost in 32.
SAMPLE_EVERY = 32
# Sends held while a read batch is read (_on_readable) go out at the batch's end or once
# this many wait: the bound on how long an answer waits behind the rest of a long batch.
OUTBOX_FLUSH = 64
FLOW_CACHE = 65_536  # peer addresses whose Flow is kept for reuse
_SO_MEMINFO = 55  # Linux: the socket's memory counters, [0] queued bytes, [1] SO_RCVBUF
_SO_TIMESTAMPNS = 35  # Linux (asm-generic): a struct timespec of arrival with each datagram
_ANCILLARY = socket.CMSG_SPACE(16)
_BLANK = b"\r\n\0 "  # what NAT keep-alives are made of (a SIP message starts with a letter)


def family_of(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def open_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    host = normalise_host(host)
    family = family_of(host)
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        if family == socket.AF_INET6:
            # Separate sockets for :: and 0.0.0.0 instead of v4-mapped addresses, so a Flow's
            # addresses are always plain IPv4 or IPv6.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        for opt, size in ((socket.SO_RCVBUF, RCVBUF_BYTES), (socket.SO_SNDBUF, SNDBUF_BYTES)):
            with contextlib.suppress(OSError):  # best effort; the kernel may refuse
                sock.setsockopt(socket.SOL_SOCKET, opt, size)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


class UdpEndpoint:
    """One bound UDP socket: reads datagrams into the sink, sends without blocking."""

    __slots__ = ("_buf", "_ctx", "_flows", "_loop", "_outbox", "_view", "local", "sock")

    def __init__(
        self, sock: socket.socket, ctx: TransportContext, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.sock = sock
        self._ctx = ctx
        self._loop = loop
        addr = sock.getsockname()
        self.local: tuple[str, int] = (addr[0], addr[1])
        # One byte more than the limit, so an oversize datagram shows up as oversize instead
        # of being silently truncated to exactly the limit.
        self._buf = bytearray(ctx.limits.max_message_size + 1)
        self._view = memoryview(self._buf)
        # One Flow per peer address, not per datagram (Flow is an immutable value): a
        # phone's retransmissions, refreshes and calls share it, which saves an object per
        # message and, above all, per finished transaction kept through Timer J/L (64*T1):
        # one object less for every full pass of the cyclic GC. Bounded: emptied when full.
        self._flows: dict[tuple[str, int], Flow] = {}
        # What is sent while a batch of datagrams is read waits here until the batch is
        # read, or OUTBOX_FLUSH sends are waiting (_on_readable says why); None between
        # batches, when a send goes at once.
        self._outbox: list[tuple[bytes, tuple[str, int]]] | None = None
        if ctx.watch_backlog:
            self.watch()
        loop.add_reader(sock.fileno(), self._on_readable)

    def watch(self) -> None:
        """Have the kernel timestamp each datagram's arrival (for ``ctx.delay``)."""
        with contextlib.suppress(OSError):  # not Linux: the delay stays 0
            self.sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)

    @property
    def family(self) -> socket.AddressFamily:
        return self.sock.family

    def backlog(self) -> float:
        """How full the kernel's receive queue is (0..1), 0 where the kernel cannot tell
        (not Linux). Coarse: Linux gives a datagram's memory back only once the whole
        batch it moved to the reader's queue has been read (udp_rmem_release), so the
        fill stays at its peak until the queue is empty: a bound on the memory queued,
        not a measure of the delay (that is ``ctx.delay``)."""
        try:
            raw = self.sock.getsockopt(socket.SOL_SOCKET, _SO_MEMINFO, 36)
        except OSError:
            return 0.0
        queued, size = struct.unpack_from("2I", raw)
        return queued / size if size else 0.0

    def _on_readable(self) -> None:
        """Read what the socket holds, holding back what the engine sends meanwhile.

        Every datagram sent to a peer asleep in poll() wakes it, and the sender pays for
        the wake-up: on this project's VMs a perf profile of the server at 4x its call
        capacity put 15 % of its CPU in that (``sock_def_readable``, the cross-CPU wake).
        A peer woken by the first of a run of sends is still awake for the rest, so sends
        held until the read batch ends cost one wake-up per batch, not one per datagram.
        Under a light load a batch is one datagram and nothing waits longer than the
        read that finds the socket empty."""
        self._outbox = []
        try:
            self._read_batch()
        finally:
            self._flush_outbox()
            self._outbox = None

    def _read_batch(self) -> None:
        ctx = self._ctx
        stats = ctx.stats
        sock = self.sock
        watch = ctx.watch_backlog
        buf = self._buf
        view = self._view
        limit = ctx.limits.max_message_size
        local = self.local
        for i in range(MAX_READS_PER_WAKEUP):
            try:
                if watch and not i % SAMPLE_EVERY:
                    n, addr = self._sample(ctx)
                else:
                    n, addr = sock.recvfrom_into(buf)
            except (BlockingIOError, InterruptedError):
                if watch:
                    # Drained: nothing waits now. Without this the last reading of a burst
                    # would stand until the next datagram, for TCP requests too.
                    ctx.delay = ctx.backlog = 0.0
                return
            except OSError as exc:
                # e.g. ECONNREFUSED from an ICMP port unreachable caused by an earlier
                # sendto: it concerns that send, not this socket; keep reading.
                if sock.fileno() < 0:
                    return
                log.debug("udp recv error on %s: %s", local, exc)
                continue
            stats.bytes_in += n
            if n > limit:
                stats.oversize += 1
                stats.dropped += 1
                continue
            data = bytes(view[:n])
            if maybe_stun(buf[0]) and is_stun(data):
                # RFC 5626 §4.4.2 STUN keep-alive (never SIP: SIP starts with a letter).
                self._stun(data, addr)
                continue
            if not n or (buf[0] in _BLANK and not data.strip(_BLANK)):
                # RFC 5626 §4.4.2 / common NAT keep-alives over UDP ("\r\n\r\n", a NUL or a
                # blank): nothing to parse and nothing to answer.
                continue
            flow = self._flows.get(addr)
            if flow is None:
                flow = self._flow(addr)
            ctx.deliver(data, flow)

    def _sample(self, ctx: TransportContext) -> tuple[int, tuple[str, int]]:
        """One read that also measures the queue: how long this datagram waited in the
        kernel (its arrival timestamp against the wall clock, the clock the kernel
        stamps with), and the queue's fill."""
        n, ancillary, _flags, addr = self.sock.recvmsg_into([self._buf], _ANCILLARY)
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(data) >= 16:
                sec, nsec = struct.unpack_from("qq", data)
                ctx.delay = max(0.0, time.time() - (sec + nsec * 1e-9))
        ctx.backlog = self.backlog()
        return n, addr

    def _flow(self, addr: tuple[str, int]) -> Flow:
        flows = self._flows
        if len(flows) >= FLOW_CACHE:
            flows.clear()
        flow = flows[addr] = Flow("UDP", self.local, (addr[0], addr[1]))
        return flow

    def _stun(self, data: bytes, addr: tuple[str, int]) -> None:
        answer = binding_response(data, (addr[0], addr[1]))
        if answer is None:
            return  # STUN that needs no answer (an indication, a response)
        self._ctx.stats.stun_requests += 1
        with contextlib.suppress(OSError):  # lost like any datagram; the UA sends again
            self.sock.sendto(answer, addr)

    def _flush_outbox(self) -> None:
        out = self._outbox
        if out:
            self._outbox = []
            for data, remote in out:
                self._send_now(data, remote)

    def sendto(self, data: bytes, remote: tuple[str, int]) -> bool:
        """Send one datagram, or hold it while a read batch is read (``_on_readable``):
        then True means queued, and a failure is counted when it is sent, as a lost
        datagram (UDP is lossy; the transaction layer retransmits)."""
        out = self._outbox
        if out is None:
            return self._send_now(data, remote)
        out.append((data, remote))
        if len(out) >= OUTBOX_FLUSH:
            self._flush_outbox()
        return True

    def _send_now(self, data: bytes, remote: tuple[str, int]) -> bool:
        stats = self._ctx.stats
        try:
            self.sock.sendto(data, remote)
        except OSError as exc:
            # EAGAIN (socket buffer full), EMSGSIZE, unreachable...: never raise into the
            # engine; UDP is lossy anyway and the transaction layer retransmits.
            stats.dropped += 1
            if not isinstance(exc, BlockingIOError):
                stats.send_errors += 1
                log.debug("udp send to %s failed: %s", remote, exc)
            return False
        stats.messages_out += 1
        stats.bytes_out += len(data)
        return True

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            self._loop.remove_reader(self.sock.fileno())
            self.sock.close()
