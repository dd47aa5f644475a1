"""One server process's life: start, signals (SIGTERM drains, SIGINT answers the callers,
SIGHUP reloads), and the garbage-collector tuning done once start-up is over. The wiring
itself is server.py's."""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import signal
from collections.abc import Callable
from functools import partial

from sipwake.config import Config
from sipwake.server import Server, WorkerSlot

log = logging.getLogger("sipwake.server")


# How often the full collection runs (collect_periodically): the only collection that
# walks what outlived a young one, so the one pause that grows with the heap (100-170 ms
# with a 4x overload's 32 s of finished transactions, bench/README.md; 125 ms after 90,000
# REGISTERs, 200 ms after 30,000 calls, compiled). At most once a FULL_COLLECTION_INTERVAL,
# in a second that brought at most QUIET_MESSAGES, and at the latest once a
# FULL_COLLECTION_LATEST however busy the server is.
FULL_COLLECTION_INTERVAL = 60.0
FULL_COLLECTION_LATEST = 600.0
QUIET_MESSAGES = 200
# Mean seconds between two young collections (collect_young), jittered by +-50 % so that
# they never fall into step with periodic traffic.
YOUNG_INTERVAL = 0.05
# A young-collection tick this late (s) finds the loop busy and leaves the work to the
# allocation threshold.
BUSY_AFTER = 0.002
# Net allocations at which a young collection runs anyway, inside whatever allocates: under
# load, where the timer cannot keep up (light traffic leaves a few thousand per 50 ms).
# 20 000 made no difference we could measure at 4x the call capacity (bench_overload on a
# noisy machine); the value of the threshold-only policy before it is kept.
YOUNG_THRESHOLD = 5_000
# gen0 passes between two middle-generation passes: never in practice (5e9 allocations).
_NEVER = 1_000_000


def tune_gc() -> None:
    """Keep the cycle collector off the hot path. Everything alive after start-up
    (modules, the loaded bindings) is moved out of its reach with ``gc.freeze()``.

    Young collections run on a timer (``collect_young``), between messages, not when an
    allocation happens to cross a threshold in the middle of one: at 60 transactions/s
    the threshold policy (every 5 000 net allocations) ran 82 young passes in 10 s, each
    inside whatever tripped it, most for ~90 µs but the longest 0.6-1.1 ms on a cold CPU;
    6 of 200 push-woken calls had one inside a leg, among them the slowest
    (bench/README.md, "The push before the row"). The allocation threshold stays
    (``YOUNG_THRESHOLD``) for loads the timer cannot keep up with. Per message we
    allocate hundreds of short-lived objects that reference counting frees anyway (young
    passes every 700 allocations: +25 % CPU per REGISTER).

    The middle and old generations are never collected on their own;
    ``collect_periodically`` runs a full collection instead, at most once a minute and
    in a quiet second. Why: what outlives a young collection here is the transactions of
    finished calls and REGISTERs, kept for 64*T1 (RFC 3261 §17: Timers J, L and M), and
    they die by reference counting, not in cycles; yet with the default policy the
    collector walked them again and again, a middle pass every 50 000 allocations and a
    full pass every few seconds under load (100-170 ms each), about 10 % of the CPU at
    4x the call capacity and the stalls that had the overload shedder refuse calls a
    server at 60 % of a core could take (goodput at 4x: 64-78 % with it, 99-100 % with
    no collector at all, bench/README.md). Cycles are rare on these paths (0.02 objects
    per call reached the collector); the few that outlive a young pass wait for the full
    one, a minute or, under sustained load, up to ten."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, _NEVER, _NEVER)


class ShedPause:
    """No young collection while the server sheds load (``shed``: its count of requests
    refused 503 for overload, app/engine.py).

    Past capacity, the young passes were what grew: in the second of two 40 s loads at
    4x (bench_overload.py, compiled), 30-38 passes a second took 8-9 % of the CPU, 2-3
    ms each and up to 16 ms, while what they walked was live (the finished transactions
    kept for 64*T1) and would die by reference counting; goodput fell from 95 % of the
    capacity in the first load to 75 % in the second. So while the count moves from one
    tick to the next the collector is off (``gc.disable``). Once it stands still, what
    survived the overload is moved out of the young generation at no cost
    (``gc.freeze``) and the collector is on again: collecting it then would be one pass
    over all of it, a stall at the moment load comes down. The full collection
    (``collect_periodically``) takes what was frozen back in (``take_back``) and frees
    its cycles: in the next lull, or ten minutes after the last one at the latest
    however long the overload, and cycles are rare on these paths (``tune_gc``)."""

    def __init__(self, shed: Callable[[], int]) -> None:
        self._shed = shed
        self._seen = shed()
        self.paused = False
        self.frozen = False  # objects frozen here since the last full collection

    def tick(self) -> bool:
        """Look at the count; True while young collections are off."""
        count = self._shed()
        shedding, self._seen = count != self._seen, count
        if shedding and not self.paused:
            gc.disable()
            self.paused = True
        elif not shedding and self.paused:
            gc.freeze()
            self.frozen = True
            gc.enable()
            self.paused = False
        return self.paused

    def take_back(self) -> None:
        """Before a full collection: what an overload froze goes back to the oldest
        generation, to be walked by this collection and the next ones. What ``tune_gc``
        froze at start-up goes back with it (``gc.unfreeze`` takes all): ~60,000 objects,
        ~9 ms more per full collection from then on. Freezing again after the collection
        would keep whatever is alive then from ever being walked, and a long-lived object
        that later dies in a cycle (a closed connection) from being freed."""
        if self.frozen:
            gc.unfreeze()
            self.frozen = False


async def collect_young(
    interval: float = YOUNG_INTERVAL,
    jitter: Callable[[], float] = random.random,
    busy_after: float = BUSY_AFTER,
    pause: ShedPause | None = None,
) -> None:
    """The young collections ``tune_gc`` takes off the allocation-driven schedule: one
    every ``interval`` seconds on average, when the event loop's timer comes round --
    while it waits for the next datagram, unless one is being handled right then. A tick
    that comes more than ``busy_after`` seconds late finds the loop busy: it collects
    nothing, and the allocation threshold does the work, as many passes as before and
    no more (under load these extra passes only cost CPU). With ``pause``, none at all
    while the server sheds load (``ShedPause``)."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + interval * (0.5 + jitter())
        await asyncio.sleep(due - loop.time())
        if pause is not None and pause.tick():
            continue
        if gc.get_count()[0] and loop.time() - due <= busy_after:
            gc.collect(0)


