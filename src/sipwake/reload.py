"""SIGHUP: read the configuration file again and apply what can change under load.

Applied at once: push providers and their credentials (a new dispatcher; the old one keeps
serving the pushes already in flight and is closed later), the ``[push]`` settings for new
calls, the log level and format, and the admin API token. Users live in the store and are
read per request, so ``sipwake user add`` needs no reload at all. Everything else (listeners,
TLS, storage, domains, timers, auth, workers...) is bound into sockets and objects at
start-up: a change there is logged as needing a restart and otherwise ignored.

A file that does not load or names a file that does not load (preflight.py) changes
nothing: the log says why and the running configuration stays. Calls in progress are never
touched: their branches, timers and held state belong to the running objects.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import TYPE_CHECKING, Protocol

import msgspec

from sipwake.app.records import call_rules
from sipwake.config import Config, ConfigError, load_config
from sipwake.logs import setup_logging
from sipwake.preflight import preflight
from sipwake.push.dispatcher import PushDispatcher

if TYPE_CHECKING:
    from sipwake.api.metrics import Metrics
    from sipwake.api.server import ApiServer
    from sipwake.app.calls import Calls
    from sipwake.app.edge import EdgeService
    from sipwake.app.engine import Engine
    from sipwake.app.refresh import RefreshService
    from sipwake.app.register import Registrar
    from sipwake.app.wake import Pusher


class Server(Protocol):
    """What a reload changes in the running server (server.Server; a Protocol so that
    server.py, which calls us on SIGHUP, and this module do not import each other)."""

    config: Config
    engine: Engine
    api: ApiServer | None
    metrics: Metrics
    dispatcher: PushDispatcher | None
    pusher: Pusher | None
    calls: Calls | None
    edge: EdgeService | None
    refresh: RefreshService | None
    registrar: Registrar | None
    background: set[asyncio.Task[None]]


log = logging.getLogger("sipwake.reload")

# The old dispatcher keeps its connections this long after a reload: pushes already sent
# through it get their answers (a push never outlives its call's hold window).
OLD_DISPATCHER_GRACE = 60.0

_APPLIED = ("push", "api.admin_token", "server.log_level", "server.log_format")


def needs_restart(old: Config, new: Config) -> list[str]:
    """Top-level keys (and a few sub-keys) whose change only a restart applies."""
    changed: list[str] = []
    for name in old.__struct_fields__:
        a, b = getattr(old, name), getattr(new, name)
        if name == "push":
            continue
        if name == "server":
            a = msgspec.structs.replace(a, log_level="info", log_format="text")
            b = msgspec.structs.replace(b, log_level="info", log_format="text")
        if name == "api":
            a = msgspec.structs.replace(a, admin_token="")
            b = msgspec.structs.replace(b, admin_token="")
        if a != b:
            changed.append(name)
    if old.push.configured != new.push.configured:
        changed.append("push (turning push on or off)")
    return changed


async def reload(server: Server, path: str) -> bool:
    """Apply ``path`` to the running ``server``; False (and nothing changed) if it is bad."""
    try:
        new = load_config(path)
        preflight(new)
    except ConfigError as exc:
        where = exc.located(path) if hasattr(exc, "located") else str(exc)
        log.error("reload refused, the running configuration stays: %s", where)
        return False
    old = server.config
    restart = needs_restart(old, new)
    if new.push != old.push and new.push.configured and old.push.configured:
        try:
            dispatcher = PushDispatcher.from_config(new.push)
        except (ValueError, OSError) as exc:
            log.error("reload refused, the running configuration stays: %s: %s", path, exc)
            return False
        _swap_dispatcher(server, dispatcher, new)
    if new.server.log_level != old.server.log_level or (
        new.server.log_format != old.server.log_format
    ):
        setup_logging(new.server.log_level, new.server.log_format)
        server.engine.log_transactions = new.server.log_level == "debug"
    if server.api is not None:
        server.api.app.set_admin_token(new.api.admin_token)
    # What was applied becomes the running configuration; what needs a restart stays old,
    # so the next reload compares against what really runs.
    applied = msgspec.structs.replace(
        old,
        push=new.push if new.push.configured == old.push.configured else old.push,
        server=msgspec.structs.replace(
            old.server, log_level=new.server.log_level, log_format=new.server.log_format
        ),
        api=msgspec.structs.replace(old.api, admin_token=new.api.admin_token),
    )
    server.config = applied
    if restart:
        log.warning(
            "reload: %s changed in %s; these take effect at the next restart",
            ", ".join(restart),
            path,
        )
    log.info("reloaded %s (applied: %s)", path, ", ".join(_APPLIED))
    return True


def _swap_dispatcher(server: Server, dispatcher: PushDispatcher, new: Config) -> None:
    old = server.dispatcher
    dispatcher.metrics = server.metrics
    server.dispatcher = dispatcher
    if server.pusher is not None:
        server.pusher.dispatcher = dispatcher
        server.pusher.cfg = new.push
    if server.calls is not None:
        # Calls held now keep the rules they started with; new ones take these.
        server.calls.rules = call_rules(new)
        server.calls.missed_call_alert = new.push.missed_call_alert
    if server.refresh is not None:
        server.refresh.dispatcher = dispatcher  # binding-refresh pushes (and edge mode's)
    registrar = server.registrar
    if registrar is not None:
        # New REGISTERs are checked against the providers we now serve (555 otherwise).
        registrar.policy = dataclasses.replace(
            registrar.policy,
            supported_providers=dispatcher.supported(),
            vapid_public_key=dispatcher.vapid_public_key,
        )
        if server.edge is not None:
            server.edge.policy = registrar.policy  # edge mode checks REGISTERs by it too
    if old is not None:
        loop = asyncio.get_running_loop()
        task = loop.create_task(_close_later(old))
        server.background.add(task)
        task.add_done_callback(server.background.discard)


async def _close_later(dispatcher: PushDispatcher) -> None:
    await asyncio.sleep(OLD_DISPATCHER_GRACE)
    await dispatcher.close()
