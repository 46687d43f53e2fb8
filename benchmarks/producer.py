"""The workflow side of one benchmark phase, run as its own process.

    python -m benchmarks.producer --design relaycast|baseline --run-id ID --lines N
        [--rate R] --result FILE [--warmup-run-id ID]

The environment (REDIS_URL, DATABASE_URL, PUSHER_*, ...) must be set before start: the
emitter and the Celery app read it on import. The process

1. warms up: emits ``--warmup-lines`` lines to the warm-up run, spaced so that they take
   several flushes / tasks (both worker processes build their clients), and waits until
   they are handed to the broker;
2. prints ``READY`` and waits for ``GO`` on stdin (the orchestrator snapshots its
   counters and attaches the profiler in between);
3. emits ``--lines`` lines, as fast as possible or paced at ``--rate`` lines/s, each with
   ``i`` (1..N) and ``t`` (``time.time_ns()`` taken just before the call) in its data;
   only the emit call itself is timed (``perf_counter_ns`` around it);
4. relaycast: waits until the emitter has stored and enqueued everything (``flush``);
5. writes its figures as JSON to ``--result``.

relaycast emits through :class:`workflows.log_stream.LogStream` (the emitter of this
process, flusher thread included); the baseline calls ``publish_line.delay(...)``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.procfs import status_kb

#: [calls, total ns, calls in progress] per instrumented function of the flusher.
Timings = dict[str, list[int]]


def timer_overhead_ns(samples: int = 20_000) -> int:
    """Median cost of an empty ``perf_counter_ns()`` pair (subtracted from the emit costs)."""
    perf = time.perf_counter_ns
    costs = []
    for _ in range(samples):
        start = perf()
        costs.append(perf() - start)
    costs.sort()
    return costs[len(costs) // 2]


def summarize_ns(costs: Sequence[int], overhead_ns: int) -> dict[str, float]:
    """Mean and percentiles of the per-call costs in µs, the timer's own cost removed."""
    if not costs:
        return {}
    ordered = sorted(costs)
    n = len(ordered)

    def pct(p: float) -> float:
        return max(0.0, ordered[min(n - 1, int(p / 100.0 * n))] - overhead_ns) / 1000.0

    total = sum(ordered)
    return {
        "calls": n,
        "mean_us": max(0.0, total / n - overhead_ns) / 1000.0,
        "p50_us": pct(50), "p90_us": pct(90), "p99_us": pct(99), "p999_us": pct(99.9),
        "max_us": max(0.0, ordered[-1] - overhead_ns) / 1000.0,
        "total_ms": total / 1e6,
        "timer_overhead_ns": float(overhead_ns),
    }


def _instrument(cls: type, name: str, timings: Timings, key: str) -> None:
    """Wrap ``cls.name`` to count its calls and time (for the flusher breakdown); a method
    the application no longer has is left out of the breakdown. Buckets hold
    ``[calls, total ns, calls in progress]``."""
    original: Callable[..., Any] | None = getattr(cls, name, None)
    if original is None:
        return
    bucket = timings.setdefault(key, [0, 0, 0])

    def timed(*args: Any, **kwargs: Any) -> Any:
        bucket[2] += 1
        start = time.perf_counter_ns()
        try:
            return original(*args, **kwargs)
        finally:
            bucket[0] += 1
            bucket[1] += time.perf_counter_ns() - start
            bucket[2] -= 1

    setattr(cls, name, timed)


def _wait_idle(timings: Timings, timeout_s: float = 5.0) -> None:
    """Wait until no instrumented call is in progress: ``flush()`` returns as soon as the
    flusher signals, which it does just before its ``flush_once`` call returns."""
    deadline = time.monotonic() + timeout_s
    while any(bucket[2] for bucket in timings.values()) and time.monotonic() < deadline:
        time.sleep(0.005)


class Pacer:
    """Sleeps until line ``i`` is due at ``rate`` lines/s; records how late lines went out.

    A producer that cannot keep the rate (each emit costs more than 1/rate) stops at the
    planned end of the window instead of running longer: ``wait`` then returns True.
    """

    #: How far past the planned window a slow producer may go on emitting.
    GRACE_S = 0.25

    def __init__(self, rate: float, lines: int) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.start = time.perf_counter()
        self.end = self.start + lines * self.interval + self.GRACE_S
        self.max_late_s = 0.0
        self.late = 0  # lines emitted more than 5 ms after they were due

    def wait(self, i: int) -> bool:
        if not self.interval:
            return False
        due = self.start + (i - 1) * self.interval
        now = time.perf_counter()
        if due > now:
            time.sleep(due - now)
            return False
        if now > self.end:
            return True
        late = now - due
        if late > 0.005:
            self.late += 1
        self.max_late_s = max(self.max_late_s, late)
        return False


def _emit_lines_relaycast(log: Any, lines: int, pacer: Pacer, costs: array[int]) -> array[int]:
    info = log.info
    perf = time.perf_counter_ns
    now = time.time_ns
    for i in range(1, lines + 1):
        if pacer.wait(i):
            return costs[:i - 1]
        message = f"bench line {i}"
        t = now()
        start = perf()
        info(message, i=i, t=t)
        costs[i - 1] = perf() - start
    return costs


