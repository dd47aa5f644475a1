"""Fixtures for the transport tests: real managers on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sipwake.transport.manager import TransportManager
from tests.transport.support import LIMITS, Recorder


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def manager(recorder: Recorder) -> AsyncIterator[TransportManager]:
    mgr = TransportManager(recorder, limits=LIMITS)
    yield mgr
    await mgr.close()
