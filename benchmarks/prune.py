"""``python -m benchmarks.prune``: what retention costs a workflow logging meanwhile.

    python -m benchmarks.prune [--lines 1000000] [--rate 1000] [--quiet-s 20]
                               [--batch-lines 2000] [--pause-ms 20] [--json FILE]

On PostgreSQL (``127.0.0.1:5432``, user ``postgres``, trust auth, or
``RELAYCAST_BENCH_POSTGRES``): a database of its own is created, migrated and seeded
with ``--lines`` old lines (``INSERT … SELECT generate_series``: 1,000 lines per run, 40
days old, plus their runs, run counters and a month of health reports), and dropped at the
end. Then a workflow process logs ``--rate`` lines/s the way the emitter stores them: every
50 ms one ``LogStore.append`` carrying the lines emitted since the previous one (a slow
append makes the next one bigger, as in the emitter). Each append is timed.

Phases, in the same run: ``--quiet-s`` seconds without a prune (the reference), then the
prune of everything older than 30 days (:func:`workflows.retention.prune`, what beat's
``relaycast.prune`` and ``relaycast prune`` run), then a few seconds more. Printed: p50 /
p99 / max of the workflow's store latency per flush in each phase and the ratio, the
prune's speed, and checks: every line the workflow emitted is stored, numbered 1..N, and
every old line is gone. Target: p99 during the prune under 100 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.report import percentile
from benchmarks.unwind import cleanup_stack

ADMIN_URL = os.environ.get("RELAYCAST_BENCH_POSTGRES",
                           "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
DAY_MS = 86_400_000
LINES_PER_RUN = 1000
FLUSH_INTERVAL_MS = 50
TARGET_P99_MS = 100.0
RETENTION_DAYS = 30
SEED_AGE_DAYS = 40
#: Seconds the workflow goes on logging after the prune ends.
AFTER_S = 5.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.prune", description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--lines", type=int, default=1_000_000, help="old lines to prune")
    parser.add_argument("--rate", type=float, default=1000.0, help="the workflow's lines/s")
    parser.add_argument("--quiet-s", type=float, default=20.0,
                        help="seconds of logging without a prune (the reference)")
    parser.add_argument("--batch-lines", type=int, default=2000, help="lines per DELETE")
    parser.add_argument("--pause-ms", type=float, default=20.0, help="pause between batches")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE",
                        help="also write every figure as JSON")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the target fails")
    parser.add_argument("--writer", default=None, help=argparse.SUPPRESS)  # the workflow process
    parser.add_argument("--run-id", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    return parser


# ---------------------------------------------------------------------------------- the workflow

def write(url: str, run_id: str, rate: float, out: Path) -> int:
    """The workflow process: append what the emitter would, every flush, until stdin closes;
    then write ``[[wall_s, latency_ms, lines], ...]`` and the number of lines to ``out``."""
    import threading

    from workflows.store import LogStore

    store = LogStore.from_url(url, migrate=False)
    stop = threading.Event()

    def wait_for_eof() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=wait_for_eof, daemon=True).start()
    flushes: list[tuple[float, float, int]] = []
    emitted = 0
    interval_s = FLUSH_INTERVAL_MS / 1000
    start = time.monotonic()
    print("READY", flush=True)
    tick = 0
    while not stop.is_set():
        tick += 1
        now = time.monotonic()
        due = int(rate * (now - start))
        lines = [{"ts": int(time.time() * 1000), "level": "info",
                  "message": f"workflow line {emitted + i + 1}", "data": {"i": emitted + i + 1}}
                 for i in range(due - emitted)]
        if lines:
            began = time.perf_counter()
            store.append([(run_id, lines)])
            flushes.append((time.time(), (time.perf_counter() - began) * 1000, len(lines)))
            emitted += len(lines)
        stop.wait(max(0.0, start + tick * interval_s - time.monotonic()))
    store.close()
    out.write_text(json.dumps({"flushes": flushes, "emitted": emitted}))
    return 0


# ---------------------------------------------------------------------------------- set-up

def _admin() -> Any:
    from sqlalchemy import create_engine

    return create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")


def create_database() -> str:
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    name = f"relaycast_bench_{uuid.uuid4().hex[:10]}"
    admin = _admin()
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    return make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    admin = _admin()
    try:
        with admin.connect() as connection:
            connection.execute(text(
                f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
    finally:
        admin.dispose()


def seed(url: str, lines: int, now_ms: int) -> dict[str, float]:
    """Old lines, their runs and counters, a month of health reports (one a minute)."""
    from sqlalchemy import create_engine, text

    old = now_ms - SEED_AGE_DAYS * DAY_MS
    runs = -(-lines // LINES_PER_RUN)
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    figures: dict[str, float] = {}
    try:
        with engine.connect() as connection:
            began = time.monotonic()
            connection.execute(text(
                "INSERT INTO log_lines (run_id, seq, ts, level, message, data, broadcast_state, "
                "broadcaster) SELECT 'old-' || (g / :per_run), (g % :per_run) + 1, :old + g, "
                "'info', 'old line ' || g || ': extracted rows from the source', "
                "json_build_object('i', g, 'rows', 1200), 'sent', 'pusher' "
                "FROM generate_series(0, :n - 1) AS g"),
                {"per_run": LINES_PER_RUN, "old": old, "n": lines})
            connection.execute(text(
                "INSERT INTO runs (run_id, workflow, status, params, started_at, finished_at) "
                "SELECT 'old-' || r, 'etl', 'succeeded', '{}'::json, :old + r * :per_run, "
                ":old + r * :per_run + :per_run FROM generate_series(0, :runs - 1) AS r"),
                {"old": old, "per_run": LINES_PER_RUN, "runs": runs})
            connection.execute(text(
                "INSERT INTO run_counters (run_id, last_seq) SELECT run_id, MAX(seq) "
                "FROM log_lines GROUP BY run_id"))
            connection.execute(text(
                "INSERT INTO health_reports (generated_at, healthy, report) "
                "SELECT :old_s + m * 60, true, json_build_object('minute', m) "
                "FROM generate_series(0, 30 * 24 * 60 - 1) AS m"), {"old_s": old / 1000})
            figures["seed_s"] = time.monotonic() - began
            began = time.monotonic()
            connection.execute(text("VACUUM ANALYZE"))
            figures["vacuum_s"] = time.monotonic() - began
    finally:
        engine.dispose()
    return figures


# ---------------------------------------------------------------------------------- the run

def _latency(flushes: list[list[float]], start: float, end: float) -> dict[str, Any]:
    window = sorted(ms for wall, ms, _ in flushes if start <= wall < end)
    return {"flushes": len(window), "p50_ms": percentile(window, 50),
            "p99_ms": percentile(window, 99), "max_ms": window[-1] if window else None}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from sqlalchemy import func, select

    from workflows.models import LogLine
    from workflows.retention import PruneOptions, prunable, prune
    from workflows.store import LogStore

    report: dict[str, Any] = {"setup": {"lines": args.lines, "rate": args.rate,
                                        "batch_lines": args.batch_lines,
                                        "pause_ms": args.pause_ms, "cpus": os.cpu_count()}}
    with cleanup_stack() as stack:
        url = create_database()
        stack.callback(drop_database, url)
        _say(f"created the PostgreSQL database {url.rsplit('/', 1)[-1]}")
        store = LogStore.from_url(url)  # migrations
        stack.callback(store.close)
        _say(f"seeding {args.lines:,} old lines")
        report["seed"] = seed(url, args.lines, int(time.time() * 1000))
        workdir = Path(tempfile.mkdtemp(prefix="relaycast-prune-bench-"))
        out = workdir / "writer.json"
        run_id = f"live-{uuid.uuid4().hex[:6]}"
        writer = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.prune", "--writer", url, "--run-id", run_id,
             "--rate", str(args.rate), "--out", str(out)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        stack.callback(_end, writer)
        assert writer.stdout is not None
        if writer.stdout.readline().strip() != "READY":
            raise RuntimeError("the workflow process did not start")
        _say(f"the workflow logs {args.rate:g} lines/s; {args.quiet_s:g} s without a prune")
        quiet_start = time.time()
        time.sleep(args.quiet_s)
        before_ms = int(time.time() * 1000) - RETENTION_DAYS * DAY_MS
        expected = prunable(store, before_ms)
        _say(f"pruning {expected.lines:,} lines, {expected.runs:,} runs, "
             f"{expected.counters:,} counters, {expected.health_reports:,} health reports")
        prune_start = time.time()
        result = prune(store, before_ms, PruneOptions(batch_lines=args.batch_lines,
                                                      pause_s=args.pause_ms / 1000))
        prune_end = time.time()
        _say(f"pruned in {result.seconds:.1f} s; {AFTER_S:g} s more of logging")
        time.sleep(AFTER_S)
        assert writer.stdin is not None
        writer.stdin.close()
        if writer.wait(60) != 0:
            raise RuntimeError("the workflow process failed")
        written = json.loads(out.read_text())
        flushes = written["flushes"]
        with store.engine.connect() as connection:
            stored = list(connection.execute(select(LogLine.seq).where(LogLine.run_id == run_id)
                                             .order_by(LogLine.seq)).scalars())
            old_left = connection.execute(select(func.count()).select_from(LogLine).where(
                LogLine.ts < before_ms)).scalar()
    quiet = _latency(flushes, quiet_start, prune_start)
    during = _latency(flushes, prune_start, prune_end)
    report.update({
        "quiet": quiet, "during_prune": during,
        "after": _latency(flushes, prune_end, float("inf")),
        "p99_ratio": (during["p99_ms"] / quiet["p99_ms"]
                      if during["p99_ms"] and quiet["p99_ms"] else None),
        "prune": {"seconds": result.seconds, "batches": result.batches,
                  "lines": result.deleted.lines, "runs": result.deleted.runs,
                  "counters": result.deleted.counters,
                  "health_reports": result.deleted.health_reports,
                  "lines_per_s": result.deleted.lines / result.seconds if result.seconds else None,
                  "expected": expected.__dict__},
        "checks": {"emitted": written["emitted"], "stored": len(stored),
                   "numbered_1_to_n": stored == list(range(1, len(stored) + 1)),
                   "old_lines_left": old_left},
    })
    report["target"] = {"p99_ms_during_prune": during["p99_ms"], "target_ms": TARGET_P99_MS,
                        "verdict": "PASS" if during["p99_ms"] is not None
                        and during["p99_ms"] < TARGET_P99_MS else "FAIL"}
    return report


def _end(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(10)


def _say(text: str) -> None:
    print(f"  … {text}", file=sys.stderr, flush=True)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def render(report: dict[str, Any]) -> str:
    prune, checks, target = report["prune"], report["checks"], report["target"]
    rows = [("no prune (reference)", report["quiet"]), ("during the prune", report["during_prune"]),
            ("after it", report["after"])]
    out = [f"Workflow store latency (LogStore.append per 50 ms flush, {report['setup']['rate']:g} "
           f"lines/s) while {prune['lines']:,} old lines are pruned — PostgreSQL",
           "", f"{'phase':<22}{'flushes':>9}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"]
    for label, figures in rows:
        out.append(f"{label:<22}{figures['flushes']:>9}{_ms(figures['p50_ms']):>9}"
                   f"{_ms(figures['p99_ms']):>9}{_ms(figures['max_ms']):>9}")
    ratio = report["p99_ratio"]
    out += ["", f"p99 during / without: {ratio:.2f}x" if ratio else "p99 ratio: -",
            f"prune: {prune['lines']:,} lines, {prune['runs']:,} runs, {prune['counters']:,} "
            f"counters, {prune['health_reports']:,} health reports in {prune['seconds']:.1f} s "
            f"({prune['batches']} batches, {prune['lines_per_s'] or 0:,.0f} lines/s)",
            f"checks: {checks['stored']:,} of {checks['emitted']:,} emitted lines stored, "
            f"numbered 1..N: {checks['numbered_1_to_n']}, old lines left: {checks['old_lines_left']}",
            f"target: p99 during the prune < {target['target_ms']:.0f} ms: "
            f"{_ms(target['p99_ms_during_prune'])} ms → {target['verdict']}"]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.writer:
        return write(args.writer, args.run_id, args.rate, args.out)

    from sqlalchemy.exc import OperationalError

    try:
        report = run(args)
    except OperationalError as exc:
        print(f"benchmarks.prune: PostgreSQL unreachable at {ADMIN_URL} "
              f"(set RELAYCAST_BENCH_POSTGRES): {str(exc.orig).splitlines()[0]}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nbenchmarks.prune: interrupted; the database was dropped", file=sys.stderr)
        return 130
    print(render(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2, default=str))
        print(f"figures written to {args.json}")
    checks = report["checks"]
    broken = (checks["stored"] != checks["emitted"] or not checks["numbered_1_to_n"]
              or checks["old_lines_left"])
    if broken:
        print("benchmarks.prune: a check failed (see above)", file=sys.stderr)
        return 1
    return 1 if args.strict and report["target"]["verdict"] == "FAIL" else 0


if __name__ == "__main__":
    raise SystemExit(main())
