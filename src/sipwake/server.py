"""Composition root: ``Server(config)`` wires transports, the engine, the transaction layer
and the application together. Nothing else constructs these."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import msgspec

from sipwake.api.metrics import Metrics, multiprocess_dir
from sipwake.api.server import ApiServer
from sipwake.app.auth import Authenticator
from sipwake.app.calls import Calls
from sipwake.app.cluster import ClusterNode
from sipwake.app.declines import Declines
from sipwake.app.edge import EdgeService
from sipwake.app.engine import Engine
from sipwake.app.messages import MessageService
from sipwake.app.proxy import Proxy
from sipwake.app.records import call_rules
from sipwake.app.refresh import RefreshService
from sipwake.app.register import Registrar
from sipwake.app.resume import Resumer
from sipwake.app.router import DRAIN_RETRY_AFTER, SipApp
from sipwake.app.targets import Flows, ref_flow
from sipwake.app.timeline import Timelines
from sipwake.app.wake import Pusher
from sipwake.config import Config, SetupError
from sipwake.ids import new_id
from sipwake.policy.overload import OverloadLimits
from sipwake.policy.proxying import Me
from sipwake.policy.pushbudget import PushBudget
from sipwake.policy.pushparams import parse_push_target, provider_family
from sipwake.policy.registrar import RegistrarPolicy
from sipwake.preflight import preflight
from sipwake.push.dispatcher import PushDispatcher
from sipwake.services import ApiServices
from sipwake.sip.timers import TimerConfig
from sipwake.sip.transactions.layer import TransactionLayer
from sipwake.storage import Stores, open_stores
from sipwake.storage.base import StorageError
from sipwake.transport import tls
from sipwake.transport.manager import TransportManager

log = logging.getLogger("sipwake.server")

DRAIN_LINGER = 2.0  # seconds kept after the last caller got its answer, for ACK/BYE
BINDINGS_SCAN_LIMIT = 1_000_000  # AoRs walked for sipwake_bindings (at most every 10 s)
WORKER_SAMPLE_INTERVAL = 5.0  # seconds between a worker's samples in multiprocess mode


@dataclass(frozen=True, slots=True)
class Bound:
    transport: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport.lower()}:{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class WorkerSlot:
    """Which of ``count`` worker processes this is (``sipwake serve --workers``)."""

    index: int
    count: int


class Server:
    """Everything one node runs. ``start()`` opens the stores and sockets."""

    def __init__(self, config: Config, worker: WorkerSlot | None = None) -> None:
        self.config = config
        # Every file the config names is loaded first: a bad one is a SetupError naming
        # its key, never an [Errno 2] or [SSL] PEM lib from deep inside.
        self.preflight = preflight(config)
        self.worker = worker
        # Every worker is a node of its own: it owns its connections and transactions.
        self.node_id = config.server.node_name + (f".w{worker.index}" if worker else "")
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
            overload=_overload_limits(config),
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
            max_connections=sip.max_connections,
            max_connections_per_ip=sip.max_connections_per_ip,
            message_timeout=sip.message_timeout,
            tls_handshake_timeout=sip.tls_handshake_timeout,
        )
        self.engine.sender = self.transport
        self.bound: list[Bound] = []
        self.private: list[Bound] = []  # a worker's own sockets, advertised in Via/RR
        self.cluster: ClusterNode | None = None
        self.stores: Stores | None = None
        self.app: SipApp | None = None
        self.edge: EdgeService | None = None
        self.refresh: RefreshService | None = None
        self.calls: Calls | None = None
        self.declines: Declines | None = None
        self.timelines = Timelines(config.api.timeline_size)
        self.pusher: Pusher | None = None
        self.messages: MessageService | None = None
        self.dispatcher: PushDispatcher | None = None
        self.decline_base = config.api.public_url
        self.metrics = Metrics(multiprocess_dir=multiprocess_dir())
        self.metrics.add_sampler(self._sample_metrics)
        for cred in self.preflight.credentials:
            if cred.not_after is not None:
                self.metrics.set_credential_expiry(cred.key, cred.not_after)
        stats = self.transport.stats
        self.metrics.watch_keepalives(lambda: {"stun": stats.stun_requests, "crlf": stats.pings})
        self.metrics.watch_transport_refusals(
            lambda: {
                "connection_limit": stats.connections_refused,
                "message_timeout": stats.message_timeouts,
            }
        )
        self.api: ApiServer | None = None
        self.api_address: tuple[str, int] | None = None
        self._purger: asyncio.Task[None] | None = None
        self._sampler: asyncio.Task[None] | None = None
        self.registrar: Registrar | None = None
        self.background: set[asyncio.Task[Any]] = set()  # e.g. a replaced dispatcher closing

    async def start(self) -> None:
        """Open the store, start the API, listen, wire the SIP application, and take back
        the calls held before a restart. A problem stops start-up with a SetupError
        naming the configuration key."""
        stores = await self._open_stores()
        await self._start_api()
        advertised, public, me = await self._listen()
        await self._wire(stores, advertised, public, me)

    async def _open_stores(self) -> Stores:
        cfg = self.config
        try:
            self.stores = stores = await open_stores(cfg.storage.url, node_id=self.node_id)
            # Redis connects lazily: ask it something now, so an unreachable server stops
            # start-up with its URL rather than failing the first REGISTER.
            await stores.bindings.count()
            if stores.cluster.shared and not cfg.auth.secret:
                # Tokens one node signs (Record-Route, owner routes, nonces, decline
                # links) are checked by another: every node needs the same key.
                self.secret = await stores.cluster.shared_secret(self.secret)
        except (StorageError, OSError) as exc:
            raise SetupError(
                "storage.url", f"{cfg.storage.redacted_url()}: cannot open: {_reason(exc)}"
            ) from None
        return stores

    async def _start_api(self) -> None:
        cfg = self.config
        worker = self.worker
        if cfg.api.enabled and (worker is None or worker.index == 0):
            self.api = ApiServer(
                host=cfg.api.host,
                port=cfg.api.port,
                decline=ApiServices(self),
                admin=ApiServices(self),
                metrics=self.metrics,
                health=lambda: True,
                tls_cert=cfg.tls.cert_file if cfg.api.tls else "",
                tls_key=cfg.tls.key_file if cfg.api.tls else "",
                admin_token=cfg.api.admin_token,
            )
            try:
                api_host, api_port = await self.api.start()
            except OSError as exc:
                raise SetupError(
                    "api.port", f"cannot listen on {cfg.api.host}:{cfg.api.port}: {_reason(exc)}"
                ) from None
            self.api_address = (api_host, api_port)
            self.decline_base = cfg.api.public_url or self.api.url
        elif cfg.api.enabled:
            # Worker 0 serves the API; the others only need its address for links.
            scheme = "https" if cfg.api.tls else "http"
            api_host = f"[{cfg.api.host}]" if ":" in cfg.api.host else cfg.api.host
            self.decline_base = cfg.api.public_url or f"{scheme}://{api_host}:{cfg.api.port}"

    async def _listen(
        self,
    ) -> tuple[dict[str, tuple[str, int]], dict[str, tuple[str, int]], Me]:
        """Bind every listener; what we advertise in Via / Record-Route, where phones
        register (the push payload), and who we are (hosts and ports)."""
        cfg = self.config
        worker = self.worker
        advertised: dict[str, tuple[str, int]] = {}  # in Via / Record-Route
        public: dict[str, tuple[str, int]] = {}  # where phones register (push payload)
        hosts = set(self.domains) | {h.lower() for h in _local_names()}
        ports: set[int] = set()
        for i, lst in enumerate(cfg.listen):
            transport = lst.transport.upper()
            try:
                host, port = await self.transport.listen(
                    transport, lst.host, lst.port, reuse_port=worker is not None
                )
            except OSError as exc:
                where = f"[{lst.host}]" if ":" in lst.host else lst.host
                raise SetupError(
                    f"listen[{i}]",
                    f"cannot listen on {lst.transport} {where}:{lst.port}: {_reason(exc)}",
                ) from None
            self.bound.append(Bound(transport, host, port))
            adv_host, adv_port = lst.advertised if lst.advertise else (host, port)
            if adv_host in ("0.0.0.0", "::"):
                adv_host = cfg.server.domains[0]
            adv_host = adv_host.strip("[]")
            public.setdefault(transport, (adv_host, adv_port or port))
            hosts |= {host.strip("[]").lower(), adv_host.lower()}
            ports |= {port, adv_port or port}
            if worker is not None:
                # The shared port takes new requests from anyone; responses and in-dialog
                # requests must come back to this very process, so Via and Record-Route
                # name a port of its own (issue 5; the kernel's SO_REUSEPORT hash would
                # spread them across workers otherwise).
                _, port = await self.transport.listen(transport, lst.host, 0)
                self.private.append(Bound(transport, host, port))
                ports.add(port)
                advertised.setdefault(transport, (adv_host, port))
            else:
                advertised.setdefault(transport, (adv_host, adv_port or port))
        return advertised, public, Me(frozenset(hosts), frozenset(ports))

    async def _wire(
        self,
        stores: Stores,
        advertised: dict[str, tuple[str, int]],
        public: dict[str, tuple[str, int]],
        me: Me,
    ) -> None:
        """Build and connect the SIP application's parts (docs/architecture.md)."""
        cfg = self.config
        hosts = set(me.hosts)  # every name we answer to: the registrar's and router's domains
        cluster = ClusterNode(
            stores.cluster,
            node_id=self.node_id,
            route=_cluster_route(advertised),
            secret=self.secret,
            is_alive=lambda ref: self.transport.is_alive(ref_flow(ref)),
            wall=self.engine.wall,
        )
        if cluster.shared:
            await cluster.start()
        self.cluster = cluster
        auth = Authenticator(cfg.auth, stores.users, self.realm, self.secret, wall=self.engine.wall)
        reg = cfg.registrar
        # Key files are read here: a missing one stops start-up with the entry's name.
        self.dispatcher = PushDispatcher.from_config(cfg.push)
        self.dispatcher.metrics = self.metrics
        providers = self.dispatcher.supported()
        policy = RegistrarPolicy(
            min_expires=reg.min_expires,
            max_expires=reg.max_expires,
            default_expires=reg.default_expires,
            push_max_expires=reg.push_max_expires,
            max_bindings_per_aor=reg.max_bindings_per_aor,
            push_parser=parse_push_target,
            supported_providers=providers,
            vapid_public_key=self.dispatcher.vapid_public_key,
            pnsreg=cfg.push.pnsreg,
            flow_timer=reg.flow_timer,
        )
        registrar = Registrar(
            stores.bindings,
            policy,
            auth if cfg.auth.enabled else None,
            hosts,
            self.node_id,
            wall=self.engine.wall,
        )
        self.registrar = registrar
        if cluster.shared:
            registrar.track_flows = True
            self.transport.on_close(registrar.flow_closed)
        flows = Flows(self.transport, advertised)
        proxy = Proxy(self.engine, flows, me, secret=self.secret, id_source=new_id)
        push = cfg.push
        pusher: Pusher | None = None
        if push.configured:
            pusher = Pusher(
                dispatcher=self.dispatcher,
                store=stores.bindings,
                cfg=push,
                clock=self.engine.clock,
                flow_alive=cluster.flow_alive,
                sip_address=_preferred_address(public),
                secret=self.secret,
                decline_base=self.decline_base,
            )
        rules = call_rules(cfg)
        calls = Calls(
            self.engine,
            proxy,
            flows,
            rules,
            pusher=pusher,
            target_of=cluster.target,
            bus=cluster,
            missed_call_alert=push.missed_call_alert,
        )
        self.declines = Declines(calls, self.secret, self.engine.wall)
        self.engine.timers.append(calls)
        if pusher is not None:
            registrar.hooks.append(calls.on_registered)
            registrar.hooks.append(cluster.registered)
            cluster.on_registered = calls.on_registered
            cluster.on_decline = partial(self.declines.decline, forwarded=True)
            cluster.on_cancel = calls.cancel  # a CANCEL another node got (app/resume.py)
        # Every call's events feed its timeline (the log line, /admin/calls, the console).
        calls.observers.add(self.timelines.observe)
        self.timelines.metrics = self.metrics
        self.calls = calls
        self.pusher = pusher
        resumer = None
        if pusher is not None:  # only pushed calls are held, and so resumed (app/resume.py)
            resumer = Resumer(
                engine=self.engine,
                calls=calls,
                registry=stores.cluster,
                node=cluster,
                bindings=stores.bindings,
                flows=flows,
                limits=self.engine.limits,
            )
            cluster.on_peers_lost = resumer.on_peers_lost
        edge: EdgeService | None = None
        if cfg.edge is not None:
            edge = EdgeService(
                cfg=cfg.edge,
                engine=self.engine,
                proxy=proxy,
                calls=calls,
                store=stores.bindings,
                policy=policy,
                me=me,
                domains=self.domains,
                secret=self.secret,
                node_id=self.node_id,
                hooks=registrar.hooks,
            )
            try:
                await edge.start()
            except (OSError, ValueError) as exc:
                raise SetupError(
                    "edge.upstream", f"cannot reach {cfg.edge.upstream}: {exc}"
                ) from None
            if pusher is not None:
                pusher.on_binding_removed.append(edge.binding_removed)
        self.edge = edge
        refresh_cfg = cfg.push
        if cfg.edge is not None:
            # Edge mode: a binding lives as long as its upstream registration, which the
            # app must renew itself (we cannot answer the upstream's challenge), so the
            # refresh pushes start edge.refresh_before ahead of that end.
            refresh_cfg = msgspec.structs.replace(
                cfg.push, refresh_before=float(cfg.edge.refresh_before)
            )
        if cfg.push.configured and refresh_cfg.refresh_before > 0:
            self.refresh = RefreshService(
                dispatcher=self.dispatcher,
                store=stores.bindings,
                cfg=refresh_cfg,
                sip_address=_preferred_address(public),
                engine=self.engine,
            )
            self.engine.timers.append(self.refresh)
            registrar.hooks.append(self.refresh.on_registered)
        # SIP MESSAGE for sleeping devices: stored, alert-pushed, delivered on register.
        messages = MessageService(
            proxy=proxy,
            store=stores.messages,
            bindings=stores.bindings,
            cfg=cfg.message,
            max_message_size=cfg.sip.max_message_size,
            flow_alive=cluster.flow_alive,
            target_of=cluster.target,
            sip_address=_preferred_address(public),
            id_source=new_id,
            wall=self.engine.wall,
            clock=self.engine.now,
            rearm=self.engine.rearm,
            dispatcher=self.dispatcher if cfg.push.configured else None,
        )
        self.engine.timers.append(messages)
        registrar.hooks.append(messages.on_registered)
        self.messages = messages
        metrics = self.metrics
        parts = (self.engine, registrar, auth, pusher, calls, self.refresh, messages, edge)
        for part in parts:
            if part is not None:
                part.metrics = metrics
        self.app = SipApp(
            me=me,
            domains=hosts,
            registrar=registrar,
            proxy=proxy,
            calls=calls,
            bindings=stores.bindings,
            users=stores.users,
            auth=auth if cfg.auth.enabled else None,
            relay_foreign=cfg.proxy.relay_foreign,
            reveal_unknown_users=cfg.auth.reveal_unknown_users,
            # The same limits, counted apart: chat must not use up a call's budget.
            push_budget=_push_budget(cfg),
            message_budget=_push_budget(cfg),
            messages=messages,
            target_of=cluster.target,
            edge=edge,
            resumer=resumer,
        )
        self.engine.app = self.app
        self.engine.held_calls = calls.held_count
        self.engine.wake_awaited = calls.wake_awaited
        if self.engine.overload is not None:
            self.transport.watch_backlog()
            self.engine.udp_delay = self.transport.udp_delay
            self.engine.backlog = self.transport.udp_backlog
        self.engine.start()
        self.app.metrics = metrics
        self._purger = asyncio.get_running_loop().create_task(self._purge_loop())
        if self.worker is None or self.worker.index == 0:
            # One process walks the shared store for sipwake_bindings, at scrape time.
            self.metrics.add_async_sampler(self._count_bindings)
        if self.metrics.multiprocess_dir is not None:
            self._sampler = asyncio.get_running_loop().create_task(self._sample_loop())
        log.info("listening on %s", ", ".join(str(b) for b in self.bound))
        if resumer is not None:
            await resumer.start()  # calls held before a restart or by a dead node

    def _sample_metrics(self, metrics: Metrics) -> None:
        """Values read from elsewhere, for sipwake_open_connections and credential expiry."""
        metrics.set_connections(self.transport.connection_counts())
        if self.dispatcher is not None:
            for name, until in self.dispatcher.credential_expiry().items():
                metrics.set_credential_expiry(name, until)

    async def _count_bindings(self, metrics: Metrics) -> None:
        """sipwake_bindings by push provider, from the store (all nodes' bindings)."""
        if self.stores is None:
            return
        store = self.stores.bindings
        now = time.time()
        counts: dict[str, int] = {}
        try:
            for aor in await store.aors("", BINDINGS_SCAN_LIMIT):
                for b in await store.lookup(aor, now):
                    family = provider_family(b.push.provider) if b.push is not None else "none"
                    family = family if family in ("apns", "fcm", "webpush", "none") else "webhook"
                    counts[family] = counts.get(family, 0) + 1
        except StorageError as exc:
            log.warning("counting bindings for metrics failed: %s", exc)
            return
        metrics.set_bindings(counts)

    async def _sample_loop(self) -> None:
        """In a worker, values only this process sees are written to the shared files
        every few seconds (worker 0 renders them all at each scrape)."""
        while True:
            await asyncio.sleep(WORKER_SAMPLE_INTERVAL)
            self.metrics.sample()

    async def _purge_loop(self) -> None:
        """Delete expired bindings and stored messages now and then (they are already
        invisible to lookups; this reclaims space and counts the messages that expired)."""
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
            try:
                expired = await self.stores.messages.purge_expired(time.time())
            except StorageError as exc:
                log.warning("purge of expired messages failed: %s", exc)
                continue
            # Stored SIP MESSAGEs whose message.store_for ran out before their device woke.
            self.metrics.instant_message("expired", expired)

    async def drain(self, timeout: float, hurry: asyncio.Event | None = None) -> None:
        """Stop taking new INVITEs (503 + Retry-After), give the calls in progress up to
        ``timeout`` seconds (or until ``hurry`` is set) to get their final answers, then
        answer every caller still waiting with 503 + Retry-After (RFC 3261 §21.5.4)."""
        calls = self.calls
        if calls is None:
            return
        waiting = len(calls.waiting_callers())
        log.info("draining: %d calls without a final answer, up to %.1f s", waiting, timeout)
        idle = asyncio.ensure_future(calls.idle())
        waiters: set[asyncio.Future[Any]] = {idle}
        if hurry is not None:
            waiters.add(asyncio.ensure_future(hurry.wait()))
        start = self.engine.now()
        if timeout > 0:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if idle.done() and waiting and (hurry is None or not hurry.is_set()):
            # Calls answered during the drain: their ACK (and a short call's BYE) still
            # cross us. Longer dialogs lose this hop when the process exits: the price
            # of Record-Routing through one process (docs/operating.md).
            linger = min(DRAIN_LINGER, max(0.0, timeout - (self.engine.now() - start)))
            await asyncio.sleep(linger)
        for waiter in waiters:
            waiter.cancel()
        answered = calls.shutdown(DRAIN_RETRY_AFTER)
        if answered:
            log.warning("drained: %d callers answered 503 (their calls were not over)", answered)
            # The answers are queued on their connections: let them leave before closing.
            await asyncio.sleep(0.2)

    async def stop(self) -> None:
        if self._purger is not None:
            self._purger.cancel()
        if self._sampler is not None:
            self._sampler.cancel()
            self.metrics.sample()  # a worker's last counts reach the shared files
        for task in list(self.background):
            task.cancel()
        if self.cluster is not None:
            await self.cluster.close()  # the last held-call writes land first
        if self.api is not None:
            await self.api.close()
        if self.edge is not None:
            await self.edge.close()
        if self.refresh is not None:
            await self.refresh.close()
        if self.messages is not None:
            await self.messages.close()
        if self.calls is not None:
            await self.calls.close()
        if self.dispatcher is not None:
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


