"""CPU seconds per process group, read from /proc, for the side-by-side runner.

A group is a callable returning its pids at the moment of reading (a server's worker
processes, Kamailio's children, ...). Each process's CPU time is ``utime + stime`` from
``/proc/<pid>/stat`` (fields 14 and 15, in clock ticks, summed over all its threads), read
per pid before and after a step and differenced per pid: a process born during the step
counts from zero, one that ended during it loses its last part (none end during a step in
these benchmarks). Short-lived children of this process (each step's SIPp client) cannot
be read that way -- they are gone when the step ends -- so they are counted with
``getrusage(RUSAGE_CHILDREN)``, which adds up the CPU of every child this process has
waited for.

No psutil: the /proc files are all that is needed, and a benchmark dependency less."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
from collections.abc import Callable, Mapping
from pathlib import Path

TICK = 1.0 / os.sysconf("SC_CLK_TCK")

Group = Callable[[], list[int]]


def _stat_fields(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/<pid>/stat (after the command name, which may hold spaces or
    parentheses, hence the split at the last ')'); None once the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, all threads; 0 if it is gone."""
    f = _stat_fields(pid)
    return (int(f[11]) + int(f[12])) * TICK if f else 0.0


def start_time(pid: int) -> int | None:
    """Field 22 (start time since boot, ticks): with the pid, names a process uniquely
    (a pid can be reused, the pair cannot)."""
    f = _stat_fields(pid)
    return int(f[19]) if f else None


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, from /proc/<pid>/task/<tid>/children (the kernel's
    list of each thread's children), recursively."""
    out: list[int] = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            kids = [int(k) for k in children.read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
        for kid in kids:
            out.append(kid)
            out.extend(descendants(kid))
    return out


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (a `sipwake serve --workers N` and its workers)."""
    return [pid, *descendants(pid)]


def children_cpu() -> float:
    """CPU seconds of all children this process has waited for, so far."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


Snapshot = dict[str, dict[int, float]]


def snapshot(groups: Mapping[str, Group]) -> Snapshot:
    """Per group, per pid, CPU seconds now."""
    return {name: {pid: cpu_seconds(pid) for pid in pids()} for name, pids in groups.items()}


def delta(before: Snapshot, after: Snapshot) -> dict[str, float]:
    """CPU seconds used per group between two snapshots (per pid, see the module doc)."""
    return {
        name: sum(t - before.get(name, {}).get(pid, 0.0) for pid, t in pids.items())
        for name, pids in after.items()
    }


def kill_leftovers(procs: list[tuple[int, int | None]]) -> None:
    """SIGKILL each (pid, start time) that is still that same process: the workers of a
    server whose parent did not take them down on SIGTERM."""
    for pid, started in procs:
        if started is not None and start_time(pid) == started:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
