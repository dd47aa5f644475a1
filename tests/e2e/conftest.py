from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import RunningServer, loopback_config, serve

BASIC_CONFIG = loopback_config(domains=("localhost", "127.0.0.1"), log_level="debug")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    with serve(BASIC_CONFIG, tmp_path) as running:
        yield running
        assert running.alive(), "server died during the test"
