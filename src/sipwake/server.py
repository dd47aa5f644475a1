"""Composition root: ``Server(config)`` wires transports, the engine, the transaction layer
and the application together. Nothing else constructs these."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from dataclasses import dataclass

from sipwake.app.auth import Authenticator
from sipwake.app.engine import Engine
from sipwake.app.proxy import Proxy
from sipwake.app.register import Registrar
from sipwake.app.router import SipApp
from sipwake.config import Config
from sipwake.policy.proxying import Me
from sipwake.policy.pushparams import parse_push_target
from sipwake.policy.registrar import RegistrarPolicy
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
        self._purger: asyncio.Task[None] | None = None

    async def start(self) -> None:
        cfg = self.config
        self.stores = await open_stores(cfg.storage.url, node_id=cfg.server.node_name)
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
        providers: frozenset[str] = frozenset()  # push providers arrive with push support
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
        )
        self.engine.app = self.app
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
        await self.transport.close()
        await self.engine.close()
        if self.stores is not None:
            await self.stores.close()

    def address(self, transport: str) -> tuple[str, int]:
        for b in self.bound:
            if b.transport == transport.upper():
                return b.host, b.port
        raise LookupError(f"no {transport} listener")


def _local_names() -> list[str]:
    names = ["localhost", "127.0.0.1", "::1"]
    try:
        names.append(socket.gethostname())
    except OSError:
        pass
    return names


async def run(config: Config) -> None:
    """Run until SIGINT/SIGTERM."""
    server = Server(config)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # Tests and supervisors wait for this line on stdout before sending traffic.
    print(f"sipwake ready: {' '.join(str(b) for b in server.bound)}", flush=True)
    try:
        await stop.wait()
    finally:
        await server.stop()


def run_demo(json_output: bool = False) -> int:
    from sipwake.emulate.demo import main as demo_main

    return demo_main(json_output=json_output)
