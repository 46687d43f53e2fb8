"""The ``relaycast`` command line.

Celery's own CLI stays the way to run processes (``celery -A tasks worker``, ``beat``,
``flower``); this one is for people: inspecting and steering the broadcasters, and
operating the log store (``runs``, ``logs --follow``, ``replay``, ``prune``).

Exit status: 0 done; 1 the command could not do what it was asked (``status``: degraded
or stale; ``logs``: no such lines; ``logs --follow``: the run failed; a server it needs is
unreachable: nothing was changed); 2 the command or the configuration is wrong (one line
says what); 130 interrupted (Ctrl-C). Every error is one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any, NoReturn

from sqlalchemy.exc import SQLAlchemyError

from broadcasters.backends import StateUnavailable
from broadcasters.state import SharedState
from broadcasters.wire import Channels, InvalidRunId
from config import ConfigError, Settings, load_settings
from config.durations import format_duration_s, parse_duration_s
from config.settings import KNOWN_BROADCASTERS


class UsageError(Exception):
    """A command that cannot run as asked; printed as one line, exit status 2."""


class Unreachable(Exception):
    """A server the command needs did not answer; printed as one line, exit status 1."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is out of range (1-65535)")
    return port


def _duration(text: str) -> float:
    try:
        return parse_duration_s(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _broadcaster_name(text: str) -> str:
    name = text.strip().lower()
    if name not in KNOWN_BROADCASTERS:
        raise argparse.ArgumentTypeError(
            f"unknown broadcaster {text!r} (known: {', '.join(KNOWN_BROADCASTERS)})")
    return name


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="relaycast", description=(__doc__ or "").splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_Parser)

    status = sub.add_parser("status", help="each broadcaster's state; exit 1 when degraded")
    status.add_argument("--json", action="store_true", help="machine-readable output")

    enable = sub.add_parser("enable", help="lift a broadcaster's disabled flag for every worker")
    enable.add_argument("name", type=_broadcaster_name)

    disable = sub.add_parser("disable", help="stop a broadcaster for every worker")
    disable.add_argument("name", type=_broadcaster_name)
    disable.add_argument("--for", dest="for_s", type=_duration, default=None, metavar="DURATION",
                         help="e.g. 30m, 1h, 2d (default: until `relaycast enable`)")
    disable.add_argument("--reason", default="disabled by an operator", help="shown in status")

    demo = sub.add_parser("demo", help="run an example workflow end to end on embedded defaults")
    demo.add_argument("--workflow", default="etl", help="example workflow (default: etl)")
    demo.add_argument("--param", action="append", default=[], metavar="K=V", type=_param)
    demo.add_argument("--verbose", action="store_true", help="also print each broadcast message")

    run = sub.add_parser("run", help="enqueue a workflow; print its run id and channel")
    run.add_argument("workflow", metavar="WORKFLOW")
    run.add_argument("--param", action="append", default=[], metavar="K=V", type=_param)
    run.add_argument("--run-id", default=None, help="default: WORKFLOW-<random>")

    logs = sub.add_parser("logs", help="print a run's stored lines")
    logs.add_argument("run_id", metavar="RUN_ID")
    logs.add_argument("--json", action="store_true", help="a JSON list of line objects")
    logs.add_argument("--after", type=_seq, default=0, metavar="SEQ", help="only lines after SEQ")
    logs.add_argument("-f", "--follow", action="store_true",
                      help="print lines as they are stored until the run ends (waits for a run "
                      "not started yet); exit 0 when it succeeds, 1 when it fails; --json: one "
                      "object per line")
    logs.add_argument("--level", type=_level, default=None,
                      help="only lines at LEVEL or above (debug, info, warning, error, critical)")

    api = sub.add_parser("api", help="serve the HTTP API (history, status, Pusher auth)")
    api.add_argument("--host", default=None, help="default 0.0.0.0 with a token, else 127.0.0.1")
    api.add_argument("--port", type=_port, default=8000)

    sio = sub.add_parser("socketio", help="serve Socket.IO on SOCKETIO_MESSAGE_QUEUE (the "
                         "workers' emits reach its clients)")
    sio.add_argument("--host", default=None, help="default 0.0.0.0 with a token, else 127.0.0.1")
    sio.add_argument("--port", type=_port, default=None,
                     help="default RELAYCAST_SOCKETIO_PORT (8001)")

    db = sub.add_parser("db", help="database schema")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db_sub.add_parser("upgrade", help="apply migrations up to the latest")
    db_sub.add_parser("current", help="print the schema revision")
    _add_operations(sub)
    return parser


