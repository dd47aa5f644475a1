from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import RunningServer, serve

BASIC_CONFIG = """
[server]
domains = ["localhost", "127.0.0.1"]
log_level = "debug"

[[listen]]
transport = "udp"
host = "127.0.0.1"
port = 0

[[listen]]
transport = "tcp"
host = "127.0.0.1"
port = 0

[api]
port = 0
[storage]
url = "memory://"
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    with serve(BASIC_CONFIG, tmp_path) as running:
        yield running
        assert running.alive(), "server died during the test"
