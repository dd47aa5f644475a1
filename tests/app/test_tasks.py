"""app/tasks.py: background tasks are kept until done and cancelled on close."""

from __future__ import annotations

import asyncio
import logging

import pytest

from sipwake.app.tasks import Tasks, logged


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


async def test_logged_logs_a_failure_and_lets_cancellation_through(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logging.getLogger("test.tasks")

    async def boom() -> None:
        raise RuntimeError("boom")

    await logged(boom(), log, "call task failed")  # logged, not raised
    assert "call task failed" in caplog.text and "boom" in caplog.text
    tasks = Tasks()
    task = tasks.spawn(logged(asyncio.Event().wait(), log, "never"))
    await asyncio.sleep(0)
    await tasks.close()
    assert task.cancelled() and "never" not in caplog.text