def _reason(exc: BaseException) -> str:
    """An OS error's text without the errno and address noise (``address already in use``),
    anything else as it reads."""
    if isinstance(exc, OSError) and exc.errno:
        # asyncio wraps bind errors as "error while attempting to bind on address ...".
        return os.strerror(exc.errno).lower()
    return str(exc) or type(exc).__name__


def _preferred_address(advertised: dict[str, tuple[str, int]]) -> tuple[str, int, str]:
    """Where a woken app should register (put in the push payload): the most secure
    transport we offer."""
    for transport in ("TLS", "WSS", "TCP", "WS", "UDP"):
        if transport in advertised:
            host, port = advertised[transport]
            return host, port, transport
    raise ValueError("no listener")


def _cluster_route(advertised: dict[str, tuple[str, int]]) -> str:
    """How peer nodes reach us: TCP first (no size limit, one connection reused for every
    call between two nodes), else UDP, else TLS."""
    for transport in ("TCP", "UDP", "TLS"):
        if transport in advertised:
            host, port = advertised[transport]
            host = f"[{host}]" if ":" in host else host
            return f"{host}:{port};transport={transport.lower()}"
    raise ValueError("cluster nodes need a TCP, UDP or TLS listener to reach each other")


def _local_names() -> list[str]:
    names = ["localhost", "127.0.0.1", "::1"]
    try:
        names.append(socket.gethostname())
    except OSError:
        pass
    return names


def _push_budget(config: Config) -> PushBudget:
    p = config.push
    return PushBudget(
        per_device=p.max_per_device,
        device_burst=p.device_burst,
        per_source=p.max_per_source,
        source_burst=p.source_burst,
        require_auth=p.require_auth_for_push,
    )


def _overload_limits(config: Config) -> OverloadLimits | None:
    o = config.overload
    if not o.enabled:
        return None
    return OverloadLimits(
        max_pending=o.max_pending,
        max_held=o.max_held_calls,
        max_lag=o.max_loop_lag,
        max_delay=o.max_udp_delay,
        max_backlog=o.max_udp_backlog,
        retry_after=o.retry_after,
    )