def _level(text: str) -> str:
    from workflows.cleaning import LEVELS

    level = text.strip().lower()
    if level not in LEVELS:
        raise argparse.ArgumentTypeError(f"unknown level {text!r} (known: {', '.join(LEVELS)})")
    return level


def _at_or_above(level: str, threshold: str) -> bool:
    from workflows.cleaning import LEVELS

    rank = LEVELS.index(level) if level in LEVELS else LEVELS.index("info")
    return rank >= LEVELS.index(threshold)


def _seq(text: str) -> int:
    try:
        seq = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a line number: {text!r}") from None
    if not 0 <= seq < 2**31:
        raise argparse.ArgumentTypeError(f"{seq} is not a line number (0 to {2**31 - 1})")
    return seq


def _param(text: str) -> tuple[str, object]:
    key, sep, raw = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected K=V with K a name, got {text!r}")
    try:
        value: object = json.loads(raw)
    except ValueError:
        value = raw
    return key, value


def _shared_state(settings: Settings, command: str) -> SharedState:
    from broadcasters.factory import build_state

    if not settings.redis_url:
        raise UsageError(f"{command} needs REDIS_URL: without Redis, flags live in one process only")
    return build_state(settings)


def _unreachable_state(exc: StateUnavailable) -> Unreachable:
    return Unreachable(f"shared state unreachable at REDIS_URL ({exc}): nothing was changed")


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    """The latest health report; computed live when there is none.

    Exit 0 when healthy; 1 when degraded, or stale: with Redis configured, no report from
    the health task in the last two intervals means beat (or every worker) is down.
    """
    from broadcasters.factory import build_state
    from broadcasters.status import render_table
    from tasks.reporting import current_report

    report = current_report(settings, build_state(settings))
    if args.json:
        print(json.dumps(report.model_dump(mode="json"), indent=2, sort_keys=True))
    else:
        print(render_table(report))
    return 0 if report.healthy else 1


def cmd_enable(settings: Settings, args: argparse.Namespace) -> int:
    state = _shared_state(settings, "enable")
    try:
        state.enable(args.name)
    except StateUnavailable as exc:
        raise _unreachable_state(exc) from None
    print(f"{args.name}: enabled for every worker")
    return 0


def cmd_disable(settings: Settings, args: argparse.Namespace) -> int:
    state = _shared_state(settings, "disable")
    until = time.time() + args.for_s if args.for_s else None
    try:
        state.disable(args.name, args.reason, until=until, set_by="relaycast-cli", strict=True)
    except StateUnavailable as exc:
        raise _unreachable_state(exc) from None
    span = f"for {format_duration_s(args.for_s)}" if args.for_s else "until `relaycast enable`"
    print(f"{args.name}: disabled for every worker {span} ({args.reason})")
    return 0


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from relaycast.demo import render, run_demo

    if not args.verbose:
        logging.getLogger("relaycast.broadcast").setLevel(logging.WARNING)
    import workflows.examples  # noqa: F401 - registers the example workflows

    result = run_demo(settings, args.workflow, _workflow_params(args.workflow, args.param))
    print(render(result))
    ok = result.status in ("succeeded", "failed") and result.pending == 0
    return 0 if ok else 1


def _workflow_params(workflow: str, given: list[tuple[str, object]]) -> dict[str, object]:
    from workflows.base import REGISTRY, InvalidParams, validate_params

    if workflow not in REGISTRY:
        raise UsageError(f"no workflow {workflow!r} (known: {', '.join(sorted(REGISTRY))})")
    try:
        return validate_params(workflow, dict(given))
    except InvalidParams as exc:
        raise UsageError(str(exc)) from None


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    import uuid

    import workflows.examples  # noqa: F401 - registers the example workflows

    if not settings.broker_url:
        raise UsageError("run needs a broker: set CELERY_BROKER_URL or REDIS_URL "
                         "(or try `relaycast demo`, which needs none)")
    params = _workflow_params(args.workflow, args.param)
    channels = Channels(settings.channel_prefix)
    run_id = channels.validate_run_id(args.run_id or f"{args.workflow}-{uuid.uuid4().hex[:12]}")
    from tasks.celery_app import app  # the producer side of the broker
    from workflows.base import REGISTRY

    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=5)
            REGISTRY[args.workflow].apply_async(kwargs={"run_id": run_id, **params},
                                                connection=connection)
    except Exception as exc:  # noqa: BLE001 - kombu's and the transport's errors alike
        raise Unreachable(f"broker unreachable at CELERY_BROKER_URL/REDIS_URL "
                          f"({type(exc).__name__}): the run was not enqueued") from None
    print(f"run id:  {run_id}")
    print(f"channel: {channels.logs(run_id)}")
    return 0


