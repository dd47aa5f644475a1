"""Serve the API (api/routes.py) with hypercorn: HTTP/1.1, and h2 over TLS via ALPN.

hypercorn is a thin adapter over h11/h2 (the shape ARCHITECTURE.md asks for); we bind the
listening socket ourselves so ``port=0`` yields a known port before ``start()`` returns and
callers (the push payload's decline URL, tests) can use it at once.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any, cast

from hypercorn.asyncio.run import worker_serve
from hypercorn.config import Config as HypercornConfig
from hypercorn.config import Sockets
from hypercorn.utils import wrap_app

from sipwake.api.admin import AdminService
from sipwake.api.metrics import Metrics
from sipwake.api.routes import ApiApp, DeclineService


class ApiServer:
    """The HTTP API listener. ``start()`` binds and returns ``(host, port)``; ``close()``
    stops accepting and lets in-flight requests finish (up to a second)."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        decline: DeclineService,
        admin: AdminService | None,
        metrics: Metrics,
        health: Callable[[], bool],
        tls_cert: str = "",
        tls_key: str = "",
        admin_token: str = "",
    ) -> None:
        if bool(tls_cert) != bool(tls_key):
            raise ValueError("TLS needs both a certificate and a key")
        self.host = host
        self.port = port
        self.tls = bool(tls_cert)
        self.app = ApiApp(
            decline=decline, admin=admin, metrics=metrics, health=health, admin_token=admin_token
        )
        self._config = HypercornConfig()
        self._config.accesslog = None  # our own logging says what matters, with call ids
        self._config.errorlog = None
        self._config.graceful_timeout = 1.0
        self._config.keep_alive_timeout = 30.0  # phones on mobile links: free idle sockets
        if self.tls:
            self._config.certfile, self._config.keyfile = tls_cert, tls_key
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``https://127.0.0.1:8443`` (IPv6 hosts bracketed, RFC 3986 §3.2.2)."""
        scheme = "https" if self.tls else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    async def start(self) -> tuple[str, int]:
        if self._task is not None:
            raise RuntimeError("ApiServer already started")
        if self.tls:
            # Load the certificate now so a bad path fails start(), not a background task.
            self._config.create_ssl_context()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(self._config.backlog)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        secure, insecure = ([sock], []) if self.tls else ([], [sock])
        app = wrap_app(cast(Any, self.app), self._config.wsgi_max_body_size, "asgi")
        self._stop.clear()
        self._task = asyncio.create_task(
            worker_serve(
                app,
                self._config,
                sockets=Sockets(secure, insecure, []),
                shutdown_trigger=self._stop.wait,
            ),
            name="sipwake-api",
        )
        return self.host, self.port

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self._stop.set()
        await task
