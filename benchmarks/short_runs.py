"""``python -m benchmarks.short_runs``: what many short runs cost the caller and the pipeline.

500 runs of 10 lines each, one after another, each in its own ``with LogStream(run_id)``
block, through the real pipeline: a private redis-server (broker and shared state), soketi
(Pusher protocol), SQLite, one ``celery -A relaycast worker -Q broadcast`` (prefork, 2
processes). Two behaviours, in the same run, against the same servers and worker, each in a
fresh producer process:

* ``old``: leaving the block waits for the broker (``flush(wait_for_broker=True)``, what
  ``__exit__`` did before): one flush, one broadcast task and one provider request per run;
* ``new``: leaving the block waits for SQL only (``close()``); the lines go with the
  flusher's next send, sharing its broadcast task with the other runs waiting.

Per behaviour: the time spent in the caller per run (the ``with`` exit alone, and the whole
block), broadcast tasks enqueued (the emitter's counter; the worker's ``broadcast_tasks``
pipeline counter), provider HTTP requests (soketi's counter) and ``log`` events published,
once every line is marked delivered in SQL; then the ratios new/old. Target: at most 1/10
of the old behaviour's broadcast tasks and provider requests. About a minute.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks import report as rep
from benchmarks.context import STATE_PREFIX, Context, open_context
from benchmarks.harness import BenchWorker, Progress, soketi_available, soketi_counters
from benchmarks.options import build_parser, make_plan
from benchmarks.unwind import cleanup_stack
from broadcasters.keys import PipelineCounter

MODES = ("old", "new")
#: The target: the new behaviour's tasks and requests, as a fraction of the old one's.
MAX_FRACTION = 0.1


# ------------------------------------------------------------------------------ producer side

def produce(mode: str, prefix: str, runs: int, lines: int, result: Path) -> None:
    """The workflow side (a process of its own): warm up, say READY, wait for GO, then run
    ``runs`` short runs and write the figures to ``result``."""
    import tasks.celery_app  # noqa: F401 - wires this process's emitter to the broadcast queue
    from workflows.log_stream import LogStream
    from workflows.process import get_emitter

    class OldExit(LogStream):
        """``LogStream`` as it left its block before: waiting for the broker."""

        def close(self, timeout_s: float = 5.0) -> bool:
            return self.flush(timeout_s, wait_for_broker=True)

    stream_class = OldExit if mode == "old" else LogStream
    emitter = get_emitter()
    with LogStream(f"{prefix}-warmup") as warm:
        for i in range(lines):
            warm.info("warm-up", i=i)
    emitter.flush(30.0)
    print("READY", flush=True)
    if sys.stdin.readline().strip() != "GO":
        raise SystemExit("producer: expected GO")
    before = emitter.stats
    exits: list[float] = []
    blocks: list[float] = []
    started = time.perf_counter()
    for r in range(runs):
        begin = time.perf_counter()
        with stream_class(f"{prefix}-{r}") as log:
            for i in range(lines):
                log.info(f"step {i} of run {r}", i=i)
            leaving = time.perf_counter()
        end = time.perf_counter()
        exits.append(end - leaving)
        blocks.append(end - begin)
    loop_s = time.perf_counter() - started
    # What the periodic flush (or process exit) would send next, sent now so it is counted.
    flushed = emitter.flush(60.0)
    after = emitter.stats
    result.write_text(json.dumps({
        "exit_ms": [e * 1000 for e in exits], "block_ms": [b * 1000 for b in blocks],
        "loop_s": loop_s, "flushed": flushed,
        "tasks_enqueued": after.tasks_enqueued - before.tasks_enqueued,
        "stored": after.stored - before.stored,
        "enqueue_failures": after.enqueue_failures - before.enqueue_failures,
    }))


# ------------------------------------------------------------------------------ the driver

def _pipeline(redis_url: str) -> dict[str, int]:
    from broadcasters.backends import RedisBackend
    from broadcasters.state import SharedState

    state = SharedState(RedisBackend.from_url(redis_url, STATE_PREFIX))
    try:
        return state.pipeline_counts(60)
    finally:
        state.close()


def _wait_delivered(ctx: Context, run_ids: list[str], lines: int, timeout_s: float) -> bool:
    """Until every line of ``run_ids`` is stored and no longer pending in SQL (the worker
    marks lines after publishing them, so its provider requests are over by then)."""
    from workflows.store import LogStore

    store = LogStore.from_url(ctx.db_url, migrate=False)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            counts = store.broadcast_counts(run_ids)
            done = sum(n for (state, _), n in counts.items() if state != "pending")
            if done >= lines:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
    finally:
        store.close()


def _read_line(proc: subprocess.Popen[str], timeout_s: float) -> str:
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(proc.stdout.readline() if proc.stdout
                                                        else ""), daemon=True)
    reader.start()
    reader.join(timeout_s)
    return got[0].strip() if got else "<timeout>"


def run_mode(ctx: Context, mode: str, runs: int, lines: int) -> dict[str, Any]:
    prefix = f"short-{mode}-{uuid.uuid4().hex[:6]}"
    result = ctx.workdir / f"{prefix}.json"
    log_path = ctx.workdir / f"{prefix}.log"
    ctx.progress.note(f"{mode}: {runs} runs of {lines} lines")
    with log_path.open("wb") as log, contextlib.ExitStack() as stack:
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.short_runs", "--producer", mode, "--prefix", prefix,
             "--runs", str(runs), "--lines", str(lines), "--result", str(result)],
            cwd=ctx.workdir, env=ctx.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=log, text=True, start_new_session=True)
        stack.callback(_close, proc)
        if (said := _read_line(proc, 90.0)) != "READY":
            raise RuntimeError(f"{mode} producer did not get ready ({said!r}):\n"
                               f"{log_path.read_text(errors='replace')[-3000:]}")
        if not _wait_delivered(ctx, [f"{prefix}-warmup"], lines, 30.0):
            ctx.notes.append(f"{mode}: the warm-up run was not delivered within 30 s")
        soketi_before, pipeline_before = soketi_counters(ctx.soketi), _pipeline(ctx.redis.url)
        assert proc.stdin is not None
        proc.stdin.write("GO\n")
        proc.stdin.flush()
        proc.wait(timeout=300)
        if proc.returncode != 0 or not result.exists():
            raise RuntimeError(f"{mode} producer failed (exit {proc.returncode}):\n"
                               f"{log_path.read_text(errors='replace')[-3000:]}")
    figures: dict[str, Any] = json.loads(result.read_text())
    run_ids = [f"{prefix}-{r}" for r in range(runs)]
    if not _wait_delivered(ctx, run_ids, runs * lines, 60.0):
        ctx.notes.append(f"{mode}: lines still pending in SQL 60 s after the last run")
    soketi_after, pipeline_after = soketi_counters(ctx.soketi), _pipeline(ctx.redis.url)
    if soketi_before is not None and soketi_after is not None:
        figures["http_calls"] = int(soketi_after["http_calls"] - soketi_before["http_calls"])
    figures["worker_tasks"] = (pipeline_after.get(PipelineCounter.BROADCAST_TASKS, 0)
                               - pipeline_before.get(PipelineCounter.BROADCAST_TASKS, 0))
    exits, blocks = sorted(figures.pop("exit_ms")), sorted(figures.pop("block_ms"))
    figures["exit_ms"] = {"mean": statistics.fmean(exits), "p50": rep.percentile(exits, 50),
                          "p99": rep.percentile(exits, 99), "total_s": sum(exits) / 1000}
    figures["block_ms"] = {"mean": statistics.fmean(blocks), "p50": rep.percentile(blocks, 50)}
    ctx.progress.done(mode, f"{figures['tasks_enqueued']} tasks, "
                            f"{figures.get('http_calls', '-')} provider requests, "
                            f"exit {figures['exit_ms']['mean']:.2f} ms/run")
    return figures


def _close(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


def _ratio(new: float | None, old: float | None) -> float | None:
    return new / old if new is not None and old else None


def render(results: dict[str, dict[str, Any]], runs: int, lines: int, interval_ms: int) -> str:
    old, new = results["old"], results["new"]
    rows = [
        ("caller time per run, with exit: mean ms", "exit_ms", "mean"),
        ("caller time per run, with exit: p50 ms", "exit_ms", "p50"),
        ("caller time per run, with exit: p99 ms", "exit_ms", "p99"),
        ("caller time, all exits: s", "exit_ms", "total_s"),
        ("caller time per run, whole block: mean ms", "block_ms", "mean"),
        ("broadcast tasks enqueued (emitter)", "tasks_enqueued", None),
        ("broadcast tasks run (worker)", "worker_tasks", None),
        ("provider HTTP requests (soketi)", "http_calls", None),
    ]
    out = [f"{runs} runs x {lines} lines, flush interval {interval_ms} ms", "",
           f"{'figure':<44} {'new':>10} {'old':>10} {'new/old':>9}"]
    for label, key, sub in rows:
        a = new.get(key) if sub is None else new[key].get(sub)
        b = old.get(key) if sub is None else old[key].get(sub)
        out.append(f"{label:<44} {rep.fmt(a, 2):>10} {rep.fmt(b, 2):>10} "
                   f"{rep.fmt_ratio(_ratio(a, b)):>9}")
    out.append("")
    for label, key in (("broadcast tasks", "tasks_enqueued"), ("provider requests", "http_calls")):
        fraction = _ratio(new.get(key), old.get(key))
        verdict = "PASS" if fraction is not None and fraction <= MAX_FRACTION else "FAIL"
        shown = f"{fraction:.3f}" if fraction is not None else "-"
        out.append(f"target {label} new/old <= {MAX_FRACTION:g}: {shown} {verdict}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.short_runs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--lines", type=int, default=10, help="lines per run")
    parser.add_argument("--flush-interval-ms", type=int, default=50,
                        help="RELAYCAST_FLUSH_INTERVAL_MS (project default 50)")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE")
    parser.add_argument("--producer", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.producer:
        produce(args.producer, args.prefix, args.runs, args.lines, args.result)
        return 0
    if not soketi_available():
        print("benchmarks.short_runs: soketi is not installed: run `npm ci` in tools/",
              file=sys.stderr)
        return 2
    plan = make_plan(build_parser("").parse_args(
        ["--quick", "--flush-interval-ms", str(args.flush_interval_ms)]))
    progress = Progress()
    started = time.monotonic()
    with cleanup_stack() as stack:
        ctx = open_context(plan, stack, progress)
        worker = BenchWorker(ctx.env, queues="broadcast", concurrency=plan.concurrency,
                             name="bench-short-runs")
        stack.callback(worker.close)
        progress.note(f"starting the worker (prefork, concurrency {plan.concurrency})")
        worker.start(timeout_s=90.0)
        results = {mode: run_mode(ctx, mode, args.runs, args.lines) for mode in MODES}
        notes = list(ctx.notes)
        progress.note("stopping servers")
    print(render(results, args.runs, args.lines, args.flush_interval_ms))
    for note in notes:
        print(f"note: {note}")
    print(f"\n(wall time {time.monotonic() - started:.0f} s)")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
