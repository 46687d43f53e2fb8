"""Reading the store: ``logs RUN_ID [--follow]`` and ``runs``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from broadcasters.wire import Channels
from config import Settings
from relaycast.cli.common import at_or_above, count, duration_text, level, seq, utc


def register(sub: Any) -> None:
    from workflows.models import RunStatus

    logs = sub.add_parser("logs", help="print a run's stored lines")
    logs.add_argument("run_id", metavar="RUN_ID")
    logs.add_argument("--json", action="store_true", help="a JSON list of line objects")
    logs.add_argument("--after", type=seq, default=0, metavar="SEQ", help="only lines after SEQ")
    logs.add_argument("-f", "--follow", action="store_true",
                      help="print lines as they are stored until the run ends (waits for a run "
                      "not started yet); exit 0 when it succeeds, 1 when it fails or is lost; --json: one "
                      "object per line")
    logs.add_argument("--level", type=level, default=None,
                      help="only lines at LEVEL or above (debug, info, warning, error, critical)")
    logs.set_defaults(handler=cmd_logs)

    runs = sub.add_parser("runs", help="recent runs: workflow, run id, status, started, "
                          "duration, lines")
    runs.add_argument("--status", choices=[status.value for status in RunStatus], default=None)
    runs.add_argument("--limit", type=count(1, 10_000, "runs"), default=20, metavar="N",
                      help="the N most recently started (default 20)")
    runs.add_argument("--json", action="store_true", help="a JSON list of run objects")
    runs.set_defaults(handler=cmd_runs)


def cmd_logs(settings: Settings, args: argparse.Namespace) -> int:
    from workflows.store import store_for

    Channels(settings.channel_prefix).validate_run_id(args.run_id)
    if args.follow:
        return follow_logs(settings, args)
    lines = store_for(settings.database_url_or_default).lines(args.run_id, after_seq=args.after)
    if args.level:
        lines = [line for line in lines if at_or_above(line.level, args.level)]
    if args.json:
        print(json.dumps([line.event() for line in lines], ensure_ascii=False))
    if not lines:
        print(f"no lines for run {args.run_id}" + (f" after seq {args.after}" if args.after else "")
              + (f" at level {args.level} or above" if args.level else ""), file=sys.stderr)
        return 1
    if args.json:
        return 0
    for line in lines:
        print(line.text())
    return 0


#: How often ``logs --follow`` reads SQL, and how many lines at most per read.
FOLLOW_POLL_S = 0.2
FOLLOW_PAGE_LINES = 5000


def follow_logs(settings: Settings, args: argparse.Namespace) -> int:
    """``relaycast logs RUN --follow``: print the run's lines as they are stored, then exit 0
    when the run has succeeded, 1 when it has failed or was lost (its worker died), 130 on
    Ctrl-C.

    SQL is polled every :data:`FOLLOW_POLL_S` for lines after the last seq printed (a run's
    seqs become visible in order: see :meth:`LogStore.append`). The run's status is read
    before its lines: the workflow stores every line before it records the end, so a read
    made after the end was seen and finding nothing new means every line was printed.
    The first Ctrl-C stops between two reads; a second one (a read that hangs) at once.
    """
    import signal
    import threading

    from workflows.models import RunStatus
    from workflows.store import store_for

    store = store_for(settings.database_url_or_default)
    stop = threading.Event()

    def interrupted(_signum: int, _frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = signal.signal(signal.SIGINT, interrupted)
    try:
        after, said_waiting = args.after, False
        while not stop.is_set():
            run = store.run(args.run_id)
            lines = store.lines(args.run_id, after_seq=after, limit=FOLLOW_PAGE_LINES)
            for line in lines:
                if args.level is None or at_or_above(line.level, args.level):
                    print(json.dumps(line.event(), ensure_ascii=False) if args.json
                          else line.text())
            if lines:
                after = lines[-1].seq
                sys.stdout.flush()
                continue  # read again at once: more may be waiting
            if run is not None and run.status != RunStatus.RUNNING:
                return 0 if run.status == RunStatus.SUCCEEDED else 1
            if run is None and after == args.after and not said_waiting:
                print(f"relaycast: waiting for run {args.run_id} to start (Ctrl-C to stop)",
                      file=sys.stderr, flush=True)
                said_waiting = True
            stop.wait(FOLLOW_POLL_S)
        return 130
    finally:
        signal.signal(signal.SIGINT, previous)


def cmd_runs(settings: Settings, args: argparse.Namespace) -> int:
    """The most recently started runs, newest first."""
    from workflows.models import RunStatus
    from workflows.store import store_for

    store = store_for(settings.database_url_or_default)
    runs = store.recent_runs(limit=args.limit,
                             status=RunStatus(args.status) if args.status else None)
    counts = store.line_counts([run.run_id for run in runs])
    now_ms = time.time() * 1000
    rows: list[dict[str, Any]] = []
    for run in runs:
        end = run.finished_at if run.finished_at is not None else now_ms
        rows.append({"run_id": run.run_id, "workflow": run.workflow, "status": run.status,
                     "started_at": run.started_at, "finished_at": run.finished_at,
                     "duration_s": round(max(0.0, end - run.started_at) / 1000, 3),
                     "lines": counts.get(run.run_id, (0, 0))[0], "error": run.error})
    if args.json:
        print(json.dumps(rows, ensure_ascii=False))
        return 0
    if not rows:
        print("no runs" + (f" with status {args.status}" if args.status else ""))
        return 0
    table = [("WORKFLOW", "RUN ID", "STATUS", "STARTED (UTC)", "DURATION", "LINES")]
    for row in rows:
        table.append((row["workflow"] or "-", row["run_id"], row["status"],
                      utc(row["started_at"]).removesuffix(" UTC"),
                      duration_text(row["duration_s"]), f"{row['lines']:,}"))
    widths = [max(len(cells[i]) for cells in table) for i in range(len(table[0]))]
    for cells in table:
        left = "  ".join(cell.ljust(width) for cell, width in zip(cells[:-2], widths, strict=False))
        print(f"{left}  {cells[-2].rjust(widths[-2])}  {cells[-1].rjust(widths[-1])}")
    return 0