def _emit_lines_baseline(delay: Callable[..., Any], channel: str, run_id: str, lines: int,
                         pacer: Pacer, costs: array[int]) -> array[int]:
    perf = time.perf_counter_ns
    now = time.time_ns
    for i in range(1, lines + 1):
        if pacer.wait(i):
            return costs[:i - 1]
        message = f"bench line {i}"
        t = now()
        data = {"run_id": run_id, "events": [{"seq": i, "ts": t // 1_000_000, "level": "info",
                                              "message": message, "data": {"i": i, "t": t}}]}
        start = perf()
        delay(channel, data)
        costs[i - 1] = perf() - start
    return costs


def _preallocated(lines: int) -> array[int]:
    """Room for every line's cost, allocated before the first emit (so that the producer's
    RSS does not grow with the benchmark's own record during the run)."""
    return array("q", bytes(8 * lines))


def _handshake() -> None:
    print("READY", flush=True)
    answer = sys.stdin.readline().strip()
    if answer != "GO":
        raise SystemExit(f"producer: expected GO on stdin, got {answer!r}")


def run_relaycast(args: argparse.Namespace) -> dict[str, Any]:
    import tasks.celery_app  # noqa: F401 - wires this process's emitter to the broadcast queue
    from workflows.emitter import Emitter
    from workflows.log_stream import LogStream
    from workflows.outbox import Outbox
    from workflows.process import get_emitter
    from workflows.store import LogStore
    from workflows.writer import LineWriter

    timings: Timings = {}
    _instrument(Emitter, "flush_once", timings, "flush_once")
    _instrument(LineWriter, "write", timings, "store_lines")
    _instrument(LogStore, "append", timings, "sql_insert")
    _instrument(Outbox, "send", timings, "enqueue")

    warm = LogStream(args.warmup_run_id)
    for i in range(1, args.warmup_lines + 1):
        warm.info("warm-up", i=i, t=time.time_ns())
        time.sleep(args.warmup_gap_ms / 1000.0)
    warm.flush(30.0)
    _wait_idle(timings)
    for bucket in timings.values():
        bucket[0] = bucket[1] = 0
    emitter = get_emitter()
    before = asdict(emitter.stats)
    log = LogStream(args.run_id)
    overhead = timer_overhead_ns()
    _handshake()

    costs = _preallocated(args.lines)
    pacer = Pacer(args.rate, args.lines)
    cpu_start = time.process_time()
    first_emit_ns = time.time_ns()
    loop_start = time.perf_counter()
    costs = _emit_lines_relaycast(log, args.lines, pacer, costs)
    loop_s = time.perf_counter() - loop_start
    last_emit_ns = time.time_ns()
    flushed = log.flush(args.flush_timeout)
    flushed_s = time.perf_counter() - loop_start
    cpu_s = time.process_time() - cpu_start
    _wait_idle(timings)
    after = asdict(emitter.stats)
    stats = {k: v - before[k] for k, v in after.items() if isinstance(v, int)}
    return {
        "emit": summarize_ns(costs, overhead), "emit_loop_s": loop_s, "emitted": len(costs),
        "first_emit_ns": first_emit_ns, "last_emit_ns": last_emit_ns, "flushed": flushed,
        "flushed_s": flushed_s, "cpu_s": cpu_s,
        "pacing": {"max_late_ms": pacer.max_late_s * 1000, "late_lines": pacer.late},
        "emitter": stats,
        "flusher_ms": {k: {"calls": v[0], "total_ms": v[1] / 1e6} for k, v in timings.items()},
    }


def run_baseline(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.baseline import publish_line

    warm_channel = f"private-logs-{args.warmup_run_id}"
    for i in range(1, args.warmup_lines + 1):
        t = time.time_ns()
        publish_line.delay(warm_channel, {"run_id": args.warmup_run_id, "events": [
            {"seq": i, "ts": t // 1_000_000, "level": "info", "message": "warm-up",
             "data": {"i": i, "t": t}}]})
        time.sleep(args.warmup_gap_ms / 1000.0)
    overhead = timer_overhead_ns()
    _handshake()

    costs = _preallocated(args.lines)
    pacer = Pacer(args.rate, args.lines)
    cpu_start = time.process_time()
    first_emit_ns = time.time_ns()
    loop_start = time.perf_counter()
    costs = _emit_lines_baseline(publish_line.delay, f"private-logs-{args.run_id}", args.run_id,
                                 args.lines, pacer, costs)
    loop_s = time.perf_counter() - loop_start
    cpu_s = time.process_time() - cpu_start
    return {
        "emit": summarize_ns(costs, overhead), "emit_loop_s": loop_s, "emitted": len(costs),
        "first_emit_ns": first_emit_ns, "last_emit_ns": time.time_ns(), "flushed": True,
        "flushed_s": loop_s, "cpu_s": cpu_s,
        "pacing": {"max_late_ms": pacer.max_late_s * 1000, "late_lines": pacer.late},
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.producer")
    parser.add_argument("--design", choices=("relaycast", "baseline"), required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--lines", type=int, required=True)
    parser.add_argument("--rate", type=float, default=0.0, help="lines/s; 0: as fast as possible")
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--warmup-run-id", default="bench-warmup")
    parser.add_argument("--warmup-lines", type=int, default=20)
    parser.add_argument("--warmup-gap-ms", type=float, default=60.0)
    parser.add_argument("--flush-timeout", type=float, default=120.0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run = run_relaycast if args.design == "relaycast" else run_baseline
    result = run(args)
    result.update({"design": args.design, "run_id": args.run_id, "lines": args.lines,
                   "rate": args.rate, "pid": os.getpid(),
                   "rss_end_kb": status_kb("self", "VmRSS"),
                   "rss_peak_kb": status_kb("self", "VmHWM")})
    tmp = args.result.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(args.result)
    print("DONE", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
