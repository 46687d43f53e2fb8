"""Optional sampling profiles of the hot paths with py-spy (``--profile``).

py-spy attaches to running processes, samples every thread (the producer's emit loop
*and* its flusher thread) and, with ``--subprocesses``, a Celery worker's pool processes,
without changing a line of application code. It is not a project dependency: install it
into the venv by hand (``.venv/bin/pip install py-spy``). Samples of idle threads are
left out, so percentages are shares of CPU-active time.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_LINE_NO = re.compile(r":\d+\)$")


def py_spy_binary() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    if beside.exists():
        return str(beside)
    return shutil.which("py-spy")


@dataclass
class Recording:
    label: str
    path: Path
    proc: subprocess.Popen[bytes]
    log: Path


class PySpy:
    """Start and stop ``py-spy record --format raw`` runs; summarise them by category."""

    def __init__(self, workdir: Path, rate_hz: int = 500) -> None:
        binary = py_spy_binary()
        if binary is None:
            raise FileNotFoundError("py-spy is not installed (.venv/bin/pip install py-spy)")
        self.binary = binary
        self.workdir = workdir
        self.rate_hz = rate_hz
        self.recordings: list[Recording] = []
        self._running: list[Recording] = []

    def start(self, label: str, pid: int, subprocesses: bool = False) -> None:
        path = self.workdir / f"{label}.raw"
        log = self.workdir / f"{label}.pyspy.log"
        cmd = [self.binary, "record", "-p", str(pid), "--nonblocking", "--format", "raw",
               "-r", str(self.rate_hz), "-o", str(path)]
        if subprocesses:
            cmd.append("--subprocesses")
        with log.open("wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        recording = Recording(label, path, proc, log)
        self.recordings.append(recording)
        self._running.append(recording)

    def stop_all(self) -> None:
        """SIGINT every running recorder (py-spy then writes its file) and reap it."""
        for recording in self._running:
            if recording.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(recording.proc.pid, signal.SIGINT)
        for recording in self._running:
            try:
                recording.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(recording.proc.pid, signal.SIGKILL)
                recording.proc.wait(timeout=5)
        self._running = []

    def stacks(self, label: str) -> list[tuple[list[str], int]]:
        out: list[tuple[list[str], int]] = []
        for recording in self.recordings:
            if recording.label != label or not recording.path.exists():
                continue
            for line in recording.path.read_text(errors="replace").splitlines():
                stack, _, count = line.rpartition(" ")
                if stack and count.isdigit():
                    out.append((stack.split(";"), int(count)))
        return out

    def copy_to(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        for recording in self.recordings:
            if recording.path.exists():
                shutil.copy2(recording.path, directory / recording.path.name)


def _frame_name(frame: str) -> str:
    """``func (path/file.py:123)`` without the line number, and without site-packages noise."""
    frame = _LINE_NO.sub(")", frame.strip())
    return frame.replace("site-packages/", "")


def summarize(stacks: list[tuple[list[str], int]], belongs: Callable[[list[str]], int | None],
              top: int = 10, inclusive_top: int | None = None) -> dict[str, Any]:
    """Top frames by self and inclusive samples among the stacks ``belongs`` accepts.

    ``belongs(frames)`` returns the index of the category's root frame (frames above it,
    such as Celery's dispatch, are not listed as inclusive costs) or None to skip the stack.
    The benchmark's own frames (``benchmarks/``) are left out of the inclusive list.
    """
    total = 0
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for frames, count in stacks:
        root = belongs(frames)
        if root is None:
            continue
        total += count
        own[_frame_name(frames[-1])] += count
        for name in {_frame_name(f) for f in frames[root + 1:] if "benchmarks/" not in f}:
            inclusive[name] += count

    def ranked(counter: Counter[str], limit: int) -> list[dict[str, Any]]:
        return [{"frame": name, "samples": n, "pct": 100.0 * n / total}
                for name, n in counter.most_common(limit)] if total else []

    return {"samples": total, "top_self": ranked(own, top),
            "top_inclusive": ranked(inclusive, top if inclusive_top is None else inclusive_top)}


def anchored(pattern: str, exclude: str | None = None) -> Callable[[list[str]], int | None]:
    """A ``belongs`` for :func:`summarize`: stacks with a frame matching ``pattern`` (the
    root), optionally without any frame matching ``exclude``."""
    regex = re.compile(pattern)
    skip = re.compile(exclude) if exclude else None

    def belongs(frames: list[str]) -> int | None:
        if skip is not None and any(skip.search(f) for f in frames):
            return None
        for index, frame in enumerate(frames):
            if regex.search(frame):
                return index
        return None

    return belongs


def everything_but(pattern: str) -> Callable[[list[str]], int | None]:
    """Stacks with no frame matching ``pattern``; the root is the first frame."""
    regex = re.compile(pattern)

    def belongs(frames: list[str]) -> int | None:
        return None if any(regex.search(f) for f in frames) else 0

    return belongs


def profile_summary(profiler: PySpy, designs: list[str]) -> dict[str, Any]:
    """The benchmark's hot paths, each summarised from the recording it shows up in."""
    out: dict[str, Any] = {}
    wanted: list[tuple[str, str, Callable[[list[str]], int | None]]] = []
    pacing = r"^Pacer\.wait \("
    tags = [tag for tag in ("relaycast", "relaycast-postgresql") if "relaycast" in designs]
    for tag, kind in ((tag, kind) for tag in tags for kind in ("burst", "sustained", "fast")):
        wanted += [
            (f"{tag} {kind}: emit path (producer main thread, under the emit loop)",
             f"{tag}-{kind}-producer", anchored(r"^_emit_lines_relaycast \(", exclude=pacing)),
            (f"{tag} {kind}: flusher thread (producer)",
             f"{tag}-{kind}-producer", anchored(r"^Emitter\.flush_once \(|^flush_once \(")),
            (f"{tag} {kind}: broadcast task (worker pool)",
             f"{tag}-{kind}-worker", anchored(r"^broadcast \(.*tasks/broadcast\.py")),
            (f"{tag} {kind}: worker outside the task (Celery, kombu, pool)",
             f"{tag}-{kind}-worker", everything_but(r"tasks/broadcast\.py")),
        ]
    if "baseline" in designs:
        wanted += [
            ("baseline burst: emit path (publish_line.delay)", "baseline-burst-producer",
             anchored(r"^_emit_lines_baseline \(", exclude=pacing)),
            ("baseline burst: task (worker pool)", "baseline-burst-worker",
             anchored(r"^publish_line \(")),
            ("baseline burst: worker outside the task (Celery, kombu, pool)",
             "baseline-burst-worker", everything_but(r"^publish_line \(")),
        ]
    for name, label, belongs in wanted:
        # "Outside the task" stacks all start in Celery's entry point: only self costs say anything.
        summary = summarize(profiler.stacks(label), belongs,
                            inclusive_top=0 if "outside the task" in name else None)
        if summary["samples"]:
            out[name] = summary
    return out
