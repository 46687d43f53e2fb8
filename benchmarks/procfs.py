"""What Linux's /proc says about processes: CPU time, memory, children.

Everything the benchmark accounts per process is read here, and nowhere else: a process
that is gone reads as nothing (0 s, ``None``, no children) rather than an error, because
workers and producers come and go while they are measured.
"""

from __future__ import annotations

import os
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU time the whole machine spent busy (all CPUs, /proc/stat), in seconds."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICKS


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of ``pids`` (processes that are gone count 0)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += (int(fields[11]) + int(fields[12])) / _TICKS
    return total


def status_kb(pid: int | str, field: str) -> int | None:
    """A memory field of /proc/<pid>/status in KiB (``VmRSS``, ``VmHWM``; ``pid`` may be
    ``"self"``); None when the process is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def rss_kb(pid: int) -> int | None:
    """VmRSS of ``pid`` in KiB (None when it is gone)."""
    return status_kb(pid, "VmRSS")


def children_of(pid: int) -> list[int]:
    """The direct children of ``pid`` (e.g. a Celery worker's pool processes)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]
