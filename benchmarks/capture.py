"""``python -m benchmarks.capture``: what a captured ``logging`` record costs the workflow.

Per call, in the calling thread (the best of several rounds, loop overhead subtracted):

* ``LogStream.info(f"extracted {rows} rows")``, the reference: the same line as the record's
  (a constant message, which makes no string at all, is shown too);
* the capture handler on one ``logging.LogRecord`` of a running task (the capture's own
  cost: context read, level and logger checks, message formatting, one emit) — target:
  at most 3x the reference — for the root logger's handler, which every propagating record
  ends at, and for ``celery.task``'s (``get_task_logger`` records), which also marks the
  record as captured (a new key in the record's ``__dict__``: it grows the dict);
* for context, a whole ``logger.info("…%d…", n)`` call on a logger whose only handler is the
  capture handler, inside a task and outside any task (what ``logging`` itself costs before
  any handler runs, and what the handler adds where nothing is captured).

Lines go into a real emitter over SQLite in a temporary directory, stored between rounds
(not timed). Takes a few seconds.
"""

from __future__ import annotations

import argparse
import gc
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from workflows import capture
from workflows.emitter import Emitter
from workflows.log_stream import LogStream
from workflows.store import LogStore

#: The target: a captured record costs at most this many LogStream.info calls.
MAX_RATIO = 3.0


def _per_call_ns(calls: int, body: Callable[[int], None]) -> float:
    """The per-call cost of ``body(calls)``, with the cyclic GC off while it runs (as
    ``timeit`` does: a collection would land on whichever loop happens to trigger it)."""
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter_ns()
        body(calls)
        return (time.perf_counter_ns() - start) / calls
    finally:
        gc.enable()


def measure(calls: int = 2_000, rounds: int = 30) -> dict[str, float]:
    """Per-call costs in ns: ``log_stream``, ``captured_record``, ``logger_call_in_task``,
    ``logger_call_outside_task``, ``empty_loop``; and ``ratio`` (captured / log_stream)."""
    with tempfile.TemporaryDirectory(prefix="relaycast-capture-bench-") as tmp:
        store = LogStore.from_url(f"sqlite:///{Path(tmp) / 'bench.db'}")
        # The flusher stays asleep while a round runs; each round is stored after it.
        emitter = Emitter(store=lambda: store, enqueue=None, flush_interval_ms=60_000,
                          flush_max_lines=10 * calls, max_buffer_lines=20 * calls)
        try:
            return _measure(emitter, calls, rounds)
        finally:
            emitter.stop(timeout_s=30)
            store.close()


def _measure(emitter: Emitter, calls: int, rounds: int) -> dict[str, float]:
    log = LogStream("bench-capture", emitter=emitter)

    def stored() -> None:
        emitter.flush(60, wait_for_broker=False)

    def empty(n: int) -> None:
        for _ in range(n):
            pass

    def log_stream(n: int) -> None:
        info, rows = log.info, 1200
        for _ in range(n):
            info(f"extracted {rows} rows")

    def log_stream_literal(n: int) -> None:
        info = log.info
        for _ in range(n):
            info("extracted 1200 rows")

    records: list[logging.LogRecord] = []

    def fresh_records() -> None:
        stored()
        records[:] = [logging.LogRecord("acme.etl", logging.INFO, __file__, 1,
                                        "extracted %d rows", (1200,), None) for _ in range(calls)]

    def captured(n: int) -> None:
        handle = capture.handler.handle
        for record in records:
            handle(record)

    def captured_marked(n: int) -> None:
        handle = capture.task_handler.handle
        for record in records:
            handle(record)

    bench_logger = logging.getLogger("acme.bench")
    bench_logger.propagate = False
    bench_logger.setLevel(logging.INFO)
    bench_logger.addHandler(capture.handler)

    def logger_call(n: int) -> None:
        info = bench_logger.info
        for _ in range(n):
            info("extracted %d rows", 1200)

    capture.configure("logging", "INFO")
    # The cases take turns within each round, in small rounds, so a busy machine slows them
    # alike: each cost is its best round; the ratio is the median of the rounds' ratios.
    best: dict[str, float] = {}
    ratios: list[float] = []

    def keep(name: str, cost_ns: float) -> float:
        best[name] = min(best.get(name, float("inf")), cost_ns)
        return cost_ns

    for _ in range(rounds):
        overhead = keep("empty_loop", _per_call_ns(calls, empty))
        token = capture.begin(log.run_id, emitter)
        try:
            keep("log_stream_literal", _per_call_ns(calls, log_stream_literal))
            reference = keep("log_stream", _per_call_ns(calls, log_stream))
            fresh_records()
            captured_ns = keep("captured_record", _per_call_ns(calls, captured))
            ratios.append((captured_ns - overhead) / (reference - overhead))
            fresh_records()
            keep("captured_record_marked", _per_call_ns(calls, captured_marked))
            stored()
            keep("logger_call_in_task", _per_call_ns(calls, logger_call))
            stored()
        finally:
            capture.end(token)
        keep("logger_call_outside_task", _per_call_ns(calls, logger_call))
    bench_logger.removeHandler(capture.handler)
    stored()
    overhead = best["empty_loop"]
    figures = {name: cost - overhead if name != "empty_loop" else cost
               for name, cost in best.items()}
    figures["ratio"] = statistics.median(ratios)
    figures["ratio_of_bests"] = figures["captured_record"] / figures["log_stream"]
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.capture", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2_000, help="calls per round")
    parser.add_argument("--rounds", type=int, default=30, help="rounds")
    args = parser.parse_args(argv)
    figures = measure(args.calls, args.rounds)
    print(f"LogStream.info(f\"extracted {{rows}} rows\")  {figures['log_stream'] / 1000:7.3f} µs/call"
          "  (the reference: the same line)")
    print(f"LogStream.info(\"extracted 1200 rows\")      "
          f"{figures['log_stream_literal'] / 1000:7.3f} µs/call  (a constant: no string made)")
    print(f"captured record (the root's handler)       {figures['captured_record'] / 1000:7.3f} µs/call")
    print(f"  ... marked (celery.task's handler)       "
          f"{figures['captured_record_marked'] / 1000:7.3f} µs/call")
    print(f"logger.info(...) in a task, captured       {figures['logger_call_in_task'] / 1000:7.3f} µs/call")
    print(f"logger.info(...) outside a task            "
          f"{figures['logger_call_outside_task'] / 1000:7.3f} µs/call")
    verdict = "PASS" if figures["ratio"] <= MAX_RATIO else "FAIL"
    print(f"ratio captured record / LogStream.info     {figures['ratio']:7.2f}x  "
          f"(median of the rounds; of the best rounds {figures['ratio_of_bests']:.2f}x; "
          f"target <= {MAX_RATIO:g}x: {verdict})")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    raise SystemExit(main())