async def collect_periodically(
    interval: float = FULL_COLLECTION_INTERVAL,
    received: Callable[[], int] | None = None,
    *,
    latest: float = FULL_COLLECTION_LATEST,
    check: float = 1.0,
    quiet: int = QUIET_MESSAGES,
    pause: ShedPause | None = None,
) -> None:
    """The full collection ``tune_gc`` leaves out of the allocation-driven schedule: once
    ``interval`` has passed, in the first ``check`` seconds in which at most ``quiet``
    messages arrived (``received``: the engine's count so far), or once ``latest`` has
    passed since the last one. Why wait for a quiet moment: the pass stops the event loop
    for as long as it walks the heap, which under load is 32 s of finished transactions
    (RFC 3261 §17 Timers J, L and M): every request that arrives meanwhile waits, the
    slow ones past T1 are retransmitted (§17.1.1.2), and the overload shedder sees the
    wait as a queue. Cycles are rare on these paths, so waiting for a lull costs little
    memory (process.tune_gc). What ``pause`` froze during an overload is walked too."""
    loop = asyncio.get_running_loop()
    while True:
        last = loop.time()
        await asyncio.sleep(interval)
        while received is not None and loop.time() - last < latest:
            before = received()
            await asyncio.sleep(check)
            if received() - before <= quiet:
                break
        started = loop.time()
        if pause is not None:
            pause.take_back()
        found = gc.collect()
        log.debug("full collection: %d unreachable, %.0f ms", found, (loop.time() - started) * 1e3)


async def run(config: Config, worker: WorkerSlot | None = None, path: str | None = None) -> None:
    """Run until SIGINT/SIGTERM; SIGHUP reloads ``path`` (reload.py)."""
    server = Server(config, worker)
    await server.start()
    tune_gc()
    loop = asyncio.get_running_loop()
    engine = server.engine
    pause = ShedPause(lambda: engine.stats.shed)
    collectors = [
        loop.create_task(collect_young(pause=pause)),
        loop.create_task(collect_periodically(received=lambda: engine.stats.received, pause=pause)),
    ]
    stop = asyncio.Event()
    hurry = asyncio.Event()  # a second signal: stop draining
    signals: list[int] = []

    def on_signal(sig: int) -> None:
        if signals:
            hurry.set()
        signals.append(sig)
        stop.set()

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
        for collector in collectors:
            collector.cancel()
        gc.enable()  # were young collections paused at the end of an overload
        await server.stop()


def _on_sighup(server: Server, path: str | None) -> None:
    if path is None:
        log.warning("SIGHUP: running on the built-in configuration, nothing to reload")
        return
    from sipwake.reload import reload

    task = asyncio.get_running_loop().create_task(reload(server, path))
    server.background.add(task)
    task.add_done_callback(server.background.discard)
