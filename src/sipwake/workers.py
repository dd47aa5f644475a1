"""``sipwake serve --workers N``: N server processes on the same ports, supervised.

Python runs one core per process, so a machine's cores are used by processes, not
threads. Each worker is a full node (server.py ``WorkerSlot``): it binds the configured
ports with SO_REUSEPORT, so the kernel spreads new datagrams and connections among the
workers by address hash, and a private port of its own that it names in Via and
Record-Route, so answers come back to the process holding the transaction. They share
bindings, held calls and the cluster bus through the (Redis) store, as separate machines
would.

The supervisor only starts, watches and stops them: it restarts a worker that dies (its
transactions die with it, like a node's, see docs/scale-out.md) and forwards SIGINT/SIGTERM,
and SIGHUP (reload). It also gives them one PROMETHEUS_MULTIPROC_DIR, a directory of its
own, so that worker 0's /metrics adds up every worker's counters (api/metrics.py).
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import sys
import tempfile
import time

from prometheus_client.multiprocess import mark_process_dead

from sipwake.api.metrics import MULTIPROC_ENV

READY = "sipwake ready:"
_RESTART_DELAY = 1.0
_STOP_GRACE = 10.0  # seconds a worker gets to finish before it is killed


def _die_with_parent() -> None:
    """Linux: have the kernel send SIGTERM to the worker if the supervisor dies, so no
    orphan keeps the ports (prctl PR_SET_PDEATHSIG)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass  # not Linux: the supervisor's signal handlers still stop the workers


class Supervisor:
    def __init__(self, argv: list[str], count: int) -> None:
        self.argv = argv  # the worker command without its --worker argument
        self.count = count
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        self.ready: dict[int, str] = {}
        self.stopping = False
        self.failed: int | None = None  # exit code of a worker that failed at start-up
        self.env: dict[str, str] = dict(os.environ)
        self._all_ready = asyncio.Event()
        self._done = asyncio.Event()

    async def run(self) -> int:
        with tempfile.TemporaryDirectory(prefix="sipwake-metrics-") as metrics_dir:
            self.env = {**os.environ, MULTIPROC_ENV: metrics_dir}
            return await self._run()

    def _reload(self) -> None:
        for proc in self.procs.values():
            if proc.returncode is None:
                proc.send_signal(signal.SIGHUP)

    async def _run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stop)
        loop.add_signal_handler(signal.SIGHUP, self._reload)
        watchers = [loop.create_task(self._watch(i)) for i in range(self.count)]
        ready_wait = loop.create_task(self._all_ready.wait())
        done_wait = loop.create_task(self._done.wait())
        await asyncio.wait({ready_wait, done_wait}, return_when=asyncio.FIRST_COMPLETED)
        if self._all_ready.is_set() and not self.stopping:
            # One line for whoever waits on us, as a single process prints it.
            print(f"{self.ready[0]} workers:{self.count}", flush=True)
        await done_wait
        ready_wait.cancel()
        await self._terminate()
        await asyncio.gather(*watchers, return_exceptions=True)
        return self.failed if self.failed is not None else 0

    def _stop(self) -> None:
        self.stopping = True
        self._done.set()

    async def _watch(self, index: int) -> None:
        delay = _RESTART_DELAY
        while not self.stopping:
            started = time.monotonic()
            proc = await asyncio.create_subprocess_exec(
                *self.argv,
                "--worker",
                f"{index}/{self.count}",
                stdout=asyncio.subprocess.PIPE,
                preexec_fn=_die_with_parent,
                env=self.env,
            )
            self.procs[index] = proc
            assert proc.stdout is not None
            async for raw in proc.stdout:
                line = raw.decode(errors="replace").rstrip("\n")
                if line.startswith(READY) and index not in self.ready:
                    self.ready[index] = line
                    if len(self.ready) == self.count:
                        self._all_ready.set()
                else:
                    print(line, flush=True)
            code = await proc.wait()
            # Its live gauges (held calls, connections) must no longer count.
            mark_process_dead(proc.pid, self.env[MULTIPROC_ENV])  # type: ignore[no-untyped-call]
            if self.stopping:
                return
            if not self._all_ready.is_set():
                # Failing before the cluster ever came up is a configuration or port
                # problem that a restart will not fix: stop everything, report it.
                print(
                    f"sipwake: worker {index} exited with {code} during start-up",
                    file=sys.stderr,
                    flush=True,
                )
                self.failed = code or 1
                self._stop()
                return
            print(
                f"sipwake: worker {index} exited with {code}; restarting",
                file=sys.stderr,
                flush=True,
            )
            self.ready.pop(index, None)
            # A worker that keeps dying at once is not hammered: back off up to 30 s.
            delay = _RESTART_DELAY if time.monotonic() - started > 60 else min(delay * 2, 30.0)
            await asyncio.sleep(delay)

    async def _terminate(self) -> None:
        live = [p for p in self.procs.values() if p.returncode is None]
        for p in live:
            p.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in live)), _STOP_GRACE)
        except TimeoutError:
            for p in live:
                if p.returncode is None:
                    p.kill()
            await asyncio.gather(*(p.wait() for p in live))


def supervise(argv: list[str], count: int) -> int:
    return asyncio.run(Supervisor(argv, count).run())
