"""app/tasks.py: background tasks are kept until done and cancelled on close."""

from __future__ import annotations

import asyncio

from sipwake.app.tasks import Tasks


async def test_close_cancels_what_still_runs_and_waits_for_it() -> None:
    tasks = Tasks()
    finished = asyncio.Event()
    cancelled: list[bool] = []

    async def quick() -> None:
        finished.set()

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    done = tasks.spawn(quick())
    pending = tasks.spawn(forever())
    await finished.wait()
    await asyncio.sleep(0)
    assert done.done() and not pending.done()
    await tasks.close()
    assert pending.cancelled() and cancelled == [True]
