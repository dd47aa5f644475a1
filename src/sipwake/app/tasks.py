"""Background tasks an app service starts and must cancel when it closes.

Each service (refresh pushes, messages, edge mode, the cluster node) fires off coroutines
whose result nobody awaits: a push, a store write, a bus publish. asyncio keeps only a weak
reference to a running task, so the set keeps them alive until done, and ``close`` cancels
what is still running and waits for it so nothing outlives the server."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any


class Tasks:
    __slots__ = ("_running",)

    def __init__(self) -> None:
        self._running: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return task

    def cancel(self) -> list[asyncio.Task[Any]]:
        """Cancel what is still running; returns those tasks (``close`` waits for them)."""
        running = list(self._running)
        for task in running:
            task.cancel()
        return running

    async def close(self) -> None:
        running = self.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)


async def logged(coro: Coroutine[Any, Any, Any], logger: logging.Logger, what: str) -> None:
    """Run ``coro``; an exception it raises is logged as ``what`` rather than left on a
    task nobody awaits (asyncio would only warn when the task is collected)."""
    try:
        await coro
    except asyncio.CancelledError:
        raise
    except Exception:
        logger.exception(what)
