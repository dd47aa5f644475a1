"""Composition root: ``Server(config)`` wires transports, the engine, the transaction layer
and the application together. Nothing else constructs these."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from dataclasses import dataclass

from sipwake.app.engine import Engine
from sipwake.app.local import LocalApp
from sipwake.config import Config
from sipwake.sip.codec import Limits
from sipwake.sip.timers import TimerConfig
from sipwake.sip.transactions.layer import TransactionLayer
from sipwake.sip.uri import split_hostport
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
    def __init__(self, config: Config) -> None:
        self.config = config
        sip = config.sip
        self.limits = Limits(
            max_message_size=sip.max_message_size,
            max_headers=sip.max_headers,
            max_line_length=sip.max_line_length,
        )
        self.txn = TransactionLayer(TimerConfig(t1=sip.t1, t2=sip.t2, t4=sip.t4), new_id)
        self.engine = Engine(
            self.txn,
            limits=self.limits,
            server_header=sip.user_agent,
            log_transactions=config.server.log_level == "debug",
            tag_source=new_id,
        )
        self.app = LocalApp(config.server.domains, _local_names())
        self.engine.app = self.app
        tls_cfg = config.tls
        needs_tls = any(lst.transport in ("tls", "wss") for lst in config.listen)
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

    async def start(self) -> None:
        for lst in self.config.listen:
            host, port = await self.transport.listen(lst.transport.upper(), lst.host, lst.port)
            self.bound.append(Bound(lst.transport.upper(), host, port))
            self.app.add_own_host(host)
            if lst.advertise:
                self.app.add_own_host(split_hostport(lst.advertise, "advertise")[0])
        log.info("listening on %s", ", ".join(str(b) for b in self.bound))

    async def stop(self) -> None:
        await self.transport.close()
        await self.engine.close()

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