def cmd_logs(settings: Settings, args: argparse.Namespace) -> int:
    from workflows.store import store_for

    Channels(settings.channel_prefix).validate_run_id(args.run_id)
    if args.follow:
        return follow_logs(settings, args)
    lines = store_for(settings.database_url_or_default).lines(args.run_id, after_seq=args.after)
    if args.level:
        lines = [line for line in lines if _at_or_above(line.level, args.level)]
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


def _listen_host(settings: Settings, host: str | None, what: str) -> str:
    """Where a server of ours may listen: anywhere with a token, loopback only without."""
    if settings.admin_token is None:
        if host not in (None, "127.0.0.1", "localhost", "::1"):
            raise UsageError(f"without RELAYCAST_ADMIN_TOKEN {what} serves loopback only; "
                             "set a token to listen on " + str(host))
        print(f"relaycast {what}: RELAYCAST_ADMIN_TOKEN is not set: listening on loopback only, "
              "no authentication", file=sys.stderr, flush=True)
        return host or "127.0.0.1"
    return host or "0.0.0.0"  # noqa: S104 - token-protected




def cmd_api(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from relaycast.api.app import create_app

    host = _listen_host(settings, args.host, "api")
    if settings.admin_token is not None:
        _print_sign_in_url(host, args.port, settings.admin_token.get_secret_value())
    uvicorn.run(create_app(settings), host=host, port=args.port, log_level="warning")
    return 0


def cmd_socketio(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from relaycast.api.socketio_server import create_asgi_app

    if settings.socketio_message_queue is None:
        raise UsageError("socketio needs SOCKETIO_MESSAGE_QUEUE (e.g. redis://localhost:6379/0): "
                         "the queue the workers emit to")
    host = _listen_host(settings, args.host, "socketio")
    port = args.port or settings.socketio_port
    print(f"relaycast socketio: listening on {host}:{port}, channel "
          f"{settings.socketio_channel!r} of SOCKETIO_MESSAGE_QUEUE", file=sys.stderr, flush=True)
    uvicorn.run(create_asgi_app(settings), host=host, port=port, log_level="warning")
    return 0


def _print_sign_in_url(host: str, port: int, token: str) -> None:
    """The viewer's sign-in link, on stdout (as Jupyter prints its own): it holds the token."""
    from urllib.parse import quote

    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104
    shown = f"[{shown}]" if ":" in shown else shown
    print(f"relaycast api: open the viewer (signs this browser in):\n"
          f"    http://{shown}:{port}/ui/?token={quote(token, safe='')}", flush=True)


def cmd_db(settings: Settings, args: argparse.Namespace) -> int:
    from workflows.store import current_revision, head_revision, make_engine, upgrade

    engine = make_engine(settings.database_url_or_default)
    try:
        if args.db_command == "upgrade":
            upgrade(engine)
        current = current_revision(engine)
    finally:
        engine.dispose()
    print(f"schema revision: {current or 'none'} (latest: {head_revision()})")
    return 0


COMMANDS = {"status": cmd_status, "enable": cmd_enable, "disable": cmd_disable,
            "demo": cmd_demo, "run": cmd_run, "logs": cmd_logs, "db": cmd_db, "api": cmd_api,
            "socketio": cmd_socketio}


# Operating the store: runs, logs --follow, replay, prune -----------------------------------------

#: Runs listed one by one in replay's output (the rest are summed up).
SHOWN_RUNS = 20


def _count(low: int, high: int, what: str) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number of {what}: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} {what} is out of range ({low}-{high:,})")
        return value

    return parse


def _add_operations(sub: Any) -> None:
    from workflows.models import RunStatus

    runs = sub.add_parser("runs", help="recent runs: workflow, run id, status, started, "
                          "duration, lines")
    runs.add_argument("--status", choices=[status.value for status in RunStatus], default=None)
    runs.add_argument("--limit", type=_count(1, 10_000, "runs"), default=20, metavar="N",
                      help="the N most recently started (default 20)")
    runs.add_argument("--json", action="store_true", help="a JSON list of run objects")

    replay = sub.add_parser("replay", help="broadcast again the lines no browser got live "
                            "(failed, taken only by log, or lost on the way)")
    replay.add_argument("run_id", nargs="?", metavar="RUN_ID", help="the run whose lines to replay")
    replay.add_argument("--failed", action="store_true", help="every run's lines instead of one run's")
    replay.add_argument("--since", dest="since_s", type=_duration, default=None, metavar="DURATION",
                        help="only lines stored in the last DURATION, e.g. 6h")
    replay.add_argument("--limit", type=_count(1, 100_000, "lines"), default=None, metavar="N",
                        help="lines per call (default 5,000); the same command again does the next")
    replay.add_argument("--dry-run", action="store_true", help="count what would be replayed")

    prune = sub.add_parser("prune", help="delete lines, ended runs and health reports older "
                           "than a bound (what beat's relaycast.prune does)")
    prune.add_argument("--older-than", dest="older_than_s", type=_duration, default=None,
                       metavar="DURATION", help="e.g. 30d, 12h (default: RELAYCAST_RETENTION_DAYS)")
    prune.add_argument("--dry-run", action="store_true", help="count what would be deleted")


def _utc(epoch_ms: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def cmd_prune(settings: Settings, args: argparse.Namespace) -> int:
    """Delete (or with ``--dry-run`` count) what is older than the bound, in short batches."""
    from workflows.retention import bound_ms, prunable, prune
    from workflows.store import store_for

    older_than_s = args.older_than_s or settings.retention_s
    if not older_than_s:
        raise UsageError("RELAYCAST_RETENTION_DAYS=0 keeps everything: say what to delete with "
                         "--older-than DURATION (e.g. 30d)")
    before_ms = bound_ms(older_than_s)
    store = store_for(settings.database_url_or_default)
    bound = f"older than {format_duration_s(older_than_s)} (before {_utc(before_ms)})"
    if args.dry_run:
        counts = prunable(store, before_ms)
        print(f"would delete, {bound}:")
    else:
        result = prune(store, before_ms)
        counts = result.deleted
        print(f"deleted, {bound}:")
    for label, value in (("log lines", counts.lines), ("runs", counts.runs),
                         ("run counters", counts.counters),
                         ("health reports", counts.health_reports)):
        print(f"  {label:<15}{value:>12,}")
    if args.dry_run:
        print("nothing was deleted (--dry-run)")
    else:
        print(f"in {result.seconds:.1f}s ({result.batches} batches)")
    return 0


def _states(counts: Any) -> str:
    return ", ".join(f"{state} {counts[state]:,}" for state in ("failed", "logged", "pending")
                     if counts[state])


def _in_flight(count: int) -> str:
    from tasks.replay import CLAIM_S

    return (f"; {count:,} line(s) sent again in the last {format_duration_s(CLAIM_S)} are still "
            "in flight (skipped until their outcome is recorded)" if count else "")


def cmd_replay(settings: Settings, args: argparse.Namespace) -> int:
    """Broadcast again what no browser received live; see :mod:`tasks.replay`."""
    if args.run_id is None and not args.failed:
        raise UsageError("name a RUN_ID, or --failed for every run's lines")
    if args.run_id is not None and args.failed:
        raise UsageError("give a RUN_ID or --failed, not both")
    if args.run_id is not None:
        Channels(settings.channel_prefix).validate_run_id(args.run_id)
    if not args.dry_run and not settings.broker_url:
        raise UsageError("replay needs the broker the workers use: set CELERY_BROKER_URL or "
                         "REDIS_URL")
    from tasks import replay
    from workflows.store import store_for

    now_ms = int(time.time() * 1000)
    since_ms = now_ms - int(args.since_s * 1000) if args.since_s else None
    scope = replay.ReplayScope(run_id=args.run_id, since_ms=since_ms)
    what = f"run {args.run_id}" if args.run_id else "every run"
    if args.since_s:
        what += f", lines of the last {format_duration_s(args.since_s)}"
    limit = args.limit or replay.MAX_LINES_PER_REPLAY
    store = store_for(settings.database_url_or_default)
    if args.dry_run:
        counts = replay.count(store, settings, scope, now_ms)
        if not counts.lines:
            print(f"nothing to replay ({what}){_in_flight(counts.in_flight)}")
            return 0
        print(f"would replay {counts.lines:,} line(s) of {len(counts.by_run):,} run(s) ({what}): "
              f"{_states(counts.by_state)}{_in_flight(counts.in_flight)}")
        for run_id, n in sorted(counts.by_run.items())[:SHOWN_RUNS]:
            print(f"  {run_id}  {n:,} line(s)")
        if len(counts.by_run) > SHOWN_RUNS:
            print(f"  … and {len(counts.by_run) - SHOWN_RUNS:,} more run(s)")
        if counts.lines > limit:
            print(f"a call replays at most {limit:,} lines: {-(-counts.lines // limit)} calls")
        print("nothing was enqueued (--dry-run)")
        return 0
    try:
        result = replay.replay(store, settings, scope, now_ms, limit=limit)
    except replay.ReplayEnqueueFailed as exc:
        raise Unreachable(f"broker unreachable at CELERY_BROKER_URL/REDIS_URL ({exc}): "
                          f"{exc.enqueued:,} line(s) were enqueued, {exc.released:,} were not "
                          "(run the same command again)") from None
    enqueued = result.enqueued
    if not enqueued.lines:
        in_flight = replay.count(store, settings, scope, now_ms).in_flight
        print(f"nothing to replay ({what}){_in_flight(in_flight)}")
        return 0
    print(f"enqueued {enqueued.lines:,} line(s) of {len(enqueued.by_run):,} run(s) in "
          f"{result.batches} batch(es) ({what}): {_states(enqueued.by_state)}")
    for run_id, spans in sorted(result.ranges.items())[:SHOWN_RUNS]:
        seqs = ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in spans)
        print(f"  {run_id}  seqs {seqs}")
    if len(result.ranges) > SHOWN_RUNS:
        print(f"  … and {len(result.ranges) - SHOWN_RUNS:,} more run(s)")
    if result.more:
        print(f"stopped at {limit:,} lines (--limit); more are waiting: run the same command "
              "again to continue")
    return 0


#: How often ``logs --follow`` reads SQL, and how many lines at most per read.
FOLLOW_POLL_S = 0.2
FOLLOW_PAGE_LINES = 5000


def follow_logs(settings: Settings, args: argparse.Namespace) -> int:
    """``relaycast logs RUN --follow``: print the run's lines as they are stored, then exit 0
    when the run has succeeded, 1 when it has failed, 130 on Ctrl-C.

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
                if args.level is None or _at_or_above(line.level, args.level):
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


def _duration_text(seconds: float) -> str:
    return f"{seconds:.1f}s" if seconds < 60 else format_duration_s(seconds)


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
                      _utc(row["started_at"]).removesuffix(" UTC"),
                      _duration_text(row["duration_s"]), f"{row['lines']:,}"))
    widths = [max(len(cells[i]) for cells in table) for i in range(len(table[0]))]
    for cells in table:
        left = "  ".join(cell.ljust(width) for cell, width in zip(cells[:-2], widths, strict=False))
        print(f"{left}  {cells[-2].rjust(widths[-2])}  {cells[-1].rjust(widths[-1])}")
    return 0


COMMANDS.update({"prune": cmd_prune, "replay": cmd_replay, "runs": cmd_runs})


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(raw)
    try:
        settings = load_settings()
        logging.basicConfig(level=settings.log_level, stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        logging.getLogger("alembic").setLevel(logging.WARNING)
        return COMMANDS[args.command](settings, args)
    except BrokenPipeError:
        # The reader went away (`relaycast logs RUN | head -1`): stop quietly, as tools
        # killed by SIGPIPE do; send what is left in stdout's buffer nowhere.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except (ConfigError, UsageError, InvalidRunId) as exc:
        return _fail(str(exc), 2)
    except Unreachable as exc:
        return _fail(str(exc), 1)
    except StateUnavailable as exc:
        return _fail(f"shared state unreachable at REDIS_URL ({exc})", 1)
    except SQLAlchemyError as exc:
        return _fail(f"database unavailable at DATABASE_URL: {_first_line(exc)}", 1)
    except KeyboardInterrupt:
        return 130


def _first_line(exc: SQLAlchemyError) -> str:
    """The driver's own first line (not SQLAlchemy's wrapper text)."""
    cause = getattr(exc, "orig", None) or exc
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[0] if text else ''}".strip().rstrip(":")


def _fail(message: str, status: int) -> int:
    print(f"relaycast: {message}", file=sys.stderr)
    return status
