"""Composition root: ``Server(config)`` wires transports, the engine, the transaction layer
and the application together. Nothing else constructs these."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import os
import signal
import socket
import time
from dataclasses import dataclass
from typing import Any

from sipwake.api.metrics import Metrics
from sipwake.api.server import ApiServer
from sipwake.app.auth import Authenticator
from sipwake.app.engine import Engine
from sipwake.app.proxy import Proxy
from sipwake.app.register import Registrar
from sipwake.app.router import SipApp, binding_target
from sipwake.app.wake import WakeService
from sipwake.config import Config
from sipwake.policy.decline import DeclineResult
from sipwake.policy.proxying import Me
from sipwake.policy.pushparams import parse_push_target
from sipwake.policy.registrar import RegistrarPolicy
from sipwake.push.dispatcher import PushDispatcher
from sipwake.sip.timers import TimerConfig
from sipwake.sip.transactions.layer import TransactionLayer
from sipwake.storage import Stores, open_stores
from sipwake.storage.base import StorageError
from sipwake.transport import tls
from sipwake.transport.manager import TransportManager

log = logging.getLogger("sipwake.server")


def new_id() -> str:
    """Random token for tags and branch suffixes (RFC 3261 §19.3: globally unique,
    cryptographically random where it matters)."""
    return os.urandom(8).hex()


@dataclass(frozen=True, slots=True)
class Bound:
    transport: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport.lower()}:{host}:{self.port}"


class Server:
    """Everything one node runs. ``start()`` opens the stores and sockets."""

    def __init__(self, config: Config) -> None:
        self.config = config
        sip = config.sip
        self.limits = sip.limits()
        self.domains = {d.lower() for d in config.server.domains}
        self.realm = config.auth.realm or config.server.domains[0]
        # One key for nonces and Record-Route flow tokens; random when not configured.
        self.secret = config.auth.secret.encode() if config.auth.secret else os.urandom(32)
        self.txn = TransactionLayer(TimerConfig(t1=sip.t1, t2=sip.t2, t4=sip.t4), new_id)
        self.engine = Engine(
            self.txn,
            limits=self.limits,
            server_header=sip.user_agent,
            log_transactions=config.server.log_level == "debug",
            tag_source=new_id,
        )
        tls_cfg = config.tls
        needs_tls = any(lst.secure for lst in config.listen)
        server_ctx = (
            tls.server_context(
                tls_cfg.cert_file,
                tls_cfg.key_file,
                ca_file=tls_cfg.ca_file or None,
                verify_client=tls_cfg.verify_client,
            )
            if needs_tls
            else None
        )
        client_ctx = tls.client_context(
            ca_file=tls_cfg.ca_file or None, verify=tls_cfg.verify_server
        )
        self.transport = TransportManager(
            self.engine.on_message,
            limits=self.limits,
            idle_timeout=sip.idle_timeout,
            tls_server=server_ctx,
            tls_client=client_ctx,
        )
        self.engine.sender = self.transport
        self.bound: list[Bound] = []
        self.stores: Stores | None = None
        self.app: SipApp | None = None
        self.wake: WakeService | None = None
        self.dispatcher: PushDispatcher | None = None
        self.decline_base = config.api.public_url
        self.metrics = Metrics()
        self.api: ApiServer | None = None
        self.api_address: tuple[str, int] | None = None
        self._purger: asyncio.Task[None] | None = None

    async def start(self) -> None:
        cfg = self.config
        self.stores = await open_stores(cfg.storage.url, node_id=cfg.server.node_name)
        if cfg.api.enabled:
            self.api = ApiServer(
                host=cfg.api.host,
                port=cfg.api.port,
                decline=_Services(self),
                admin=_Services(self),
                metrics=self.metrics,
                health=lambda: True,
                tls_cert=cfg.tls.cert_file if cfg.api.tls else "",
                tls_key=cfg.tls.key_file if cfg.api.tls else "",
                admin_token=cfg.api.admin_token,
            )
            api_host, api_port = await self.api.start()
            self.api_address = (api_host, api_port)
            self.decline_base = cfg.api.public_url or self.api.url
        advertised: dict[str, tuple[str, int]] = {}
        hosts = set(self.domains) | {h.lower() for h in _local_names()}
        ports: set[int] = set()
        for lst in cfg.listen:
            transport = lst.transport.upper()
            host, port = await self.transport.listen(transport, lst.host, lst.port)
            self.bound.append(Bound(transport, host, port))
            adv_host, adv_port = lst.advertised if lst.advertise else (host, port)
            if adv_host in ("0.0.0.0", "::"):
                adv_host = cfg.server.domains[0]
            adv = (adv_host.strip("[]"), adv_port or port)
            advertised.setdefault(transport, adv)
            hosts |= {host.strip("[]").lower(), adv[0].lower()}
            ports |= {port, adv[1]}
        me = Me(frozenset(hosts), frozenset(ports))
        stores = self.stores
        auth = Authenticator(cfg.auth, stores.users, self.realm, self.secret)
        reg = cfg.registrar
        # Key files are read here: a missing one stops start-up with the entry's name.
        self.dispatcher = PushDispatcher.from_config(cfg.push)
        providers = self.dispatcher.supported()
        policy = RegistrarPolicy(
            min_expires=reg.min_expires,
            max_expires=reg.max_expires,
            default_expires=reg.default_expires,
            push_max_expires=reg.push_max_expires,
            max_bindings_per_aor=reg.max_bindings_per_aor,
            push_parser=parse_push_target,
            supported_providers=providers,
        )
        registrar = Registrar(
            stores.bindings,
            policy,
            auth if cfg.auth.enabled else None,
            hosts,
            cfg.server.node_name,
        )
        proxy = Proxy(
            self.engine,
            self.transport,
            me,
            advertised=advertised,
            secret=self.secret,
            id_source=new_id,
            timer_c=cfg.sip.timer_c,
            decline_ends_all=cfg.proxy.decline_ends_all,
        )
        wake: WakeService | None = None
        if cfg.push.configured:
            wake = WakeService(
                proxy=proxy,
                dispatcher=self.dispatcher,
                store=stores.bindings,
                cfg=cfg.push,
                is_alive=self.transport.is_alive,
                target_of=binding_target,
                sip_address=_preferred_address(advertised),
                secret=self.secret,
                decline_base=self.decline_base,
            )
            registrar.hooks.append(wake.on_registered)
        self.wake = wake
        metrics = self.metrics
        for part in (self.engine, registrar, auth, wake):
            if part is not None:
                part.metrics = metrics
        self.app = SipApp(
            me=me,
            domains=hosts,
            registrar=registrar,
            proxy=proxy,
            bindings=stores.bindings,
            users=stores.users,
            auth=auth if cfg.auth.enabled else None,
            relay_foreign=cfg.proxy.relay_foreign,
            reveal_unknown_users=cfg.auth.reveal_unknown_users,
            wake=wake,
        )
        self.engine.app = self.app
        self.app.metrics = metrics
        self._purger = asyncio.get_running_loop().create_task(self._purge_loop())
        log.info("listening on %s", ", ".join(str(b) for b in self.bound))

    async def _purge_loop(self) -> None:
        """Delete expired bindings from the store now and then (they are already invisible
        to lookups; this only reclaims space)."""
        assert self.stores is not None
        while True:
            await asyncio.sleep(self.config.registrar.purge_interval)
            try:
                removed = await self.stores.bindings.purge_expired(time.time())
            except StorageError as exc:
                log.warning("purge of expired bindings failed: %s", exc)
                continue
            if removed:
                log.info("purged %d expired bindings", removed)

    async def stop(self) -> None:
        if self._purger is not None:
            self._purger.cancel()
        if self.api is not None:
            await self.api.close()
        if self.wake is not None:
            await self.wake.close()
        elif self.dispatcher is not None:
            await self.dispatcher.close()
        await self.transport.close()
        await self.engine.close()
        if self.stores is not None:
            await self.stores.close()

    def address(self, transport: str) -> tuple[str, int]:
        for b in self.bound:
            if b.transport == transport.upper():
                return b.host, b.port
        raise LookupError(f"no {transport} listener")


class _Services:
    """The API's view of the server: decline links and read-only admin listings."""

    def __init__(self, server: Server) -> None:
        self.server = server

    def decline(self, call_id: str, token: str, reason: str) -> DeclineResult:
        wake = self.server.wake
        if wake is None:
            return DeclineResult(404, "push is not configured")
        return wake.decline(call_id, token, reason)

    async def bindings(self, aor: str) -> list[dict[str, Any]]:
        assert self.server.stores is not None
        found = await self.server.stores.bindings.lookup(aor, time.time())
        return [dataclasses.asdict(b) for b in found]

    def held_calls(self) -> list[dict[str, Any]]:
        wake = self.server.wake
        return wake.held_calls() if wake is not None else []


