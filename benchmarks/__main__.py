"""``python -m benchmarks``: relaycast's batched design against one Celery task per line.

    python -m benchmarks [--quick] [--lines N] [--rate R] [--seconds T] [--soak]
                         [--json FILE] [--profile]

Everything runs on this machine, on loopback, started and stopped by the benchmark: a
private redis-server (broker and shared state), soketi (the Pusher protocol, 10 KB event
limit like Pusher Channels), SQLite in a temporary directory, one ``celery -A relaycast
worker`` per design (prefork, concurrency 2 by default) and a WebSocket subscriber playing
the browser. Each design runs two phases, each with a fresh producer process:

* burst: N lines as fast as possible (relaycast 20,000; baseline 2,000, as it is ~100x
  slower: rates are compared, not totals);
* sustained: R lines/s (1,000) for T seconds (30; ``--soak``: relaycast 5 minutes), with
  the worker's RSS sampled every second. The baseline falls behind: what it delivers
  within ``--drain`` seconds after its last emit is counted, the rest is reported lost.

Figures: end-to-end lines/s (first emit → last line at the subscriber), emit cost per line
(µs, timed around the emit call in the producer), latency emit → subscriber (timestamps
embedded in each line; one clock), provider messages (``log`` events received) and HTTP
requests (soketi's counter) per 1,000 lines, Celery tasks, CPU time per component, and
RSS start/end/max/slope. Then the ratios relaycast/baseline and PASS/FAIL per target.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import time
from typing import Any

from benchmarks import report as rep
from benchmarks.ceiling import ceiling_targets, render_ceiling, run_ceiling
from benchmarks.context import design_key, open_context, postgresql_context
from benchmarks.designs import run_design
from benchmarks.harness import Progress, soketi_available
from benchmarks.options import Plan, build_parser, make_plan
from benchmarks.profiling import profile_summary, py_spy_binary
from benchmarks.unwind import cleanup_stack


def main(argv: list[str] | None = None) -> int:
    args = build_parser((__doc__ or "").splitlines()[0]).parse_args(argv)
    plan = make_plan(args)
    problem = _preflight()
    if problem is None and plan.profile and py_spy_binary() is None:
        problem = "--profile needs py-spy: .venv/bin/pip install py-spy (not a project dependency)"
    if problem is not None:
        print(f"benchmarks: {problem}", file=sys.stderr)
        return 2
    try:
        report = execute(plan, args, Progress())
    except KeyboardInterrupt:
        print("\nbenchmarks: interrupted; every process and temporary directory was removed",
              file=sys.stderr)
        return 130
    except (RuntimeError, TimeoutError, OSError) as exc:
        print(f"\nbenchmarks: failed: {exc}", file=sys.stderr)
        return 2
    print(rep.render(report))
    print(render_ceiling(report))
    print(f"\n(wall time {report['setup']['wall_s']:.0f} s)")
    if args.json is not None:
        args.json.write_text(json.dumps(_plain(report), indent=2, default=str))
        print(f"figures written to {args.json}")
    failed = [t for t in [*report["targets"], *report["ceiling_targets"]]
              if t["verdict"] == "FAIL"]
    return 1 if args.strict and failed else 0


def execute(plan: Plan, args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    """Start the servers, run each design, stop everything; the report's figures."""
    started = time.monotonic()
    with cleanup_stack() as stack:
        ctx = open_context(plan, stack, progress)
        ceiling = run_ceiling(ctx) if "relaycast" in plan.designs else None
        if ceiling is not None and ceiling["throughput_lps"]:
            plan.fast_rate = round(ceiling["throughput_lps"] * plan.fast_fraction)
        results: dict[str, Any] = {}
        for design in plan.designs:
            if design != "relaycast":
                results[design] = run_design(ctx, stack, design)
                continue
            for database in plan.databases:
                on = ctx if database == "sqlite" else postgresql_context(ctx, stack)
                results[design_key(database)] = run_design(on, stack, design,
                                                           unwatched=database == "sqlite")
        profile = profile_summary(ctx.profiler, plan.designs) if ctx.profiler else None
        if ctx.profiler is not None and args.profile_dir is not None:
            ctx.profiler.copy_to(args.profile_dir)
        progress.note("stopping servers")
    setup = {
        "cpus": os.cpu_count(), "python": platform.python_version(),
        "concurrency": plan.concurrency, "flush_interval_ms": plan.flush_interval_ms,
        "flush_max_lines": plan.flush_max_lines, "rate": plan.rate,
        "seconds": plan.seconds, "relaycast_seconds": plan.relaycast_seconds,
        "drain_s": plan.drain_s, "quick": plan.quick, "soak": plan.soak,
        "line_bytes": _line_bytes(), "profiled": plan.profile, "databases": plan.databases,
        "fast_rate": plan.fast_rate, "fast_fraction": plan.fast_fraction,
        "wall_s": time.monotonic() - started,
    }
    notes = list(ctx.notes)
    if plan.profile:
        notes.append("py-spy was sampling the producer and workers: the figures of this run "
                     "are perturbed; compare against a run without --profile")
    return {"setup": setup, "results": results, "notes": notes, "profile": profile,
            "targets": rep.evaluate_targets(results, plan.soak), "ceiling": ceiling,
            "ceiling_targets": ceiling_targets(results, ceiling) if ceiling else []}


def _preflight() -> str | None:
    if shutil.which("redis-server") is None:
        return "redis-server is not on PATH (apt-get install redis-server)"
    if not soketi_available():
        return "soketi is not installed: run `npm ci` in tools/ (and install node)"
    return None


def _line_bytes() -> int:
    sample = {"seq": 12345, "ts": 1_700_000_000_000, "level": "info",
              "message": "bench line 12345", "data": {"i": 12345, "t": 1_700_000_000_000_000_000}}
    return len(json.dumps(sample, separators=(",", ":")))


def _plain(value: Any) -> Any:
    """``value`` with infinities as the string "inf" (strict JSON has no Infinity)."""
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


if __name__ == "__main__":
    raise SystemExit(main())
