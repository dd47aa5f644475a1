"""One server process's life: start, signals (SIGTERM drains, SIGINT answers the callers,
SIGHUP reloads), and the garbage-collector tuning done once start-up is over. The wiring
itself is server.py's."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from functools import partial

from sipwake.config import Config
from sipwake.server import Server, WorkerSlot

log = logging.getLogger("sipwake.server")


def tune_gc() -> None:
    """Keep the cycle collector off the hot path without long pauses. Everything alive
    after start-up (modules, the loaded bindings) is moved out of its reach with
    ``gc.freeze()``. Young collections run every 5 000 net allocations instead of 700: per
    message we allocate hundreds of short-lived objects that reference counting frees
    anyway (700: +25 % CPU per REGISTER; 5 000 and 50 000 cost the same, bench/README.md).
    Not more: a collection of the middle generation walks up to threshold0 * threshold1
    objects in one go, and with (50 000, 20) that was a million objects of finished calls
    (their transactions live 64*T1): 550-620 ms pauses, UDP datagrams left waiting past
    T1, callers retransmitting, and the overload shedder answering 503 to a server at 60 %
    of a core. (5 000, 10) bounds it at 50 000 objects (24-56 ms seen). The per-call paths
    avoid reference cycles, and a finished call keeps few objects (fsm.RELEASE,
    Incoming.release), which shortens the full collections too -- not to nothing: 170-340
    ms at the top of bench/run's ladders, where the bindings and the transactions of
    64*T1 are what is left to walk (bench/README.md)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(5_000, 10, 10)


async def run(config: Config, worker: WorkerSlot | None = None, path: str | None = None) -> None:
    """Run until SIGINT/SIGTERM; SIGHUP reloads ``path`` (reload.py)."""
    server = Server(config, worker)
    await server.start()
    tune_gc()
    stop = asyncio.Event()
    hurry = asyncio.Event()  # a second signal: stop draining
    signals: list[int] = []

    def on_signal(sig: int) -> None:
        if signals:
            hurry.set()
        signals.append(sig)
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    loop.add_signal_handler(signal.SIGHUP, partial(_on_sighup, server, path))
    # Tests and supervisors wait for this line on stdout before sending traffic.
    ready = " ".join(str(b) for b in server.bound)
    if server.api_address is not None:
        ready += f" api:{server.api_address[0]}:{server.api_address[1]}"
    print(f"sipwake ready: {ready}", flush=True)
    try:
        await stop.wait()
        # SIGTERM drains (held calls may finish); SIGINT only answers the callers.
        drain = config.server.drain_timeout if signals[0] == signal.SIGTERM else 0.0
        await server.drain(drain, hurry)
    finally:
        await server.stop()


def _on_sighup(server: Server, path: str | None) -> None:
    if path is None:
        log.warning("SIGHUP: running on the built-in configuration, nothing to reload")
        return
    from sipwake.reload import reload

    task = asyncio.get_running_loop().create_task(reload(server, path))
    server.background.add(task)
    task.add_done_callback(server.background.discard)