def _preferred_address(advertised: dict[str, tuple[str, int]]) -> tuple[str, int, str]:
    """Where a woken app should register (put in the push payload): the most secure
    transport we offer."""
    for transport in ("TLS", "WSS", "TCP", "WS", "UDP"):
        if transport in advertised:
            host, port = advertised[transport]
            return host, port, transport
    raise ValueError("no listener")


def _local_names() -> list[str]:
    names = ["localhost", "127.0.0.1", "::1"]
    try:
        names.append(socket.gethostname())
    except OSError:
        pass
    return names


def tune_gc() -> None:
    """Keep the cycle collector off the hot path. Everything alive after start-up
    (modules, the loaded bindings) is moved out of its reach with ``gc.freeze()``, and
    young collections run every 50 000 net allocations instead of 700: per message we
    allocate hundreds of short-lived objects that reference counting frees anyway.
    Measured on the REGISTER path: 236 -> 153 us per request (bench/README.md). The
    per-call paths avoid reference cycles so that this stays true."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


async def run(config: Config) -> None:
    """Run until SIGINT/SIGTERM."""
    server = Server(config)
    await server.start()
    tune_gc()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # Tests and supervisors wait for this line on stdout before sending traffic.
    ready = " ".join(str(b) for b in server.bound)
    if server.api_address is not None:
        ready += f" api:{server.api_address[0]}:{server.api_address[1]}"
    print(f"sipwake ready: {ready}", flush=True)
    try:
        await stop.wait()
    finally:
        await server.stop()


def run_demo(json_output: bool = False, transport: str = "udp") -> int:
    from sipwake.emulate.demo import main as demo_main

    return demo_main(json_output=json_output, transport=transport)
