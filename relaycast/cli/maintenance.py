"""Operating the store: ``db``, ``prune``, ``replay``."""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING, Any

from broadcasters.wire import Channels
from config import Settings
from config.durations import format_duration_s
from relaycast.cli.common import Unreachable, UsageError, count, duration, utc

if TYPE_CHECKING:
    from tasks.replay import ReplayCounts


def register(sub: Any) -> None:
    db = sub.add_parser("db", help="database schema")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db_sub.add_parser("upgrade", help="apply migrations up to the latest")
    db_sub.add_parser("current", help="print the schema revision")
    db.set_defaults(handler=cmd_db)

    replay = sub.add_parser("replay", help="broadcast again the lines no browser got live "
                            "(failed, taken only by log, or lost on the way)")
    replay.add_argument("run_id", nargs="?", metavar="RUN_ID", help="the run whose lines to replay")
    replay.add_argument("--failed", action="store_true", help="every run's lines instead of one run's")
    replay.add_argument("--since", dest="since_s", type=duration, default=None, metavar="DURATION",
                        help="only lines stored in the last DURATION, e.g. 6h")
    replay.add_argument("--limit", type=count(1, 100_000, "lines"), default=None, metavar="N",
                        help="lines per call (default 5,000); the same command again does the next")
    replay.add_argument("--dry-run", action="store_true", help="count what would be replayed")
    replay.set_defaults(handler=cmd_replay)

    prune = sub.add_parser("prune", help="delete lines, ended runs and health reports older "
                           "than a bound (what beat's relaycast.prune does)")
    prune.add_argument("--older-than", dest="older_than_s", type=duration, default=None,
                       metavar="DURATION", help="e.g. 30d, 12h (default: RELAYCAST_RETENTION_DAYS)")
    prune.add_argument("--dry-run", action="store_true", help="count what would be deleted")
    prune.set_defaults(handler=cmd_prune)


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
    bound = f"older than {format_duration_s(older_than_s)} (before {utc(before_ms)})"
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



#: Runs listed one by one in replay's output (the rest are summed up).
SHOWN_RUNS = 20


def _states(counts: Any) -> str:
    return ", ".join(f"{state} {counts[state]:,}" for state in ("failed", "logged", "pending")
                     if counts[state])


#: ``replay``'s exit status when it leaves lines unsettled that it could not take: claimed by
#: another replay (or an earlier call, or the sweeper) whose outcome is not recorded yet.
REPLAY_NOT_FINISHED = 3


def _claimed(counts: ReplayCounts) -> str:
    until = counts.claimed_until_ms
    when = f" (claimed until {utc(until)[11:]})" if until is not None else ""
    return (f"{counts.in_flight:,} line(s) are being replayed by another run of this command "
            f"or the sweeper{when}")


def replay_idle(counts: ReplayCounts, what: str) -> tuple[int, str]:
    """What ``replay`` (or ``--dry-run``) says when it has nothing to take, and its exit status.

    ``nothing to replay`` (0) only when nothing is owed and nothing is claimed. Lines claimed
    and not settled (their outcome not recorded, their claim not lapsed) are reported with
    their count and when the last claim lapses, exit :data:`REPLAY_NOT_FINISHED`: some may
    fail again and be owed, so the job is not done. So is it when lines became replayable
    after this call selected (released by a replay whose broker failed, failed again).
    """
    if counts.settled:
        return 0, f"nothing to replay ({what})"
    if counts.in_flight:
        return REPLAY_NOT_FINISHED, (f"not finished ({what}): {_claimed(counts)}; run it "
                                     "again after that")
    return REPLAY_NOT_FINISHED, (f"not finished ({what}): {counts.lines:,} line(s) became "
                                 "replayable while this ran; run it again")


def cmd_replay(settings: Settings, args: argparse.Namespace) -> int:
    """Broadcast again what no browser received live; see :mod:`tasks.replay`.

    Exit 0: lines were enqueued (or would be), or nothing is owed and nothing is claimed
    (``nothing to replay``); 3 (:data:`REPLAY_NOT_FINISHED`): nothing to take, but lines are
    claimed by another replay in progress (see :func:`replay_idle`); run it again later."""
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
            status, message = replay_idle(counts, what)
            print(message)
            return status
        claimed = f"; {_claimed(counts)}" if counts.in_flight else ""
        print(f"would replay {counts.lines:,} line(s) of {len(counts.by_run):,} run(s) ({what}): "
              f"{_states(counts.by_state)}{claimed}")
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
        status, message = replay_idle(replay.count(store, settings, scope, now_ms), what)
        print(message)
        return status
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
