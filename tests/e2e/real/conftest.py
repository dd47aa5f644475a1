"""Fixtures for the real-client tests, and the timing table they print at the end."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.real.rig import RealRig, real_rig

TIMINGS: list[tuple[str, str, str, float]] = []  # (row, transport, what, seconds)


def record(row: str, transport: str, what: str, seconds: float) -> None:
    TIMINGS.append((row, transport, what, seconds))


@pytest.fixture(scope="session")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealRig]:
    for tool in ("linphone-daemon", "baresip"):
        if shutil.which(tool) is None:
            pytest.fail(
                f"{tool} not installed: run scripts/system-deps (Debian linphone-cli, baresip-core)"
            )
    with real_rig(Path(tmp_path_factory.mktemp("real"))) as running:
        yield running


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not TIMINGS:
        return
    terminalreporter.section("real-client timings (ms)")
    for row, transport, what, seconds in TIMINGS:
        terminalreporter.write_line(f"{row:<14} {transport:<4} {what:<28} {seconds * 1000:8.1f}")
