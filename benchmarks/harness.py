"""The benchmark's environment: real servers and workers (from the test-suite's support
package), a subscriber that timestamps every event, RSS sampling, soketi's request
counter, producer processes and a progress bar."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TextIO

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "tests") not in sys.path:
    sys.path.insert(0, str(REPO / "tests"))

from support.pusher_ws import Subscriber  # noqa: E402
from support.servers import RedisServer, Soketi, soketi_available  # noqa: E402
from support.workers import CeleryWorker, ForwardingProxy, project_env  # noqa: E402

from benchmarks.procfs import children_of, rss_kb  # noqa: E402

__all__ = [
    "REPO", "BenchWorker", "ChannelLines", "ForwardingProxy", "Producer", "Progress", "RedisServer",
    "RssSampler", "Soketi", "TimedSubscriber", "gate_counters", "gate_figures", "project_env",
    "soketi_available", "soketi_counters",
]


# ---------------------------------------------------------------------------------- subscriber

@dataclass
class ChannelLines:
    """What one channel received: ``(i, t_emit_ns, recv_ns)`` per line and ``recv_ns`` per
    ``log`` message (appended by the subscriber's receive thread)."""

    lines: list[tuple[int, int, int]] = field(default_factory=list)
    messages: list[int] = field(default_factory=list)


class _StampedEvents(list[dict[str, Any]]):
    """The subscriber's event list; ``append`` (called by its receive thread, under its lock)
    stamps each event with the wall-clock time and files the lines of ``log`` events."""

    def __init__(self, channels: dict[str, ChannelLines], existing: list[dict[str, Any]]) -> None:
        super().__init__(existing)
        self._channels = channels

    def append(self, record: dict[str, Any]) -> None:
        recv = time.time_ns()
        record["recv_ns"] = recv
        if record.get("event") == "log":
            target = self._channels.get(str(record.get("channel")))
            data = record.get("data")
            if target is not None and isinstance(data, dict):
                target.messages.append(recv)
                for line in data.get("events") or ():
                    values = line.get("data") if isinstance(line, dict) else None
                    if isinstance(values, dict):
                        i, t = values.get("i"), values.get("t")
                        if isinstance(i, int) and isinstance(t, int):
                            target.lines.append((i, t, recv))
            # The lines are filed; keep only a stub of the (large) event in memory.
            record["data"] = None
        super().append(record)


class TimedSubscriber(Subscriber):
    """The test-suite's Pusher WebSocket client, recording the arrival time of each line."""

    def __init__(self, host: str, port: int, key: str, secret: str) -> None:
        super().__init__(host, port, key, secret)
        self.channels: dict[str, ChannelLines] = {}
        with self._lock:
            self._events = _StampedEvents(self.channels, self._events)

    def watch(self, channel: str) -> ChannelLines:
        """Subscribe to ``channel`` and return where its lines will be filed."""
        lines = self.channels.setdefault(channel, ChannelLines())
        self.subscribe(channel, timeout_s=10.0)
        return lines


# ---------------------------------------------------------------------------------- workers

class BenchWorker(CeleryWorker):
    """``celery -A relaycast worker`` as the tests start it, plus ``extra_args`` (e.g. ``-I``)."""

    def __init__(self, env: dict[str, str], queues: str, concurrency: int, name: str,
                 extra_args: list[str] | None = None) -> None:
        super().__init__(env, queues=queues, concurrency=concurrency, name=name,
                         extra_args=tuple(extra_args or ()))

    def pids(self) -> list[int]:
        """The main process and its pool processes."""
        if self.pid is None or not self.is_running():
            return []
        return [self.pid, *children_of(self.pid)]

    def full_log(self) -> str:
        return self.log_tail(1 << 40)


@dataclass
class RssSample:
    t_ns: int
    #: group -> {pid: kB}
    groups: dict[str, dict[int, int]]


class RssSampler:
    """Samples VmRSS of groups of processes every ``interval_s`` in a thread."""

    def __init__(self, groups: dict[str, Callable[[], list[int]]], interval_s: float = 1.0) -> None:
        self.groups = groups
        self.interval_s = interval_s
        self.samples: list[RssSample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def sample(self) -> None:
        groups: dict[str, dict[int, int]] = {}
        for name, pids in self.groups.items():
            values = {}
            for pid in pids():
                kb = rss_kb(pid)
                if kb is not None:
                    values[pid] = kb
            groups[name] = values
        self.samples.append(RssSample(time.time_ns(), groups))

    def _run(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.interval_s):
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5.0)

    def series(self, group: str, start_ns: int, end_ns: int) -> list[tuple[float, int, int]]:
        """``(seconds since start_ns, total kB, largest process kB)`` within the window."""
        out = []
        for sample in self.samples:
            values = sample.groups.get(group)
            if values and start_ns <= sample.t_ns <= end_ns:
                out.append(((sample.t_ns - start_ns) / 1e9, sum(values.values()),
                            max(values.values())))
        return out


# ---------------------------------------------------------------------------------- soketi

def gate_counters(redis_url: str, prefix: str) -> dict[str, int]:
    """The ordering gate's pipeline counters over the last hour (``gate_*`` fields)."""
    from broadcasters.backends import RedisBackend
    from broadcasters.keys import is_gate_counter
    from broadcasters.state import SharedState

    state = SharedState(RedisBackend.from_url(redis_url, prefix))
    try:
        return {k: v for k, v in state.pipeline_counts(60).items() if is_gate_counter(k)}
    finally:
        state.close()


def gate_figures(before: dict[str, int], after: dict[str, int]) -> dict[str, Any] | None:
    """What the gate did between two snapshots: batches, waits, wait percentiles (bucket
    upper bounds, ms), timeouts."""
    from broadcasters.histogram import bucket_percentile
    from broadcasters.keys import GateCounter, PipelineCounter, gate_wait_bucket

    diff = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    batches = diff.get(GateCounter.BATCHES, 0)
    if batches <= 0:
        return None
    buckets = {bucket: n for k, n in diff.items()
               if (bucket := gate_wait_bucket(k)) is not None and n > 0}
    return {"batches": batches, "wait_ms": diff.get(GateCounter.WAIT_MS, 0),
            "waited": batches - buckets.get(0, 0),
            "timeouts": diff.get(PipelineCounter.GATE_TIMEOUTS, 0),
            "wait_p50_ms": bucket_percentile(buckets, 0.5) or 0.0,
            "wait_p99_ms": bucket_percentile(buckets, 0.99) or 0.0}


def soketi_counters(soketi: Soketi) -> dict[str, float] | None:
    """soketi's Prometheus counters: HTTP API calls received (successful ones: soketi counts
    a call when it answers it) and WebSocket messages sent. None when unavailable."""
    url = f"http://{soketi.host}:{soketi.metrics_port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=5.0) as response:
            text = response.read().decode("utf-8", errors="replace")
    except (urllib.error.URLError, OSError):
        return None
    totals = {"http_calls": 0.0, "ws_messages_sent": 0.0}
    names = {"soketi_http_calls_received_total": "http_calls",
             "soketi_ws_messages_sent_total": "ws_messages_sent"}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in names:
            with contextlib.suppress(ValueError, IndexError):
                totals[names[name]] += float(line.rsplit(" ", 1)[1])
    return totals


# ---------------------------------------------------------------------------------- producer

class Producer:
    """``python -m benchmarks.producer ...`` (or another ``module`` speaking the same
    protocol) in its own session, with a READY/GO handshake."""

    def __init__(self, args: list[str], env: dict[str, str], workdir: Path, name: str,
                 wrap: list[str] | None = None, module: str = "benchmarks.producer") -> None:
        self.log_path = workdir / f"{name}.log"
        self.result_path = workdir / f"{name}.json"
        self._log: IO[bytes] = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [*(wrap or []), sys.executable, "-m", module, *args,
             "--result", str(self.result_path)],
            cwd=workdir, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self._log, start_new_session=True, text=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self, timeout_s: float) -> None:
        line = self._read_line(timeout_s)
        if line != "READY":
            raise RuntimeError(f"producer did not get ready (said {line!r})\n{self.log_tail()}")

    def _read_line(self, timeout_s: float) -> str:
        assert self.proc.stdout is not None
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(self.proc.stdout.readline()
                                                               if self.proc.stdout else ""),
                                  daemon=True)
        reader.start()
        reader.join(timeout_s)
        return result[0].strip() if result else "<timeout>"

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("GO\n")
        self.proc.stdin.flush()

    def result(self, timeout_s: float) -> dict[str, Any]:
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"producer still running after {timeout_s:.0f}s\n"
                               f"{self.log_tail()}") from None
        if self.proc.returncode != 0 or not self.result_path.exists():
            raise RuntimeError(f"producer failed (exit {self.proc.returncode})\n{self.log_tail()}")
        value: dict[str, Any] = json.loads(self.result_path.read_text())
        return value

    def log_tail(self, limit: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return "<no log>"

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._log.close()


# ---------------------------------------------------------------------------------- progress

class Progress:
    """A one-line progress bar on stderr; plain lines every few seconds when not a terminal."""

    def __init__(self, stream: TextIO | None = None, width: int = 28) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.width = width
        self._last_plain = 0.0
        self._open = False

    def update(self, label: str, done: float, total: float, detail: str = "") -> None:
        fraction = min(1.0, done / total) if total > 0 else 0.0
        filled = int(fraction * self.width)
        bar = "#" * filled + "." * (self.width - filled)
        text = f"{label:<28} [{bar}] {fraction * 100:5.1f}%  {detail}"
        if self.tty:
            self.stream.write("\r" + text[:150].ljust(150))
            self.stream.flush()
            self._open = True
        elif time.monotonic() - self._last_plain >= 5.0:
            self._last_plain = time.monotonic()
            self.stream.write(text + "\n")
            self.stream.flush()

    def done(self, label: str, detail: str) -> None:
        text = f"{label:<28} [{'#' * self.width}] done    {detail}"
        if self.tty:
            self.stream.write("\r" + text[:150].ljust(150) + "\n")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
        self._open = False
        self._last_plain = 0.0

    def note(self, text: str) -> None:
        if self._open:
            self.stream.write("\n")
            self._open = False
        self.stream.write(text + "\n")
        self.stream.flush()
