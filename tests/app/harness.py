"""The whole app ring without sockets, on a fake clock.

The real engine, transaction layer, registrar, router, call runner, forwarder and pusher,
wired as server.py wires them, with three stand-ins at the edges: a ``FakeClock`` (the
engine's one ``call_at``, moved by hand), a loopback ``Net`` (the transport: records what
is sent, says which connections are open) and a ``RecordingProvider`` (the push service:
records each push, answers with the outcome the test chose)."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sipwake.app.calls import Calls
from sipwake.app.cluster import ClusterNode
from sipwake.app.declines import Declines
from sipwake.app.engine import Engine
from sipwake.app.events import CallEvent
from sipwake.app.messages import MessageService
from sipwake.app.proxy import Proxy
from sipwake.app.register import Registrar
from sipwake.app.resume import Resumer
from sipwake.app.router import SipApp
from sipwake.app.targets import Flows, binding_target
from sipwake.app.wake import Pusher
from sipwake.config import MessageConfig, PushConfig
from sipwake.policy.call import CallRules
from sipwake.policy.proxying import Me
from sipwake.policy.pushparams import parse_push_target
from sipwake.policy.registrar import RegistrarPolicy
from sipwake.push.base import Delivered, PushOutcome, PushRequest
from sipwake.push.dispatcher import PushDispatcher, Route
from sipwake.sip.codec import parse_message
from sipwake.sip.message import Request, Response, make_response
from sipwake.sip.timers import TimerConfig
from sipwake.sip.transactions.layer import TransactionLayer
from sipwake.storage.cluster import LocalCluster
from sipwake.storage.inbox import MemoryMessageStore
from sipwake.storage.memory import MemoryStore
from sipwake.transport.flow import Flow

DOMAIN = "example.com"
AOR = f"sip:bob@{DOMAIN}"
US = ("192.0.2.10", 5060)  # our listener
CALLER = Flow("UDP", US, ("198.51.100.7", 5070))


def new_id() -> str:
    return os.urandom(6).hex()


class _Handle:
    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """Monotonic time that moves only when the test says; wall time follows it."""

    def __init__(self, start: float = 1000.0, wall_ahead: float = 0.0) -> None:
        self.t = start
        # The registrar dates bindings by the real wall clock (binding expiry outlives
        # the process), so the fake wall clock starts there (``wall_ahead`` later: a
        # process started after another one's death).
        self._wall0 = time.time() + wall_ahead - start
        self._heap: list[tuple[float, int, Callable[[], None], _Handle]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self.t

    def wall(self) -> float:
        return self._wall0 + self.t

    def call_at(self, when: float, callback: Callable[[], None]) -> _Handle:
        handle = _Handle()
        heapq.heappush(self._heap, (when, next(self._seq), callback, handle))
        return handle

    def pending(self) -> int:
        """Timers armed and not cancelled (the engine keeps at most one)."""
        return sum(1 for *_, h in self._heap if not h.cancelled)

    async def advance(self, seconds: float) -> None:
        """Move time forward, firing each due timer at its own moment."""
        end = self.t + seconds
        while self._heap and self._heap[0][0] <= end:
            when, _, callback, handle = heapq.heappop(self._heap)
            if handle.cancelled:
                continue
            self.t = max(self.t, when)
            callback()
            await settle()
        self.t = end
        await settle()


async def settle() -> None:
    """Let every task that can run now run (pushes, lookups, registrations)."""
    for _ in range(30):
        await asyncio.sleep(0)


class Net:
    """The transport: what was sent where, and which connections are open."""

    def __init__(self) -> None:
        self.sent: list[tuple[Flow, Request | Response]] = []
        self.open: set[int] = set()
        self._conn = itertools.count(100)

    def send(self, flow: Flow, data: bytes) -> bool:
        self.sent.append((flow, parse_message(data, stream=flow.reliable)))
        return True

    def is_alive(self, flow: Flow) -> bool:
        return flow.conn_id in self.open

    async def connect(self, transport: str, host: str, port: int) -> Flow:
        raise OSError(f"no route to {host}:{port} in the test network")

    def connection(self, transport: str, remote: tuple[str, int]) -> Flow:
        conn = next(self._conn)
        self.open.add(conn)
        return Flow(transport, US, remote, conn)

    def requests(self, flow: Flow, method: str | None = None) -> list[Request]:
        return [
            m
            for f, m in self.sent
            if f.remote == flow.remote
            and isinstance(m, Request)
            and (method is None or m.method == method)
        ]

    def statuses(self, flow: Flow) -> list[int]:
        return [
            m.status for f, m in self.sent if f.remote == flow.remote and isinstance(m, Response)
        ]


class RecordingProvider:
    """The push service: records each push; ``outcomes`` by token, Delivered otherwise."""

    name = "apns-test"

    def __init__(self) -> None:
        self.sent: list[PushRequest] = []
        self.outcomes: dict[str, PushOutcome] = {}

    async def send(self, request: PushRequest, now: float) -> PushOutcome:
        self.sent.append(request)
        return self.outcomes.get(request.target.prid, Delivered("id"))

    async def close(self) -> None:
        return None

    def to(self, token: str) -> list[PushRequest]:
        return [r for r in self.sent if r.target.prid == token]


@dataclass
class Device:
    """A phone: its token and instance, and the flow it registered over last."""

    name: str
    flow: Flow
    n: int
    cseq: int = 1
    events: list[str] = field(default_factory=list)

    @property
    def token(self) -> str:
        return f"{self.n:02x}" * 32  # an APNs device token: 64 hex digits


class Rig:
    def __init__(
        self,
        rules: CallRules | None = None,
        *,
        messages: MessageConfig | None = None,
        store: MemoryStore | None = None,
        registry: LocalCluster | None = None,
        wall_ahead: float = 0.0,
        node_id: str = "node1",
    ) -> None:
        """``store`` and ``registry`` (the held calls) outlive a Rig: a second Rig on the
        same ones is the process restarted after the first one died, or, with another
        ``node_id`` on a shared registry, another node alive beside it."""
        self.clock = FakeClock(wall_ahead=wall_ahead)
        self.net = Net()
        self.push = RecordingProvider()
        self.events: list[CallEvent] = []
        self.store = store if store is not None else MemoryStore()
        self.registry = registry if registry is not None else LocalCluster(self.clock.wall)
        txn = TransactionLayer(TimerConfig(), new_id)
        engine = Engine(txn, tag_source=new_id, clock=self.clock)
        engine.sender = self.net
        self.engine = engine
        me = Me(frozenset({US[0], DOMAIN}), frozenset({US[1]}))
        dispatcher = PushDispatcher([Route("apns", "", self.push)])
        registrar = Registrar(
            self.store,
            RegistrarPolicy(
                push_parser=parse_push_target, supported_providers=dispatcher.supported()
            ),
            None,
            {DOMAIN, US[0]},
            wall=self.clock.wall,
        )
        flows = Flows(self.net, {"UDP": US, "TCP": US})
        proxy = Proxy(engine, flows, me, secret=b"s" * 32, id_source=new_id)
        pusher = Pusher(
            dispatcher=dispatcher,
            store=self.store,
            cfg=PushConfig(),
            clock=self.clock,
            flow_alive=lambda ref: ref.conn_id in self.net.open,
            sip_address=(US[0], US[1], "UDP"),
            secret=b"s" * 32,
            decline_base="https://api.example.com",
        )
        node = ClusterNode(
            self.registry,
            node_id=node_id,
            route=f"{US[0]}:{US[1]};transport=tcp",
            secret=b"s" * 32,
            is_alive=lambda ref: ref.conn_id in self.net.open,
        )
        self.calls = Calls(
            engine,
            proxy,
            flows,
            rules or CallRules(hold_window=30, cancel_grace=30, live_timeout=2),
            pusher=pusher,
            bus=node,
        )
        self.declines = Declines(self.calls, b"s" * 32, self.clock.wall)
        self.resumer = Resumer(
            engine=engine,
            calls=self.calls,
            registry=self.registry,
            node=node,
            bindings=self.store,
            flows=flows,
            limits=engine.limits,
        )
        engine.timers.append(self.calls)
        engine.held_calls = self.calls.held_count  # the overload signals, as server.py
        engine.wake_awaited = self.calls.wake_awaited
        registrar.hooks.append(self.calls.on_registered)
        node.on_cancel = self.calls.cancel  # as server.py wires the bus
        self.calls.observers.add(self.events.append)
        self.inbox = MemoryMessageStore()
        self.messages: MessageService | None = None
        if messages is not None:
            # SIP MESSAGE for sleeping devices, wired as server.py wires it.
            self.messages = MessageService(
                proxy=proxy,
                store=self.inbox,
                bindings=self.store,
                cfg=messages,
                max_message_size=65535,
                flow_alive=lambda ref: ref.conn_id in self.net.open,
                target_of=binding_target,
                sip_address=(US[0], US[1], "UDP"),
                id_source=new_id,
                wall=self.clock.wall,
                clock=self.clock.now,
                rearm=engine.rearm,
                dispatcher=dispatcher,
            )
            engine.timers.append(self.messages)
            registrar.hooks.append(self.messages.on_registered)
        engine.app = SipApp(
            me=me,
            domains={DOMAIN, US[0]},
            registrar=registrar,
            proxy=proxy,
            calls=self.calls,
            bindings=self.store,
            users=self.store,
            auth=None,
            messages=self.messages,
            resumer=self.resumer,
        )
        self._devices = itertools.count(1)

    # -- phones -------------------------------------------------------------------------
    async def register(
        self,
        name: str,
        transport: str = "UDP",
        *,
        push: bool = True,
        dev: Device | None = None,
        contact_port: int | None = None,
        prid: str = "",
        until_answered: bool = False,
    ) -> Device:
        """A phone registers (again) from a new port: a new socket or connection, as an
        app woken by its push has. ``contact_port``: the Contact names that port instead
        of the one the phone sends from (a listener it may not even serve).
        ``until_answered``: run the loop only until the REGISTER's 200 is out, one turn at
        a time, instead of letting every task run."""
        n = dev.n if dev is not None else next(self._devices)
        port = 40000 + n * 100 + (dev.cseq if dev is not None else 0)
        remote = (f"10.0.0.{n}", port)
        flow = (
            Flow("UDP", US, remote)
            if transport == "UDP"
            else self.net.connection(transport, remote)
        )
        if dev is None:
            dev = Device(name, flow, n)
        dev.flow = flow
        prid = prid or dev.token  # "<voip>:voip&<alert>:remote" gives an alert token too
        pn = f";pn-provider=apns;pn-prid={prid};pn-param=TEAM.com.example.voip" if push else ""
        contact = (
            f"<sip:bob@{remote[0]}:{contact_port or remote[1]};transport={transport.lower()}{pn}>"
            f';+sip.instance="<urn:uuid:00000000-0000-0000-0000-{n:012d}>"'
        )
        reg = request_bytes(
            "REGISTER",
            f"sip:{DOMAIN}",
            flow,
            call_id=f"reg-{name}",
            cseq=dev.cseq,
            extra=[("Contact", contact), ("Expires", "3600")],
        )
        dev.cseq += 1
        self.engine.on_message(reg, flow)
        if until_answered:
            for _ in range(30):
                if self.net.statuses(flow):
                    break
                await asyncio.sleep(0)
        else:
            await settle()
        assert self.net.statuses(flow)[-1] == 200, self.net.statuses(flow)
        return dev

    async def answer(self, dev: Device, request: Request, status: int) -> None:
        """The phone answers a request it got (with a To tag on a final answer)."""
        tag = "phone-" + dev.name if status > 100 else None
        response = make_response(request, status, to_tag=tag)
        if 200 <= status < 300:
            response.headers.add("Contact", f"<sip:bob@{dev.flow.remote[0]}:{dev.flow.remote[1]}>")
        self.engine.on_message(response.serialise(), dev.flow)
        await settle()

    def invites(self, dev: Device) -> list[Request]:
        return _once(self.net.requests(dev.flow, "INVITE"))

    def cancels(self, dev: Device) -> list[Request]:
        return _once(self.net.requests(dev.flow, "CANCEL"))

    # -- the caller ---------------------------------------------------------------------
    async def call(self) -> Request:
        data = request_bytes("INVITE", AOR, CALLER, call_id="call-1", cseq=1)
        self.engine.on_message(data, CALLER)
        await settle()
        req = parse_message(data)
        assert isinstance(req, Request)
        return req

    async def cancel(self, invite: Request) -> None:
        cancel = Request("CANCEL", invite.uri)
        for name in ("via", "from", "to", "call-id"):
            cancel.headers.add(name, invite.headers.get(name) or "")
        cancel.headers.add("CSeq", f"{invite.cseq.seq} CANCEL")
        cancel.headers.add("Max-Forwards", "70")
        cancel.headers.add("Content-Length", "0")
        self.engine.on_message(cancel.serialise(), CALLER)
        await settle()

    def caller_got(self) -> list[int]:
        """Statuses the caller got for its INVITE, retransmissions folded."""
        out: list[int] = []
        for f, m in self.net.sent:
            if f.remote != CALLER.remote or not isinstance(m, Response):
                continue
            if m.cseq.method == "INVITE" and (not out or out[-1] != m.status):
                out.append(m.status)
        return out

    def kinds(self) -> list[str]:
        return [type(e).__name__ for e in self.events]


def request_bytes(
    method: str,
    ruri: str,
    flow: Flow,
    *,
    call_id: str,
    cseq: int,
    extra: list[tuple[str, str]] | None = None,
) -> bytes:
    host, port = flow.remote
    lines = [
        f"{method} {ruri} SIP/2.0",
        f"Via: SIP/2.0/{flow.transport} {host}:{port};branch=z9hG4bK{call_id}{cseq};rport",
        "Max-Forwards: 70",
        f"From: <sip:caller@{DOMAIN}>;tag=caller-{call_id}"
        if method != "REGISTER"
        else f"From: <{AOR}>;tag=reg-{call_id}",
        f"To: <{AOR}>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
        *(f"{k}: {v}" for k, v in extra or ()),
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _once(requests: list[Request]) -> list[Request]:
    """Retransmissions (Timer A/E over UDP) folded: one per Via branch."""
    seen: dict[str, Request] = {}
    for r in requests:
        seen.setdefault(r.headers.get("via") or "", r)
    return list(seen.values())
