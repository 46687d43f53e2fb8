"""``relaycast replay``: what it selects and claims (SQLite and PostgreSQL), how it cuts
batches, and the whole path — a provider failing every call dead-letters a run's lines, the
provider recovers, a replay delivers every one to a subscriber and a second sends nothing."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import Connection
from support.seeding import replay_row, seed_lines
from support.workers import one_line_error, relaycast_cli

from broadcasters.wire import Batch
from config import Settings, load_settings
from workflows.models import LineState
from workflows.store import LogStore

NOW = 1_800_000_000_000
MINUTE = 60_000
PUSHER = {"PUSHER_APP_ID": "1", "PUSHER_KEY": "k", "PUSHER_SECRET": "s"}


def _row(run_id: str, seq: int, ts: int = NOW - 10 * MINUTE) -> dict[str, Any]:
    return replay_row(run_id, seq, ts)


def _filters(**overrides: Any) -> dict[str, Any]:
    return {"claimed_before_ms": NOW - 10 * MINUTE, "stale_before_ms": NOW - 2 * MINUTE,
            "include_logged": True, **overrides}


def _seed(store: LogStore) -> None:
    """Run a: 1-3 failed, 4 sent, 5-6 logged, 7 pending for 10 minutes, 8 pending for a
    few seconds (its broadcast is still on its way), 9 skipped. Run b: 1-2 failed, long ago."""
    seed_lines(store, [_row("a", seq) for seq in range(1, 8)] + [_row("a", 8, NOW - 5000)]
                      + [_row("a", 9)] + [_row("b", seq, NOW - 3 * 86_400_000) for seq in (1, 2)])
    store.mark([("a", 1, 3), ("b", 1, 2)], LineState.FAILED)
    store.mark([("a", 4, 4)], LineState.SENT, "pusher")
    store.mark([("a", 5, 6)], LineState.LOGGED, "log")
    store.mark([("a", 9, 9)], LineState.SKIPPED)


def _seqs(lines: list[Any]) -> list[tuple[str, int]]:
    return [(line.run_id, line.seq) for line in lines]


# The store's part ------------------------------------------------------------------------------


def test_replay_selects_failed_logged_and_long_pending_lines_by_run_and_seq(store: LogStore) -> None:
    _seed(store)
    assert _seqs(store.replay_candidates(limit=100, **_filters())) == [
        ("a", 1), ("a", 2), ("a", 3), ("a", 5), ("a", 6), ("a", 7), ("b", 1), ("b", 2)]
    assert _seqs(store.replay_candidates(limit=100, **_filters(include_logged=False))) == [
        ("a", 1), ("a", 2), ("a", 3), ("a", 7), ("b", 1), ("b", 2)]
    assert _seqs(store.replay_candidates(limit=100, **_filters(run_id="b"))) == [("b", 1), ("b", 2)]
    assert _seqs(store.replay_candidates(limit=100, **_filters(since_ms=NOW - 86_400_000))) == [
        ("a", 1), ("a", 2), ("a", 3), ("a", 5), ("a", 6), ("a", 7)]
    assert _seqs(store.replay_candidates(limit=2, **_filters())) == [("a", 1), ("a", 2)]
    assert store.replay_counts(**_filters()) == {
        ("a", "failed", False): (3, None), ("a", "logged", False): (2, None),
        ("a", "pending", False): (1, None), ("b", "failed", False): (2, None)}


def test_a_claimed_line_is_skipped_until_its_outcome_is_recorded(store: LogStore) -> None:
    _seed(store)
    ids = [line.id for line in store.replay_candidates(limit=100, **_filters(run_id="a"))]
    claimed = store.claim_for_replay(ids, at_ms=NOW, claimed_before_ms=NOW - 10 * MINUTE)
    assert claimed == set(ids)
    assert store.claim_for_replay(ids, at_ms=NOW + 1, claimed_before_ms=NOW - 10 * MINUTE) == set(), \
        "a second replay (or the sweeper) leaves lines in flight alone"
    assert store.replay_candidates(limit=100, **_filters(run_id="a")) == []
    assert store.replay_counts(**_filters(run_id="a")) == {
        ("a", "failed", True): (3, NOW), ("a", "logged", True): (2, NOW),
        ("a", "pending", True): (1, NOW)}
    # Outcomes come in: 1-2 delivered, 3 failed again, 5-6 delivered; 7 still on its way.
    store.mark([("a", 1, 2), ("a", 5, 6)], LineState.SENT, "pusher")
    store.mark([("a", 3, 3)], LineState.FAILED)
    assert _seqs(store.replay_candidates(limit=100, **_filters(run_id="a"))) == [("a", 3)], \
        "sent lines are never selected again; one that failed again is, at once"
    # A claim older than the window lapses (its batch may have been lost with a broker).
    later = _filters(run_id="a", claimed_before_ms=NOW + 1)
    assert _seqs(store.replay_candidates(limit=100, **later)) == [("a", 3), ("a", 7)]
    # Claims of lines that could not be enqueued are released.
    [seven] = [line.id for line in store.lines("a") if line.seq == 7]
    store.release_claims([seven], at_ms=NOW)
    assert _seqs(store.replay_candidates(limit=100, **_filters(run_id="a"))) == [("a", 3), ("a", 7)]


def test_a_claim_takes_only_lines_still_owed(store: LogStore) -> None:
    _seed(store)
    ids = [line.id for line in store.replay_candidates(limit=100, **_filters(run_id="b"))]
    store.mark([("b", 1, 1)], LineState.SENT, "pusher")  # delivered meanwhile (a late retry)
    claimed = store.claim_for_replay(ids, at_ms=NOW, claimed_before_ms=NOW - 10 * MINUTE)
    assert claimed == {ids[1]}


def test_two_claims_at_once_take_each_line_once(database_url: str, store: LogStore,
                                               open_store: Callable[[str], LogStore]) -> None:
    """The first replay's claim (three chunks of one transaction) is held open just before
    its commit; the second selected the same lines and claims them meanwhile. SQLite: the
    second UPDATE waits for the one writer. PostgreSQL: it waits on the first's row locks,
    then evaluates its WHERE again on the claimed rows. Either way it takes none of them."""
    seed_lines(store, [_row("race", seq) for seq in range(1, 2501)])
    store.mark([("race", 1, 2500)], LineState.FAILED)
    ids = [line.id for line in store.replay_candidates(limit=10_000, **_filters())]
    first = open_store(database_url)  # another process's engine
    committing, release = threading.Event(), threading.Event()

    def hold_before_commit(_connection: Connection) -> None:
        committing.set()
        release.wait()

    event.listen(first.engine, "commit", hold_before_commit)
    claimed: dict[str, set[int]] = {}

    def claim(name: str, claimer: LogStore, at_ms: int) -> None:
        claimed[name] = claimer.claim_for_replay(ids, at_ms=at_ms,
                                                 claimed_before_ms=NOW - 10 * MINUTE)

    threads = [threading.Thread(target=claim, args=("first", first, NOW)),
               threading.Thread(target=claim, args=("second", store, NOW + 1))]
    try:
        threads[0].start()
        assert committing.wait(60), "the first claim reached its commit"
        assert [line.id for line in store.replay_candidates(limit=10_000, **_filters())] == ids, \
            "the second replay selects every line: the first one's claims are not committed"
        threads[1].start()
        if store.engine.dialect.name == "postgresql":
            _wait_for_a_lock_wait(store)
        else:
            threads[1].join(0.5)
            assert threads[1].is_alive(), "SQLite: the second UPDATE waits for the writer"
    finally:
        release.set()
        for thread in threads:
            if thread.ident is not None:
                thread.join(60)
    assert claimed == {"first": set(ids), "second": set()}
    assert store.replay_candidates(limit=10, **_filters()) == []


def _wait_for_a_lock_wait(store: LogStore) -> None:
    """Until a session of this database waits on a row lock for its UPDATE of log_lines
    (each look in a transaction of its own: pg_stat_activity is a snapshot per transaction)."""
    query = text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                 "AND wait_event_type = 'Lock' AND query ILIKE 'UPDATE log_lines%'")
    deadline = time.monotonic() + 60
    while True:
        with store.engine.connect() as connection:
            if connection.execute(query).scalar():
                return
        assert time.monotonic() < deadline, "the second claim never waited on a row lock"
        time.sleep(0.05)


def test_a_replay_that_loses_its_lines_to_another_takes_the_next_ones(
        store: LogStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another replay claims the lines this one selected, between its SELECT and its UPDATE:
    it selects again and takes the next ones, instead of enqueuing nothing."""
    from tasks.replay import ReplayScope, count, replay

    seed_lines(store, [_row("r", seq) for seq in range(1, 13)])
    store.mark([("r", 1, 12)], LineState.FAILED)
    claim = store.claim_for_replay
    raced: list[set[int]] = []

    def another_replay_first(ids: list[int], **when: int) -> set[int]:
        if not raced:
            raced.append(claim(ids, at_ms=NOW - 1, claimed_before_ms=NOW - 10 * MINUTE))
        return claim(ids, **when)

    monkeypatch.setattr(store, "claim_for_replay", another_replay_first)
    enqueued: list[Batch] = []
    result = replay(store, _settings(), ReplayScope(), NOW, limit=5, enqueue=enqueued.append)
    assert len(raced[0]) == 5, "the other replay took the five lines this one selected first"
    assert (result.enqueued.lines, result.ranges, result.more) == (5, {"r": [(6, 10)]}, True)
    counts = count(store, _settings(), ReplayScope(), NOW)
    assert (counts.lines, counts.in_flight) == (2, 10)


# Batches ---------------------------------------------------------------------------------------


def _settings(**env: str) -> Settings:
    return load_settings(**{**PUSHER, "RELAYCAST_BROADCASTERS": "pusher,log", **env})


def test_replay_cuts_batches_at_holes_and_at_1000_lines_and_sends_logged_lines_live_only(
        sqlite_store: LogStore) -> None:
    from tasks.replay import ReplayScope, count, replay

    store = sqlite_store
    seed_lines(store, [_row("big", seq) for seq in range(1, 1502)]
                      + [_row("holes", seq) for seq in range(1, 11)])
    store.mark([("big", 1, 1501), ("holes", 1, 3), ("holes", 7, 8)], LineState.FAILED)
    store.mark([("holes", 4, 6)], LineState.SENT, "pusher")
    store.mark([("holes", 9, 10)], LineState.LOGGED, "log")
    enqueued: list[Batch] = []
    result = replay(store, _settings(), ReplayScope(), NOW, enqueue=enqueued.append)

    assert result.enqueued.lines == 1501 + 7
    assert dict(result.enqueued.by_state) == {"failed": 1506, "logged": 2}
    assert result.ranges == {"big": [(1, 1000), (1001, 1501)],
                             "holes": [(1, 3), (7, 8), (9, 10)]}
    assert [sum(len(r["events"]) for r in b["runs"]) for b in enqueued] == [1000, 506, 2]
    assert all(b.get("ordered") is False for b in enqueued)
    assert [bool(b.get("live_only")) for b in enqueued] == [False, False, True]
    assert [(r["run_id"], r["events"][0]["seq"], r["events"][-1]["seq"])
            for r in enqueued[1]["runs"]] == [("big", 1001, 1501), ("holes", 1, 3), ("holes", 7, 8)]
    assert enqueued[2]["runs"][0]["channel"] == "private-logs-holes"
    assert enqueued[2]["runs"][0]["events"][0] == {
        "seq": 9, "ts": NOW - 10 * MINUTE, "level": "info", "message": "holes line 9",
        "data": {"seq": 9}}
    assert not result.more
    assert replay(store, _settings(), ReplayScope(), NOW, enqueue=enqueued.append).enqueued.lines == 0
    assert count(store, _settings(), ReplayScope(), NOW).in_flight == 1508


def test_replay_is_bounded_per_call_and_the_next_call_goes_on(sqlite_store: LogStore) -> None:
    from tasks.replay import ReplayScope, replay

    seed_lines(sqlite_store, [_row(f"r{i}", seq) for i in range(3) for seq in range(1, 5)])
    sqlite_store.mark([(f"r{i}", 1, 4) for i in range(3)], LineState.FAILED)
    enqueued: list[Batch] = []
    first = replay(sqlite_store, _settings(), ReplayScope(), NOW, limit=5, enqueue=enqueued.append)
    assert (first.enqueued.lines, first.more) == (5, True)
    assert first.ranges == {"r0": [(1, 4)], "r1": [(1, 1)]}
    second = replay(sqlite_store, _settings(), ReplayScope(), NOW, limit=5, enqueue=enqueued.append)
    assert (second.ranges, second.more) == ({"r1": [(2, 4)], "r2": [(1, 2)]}, True)
    third = replay(sqlite_store, _settings(), ReplayScope(), NOW, limit=5, enqueue=enqueued.append)
    assert (third.ranges, third.more) == ({"r2": [(3, 4)]}, False)


def test_logged_lines_are_owed_only_when_a_live_broadcaster_is_configured(
        sqlite_store: LogStore) -> None:
    from tasks.replay import ReplayScope, count

    seed_lines(sqlite_store, [_row("a", seq) for seq in (1, 2)])
    sqlite_store.mark([("a", 1, 2)], LineState.LOGGED, "log")
    assert count(sqlite_store, _settings(), ReplayScope(), NOW).lines == 2
    only_log = load_settings(RELAYCAST_BROADCASTERS="log")
    assert count(sqlite_store, only_log, ReplayScope(), NOW).lines == 0, \
        "log is all there is: it had them, replaying would send them to log again"


def test_count_tells_lines_claimed_by_another_replay_from_lines_owed_and_from_nothing(
        store: LogStore) -> None:
    from relaycast.cli.maintenance import REPLAY_NOT_FINISHED, replay_idle
    from tasks.replay import ReplayScope, count

    def state() -> tuple[int, int, int | None, tuple[int, str]]:
        counts = count(store, _settings(), ReplayScope(), NOW)
        return (counts.lines, counts.in_flight, counts.claimed_until_ms,
                replay_idle(counts, "every run"))

    nothing = (0, "nothing to replay (every run)")
    assert state() == (0, 0, None, nothing)
    seed_lines(store, [_row("c", seq) for seq in range(1, 7)])
    store.mark([("c", 1, 5)], LineState.FAILED)
    store.mark([("c", 6, 6)], LineState.SENT, "pusher")
    ids = {line.seq: line.id for line in store.lines("c")}
    # Another replay claimed 1-2 a minute ago, 3 just now; a claim of 4 eleven minutes ago lapsed.
    for seqs, at_ms in (([1, 2], NOW - MINUTE), ([3], NOW), ([4], NOW - 11 * MINUTE)):
        store.claim_for_replay([ids[seq] for seq in seqs], at_ms=at_ms,
                               claimed_before_ms=NOW - 30 * MINUTE)
    lines, in_flight, until_ms, _ = state()
    assert (lines, in_flight, until_ms) == (2, 3, NOW + 10 * MINUTE), "4 and 5 owed; 1-3 claimed"

    store.mark([("c", 4, 5)], LineState.SENT, "pusher")  # this replay sent what it took
    claimed = (REPLAY_NOT_FINISHED,
               "not finished (every run): 3 line(s) are being replayed by another run of this "
               "command or the sweeper (claimed until 08:10:00 UTC); run it again after that")
    assert state() == (0, 3, NOW + 10 * MINUTE, claimed), \
        "nothing owed, but not nothing to replay: the other replay's lines may fail again"
    store.mark([("c", 1, 2)], LineState.SENT, "pusher")
    store.mark([("c", 3, 3)], LineState.FAILED)  # the other replay's outcomes: 3 failed again
    assert state()[:3] == (1, 0, None)
    assert state()[3] == (REPLAY_NOT_FINISHED, "not finished (every run): 1 line(s) became "
                          "replayable while this ran; run it again")
    store.mark([("c", 3, 3)], LineState.SENT, "pusher")
    assert state() == (0, 0, None, nothing)


# The command line ----------------------------------------------------------------------------


@pytest.mark.parametrize(("argv", "env", "says"), [
    (["replay"], {}, "name a RUN_ID, or --failed"),
    (["replay", "etl-1", "--failed"], {}, "a RUN_ID or --failed, not both"),
    (["replay", "bad id!"], {}, "invalid run id 'bad id!'"),
    (["replay", "--failed", "--since", "soon"], {}, "not a duration: 'soon'"),
    (["replay", "etl-1", "--limit", "0"], {}, "0 lines is out of range"),
    (["replay", "etl-1", "--limit", "many"], {}, "not a number of lines: 'many'"),
    (["replay", "etl-1"], {}, "replay needs the broker"),
])
def test_replay_refuses_what_it_cannot_do_in_one_line(
        argv: list[str], env: dict[str, str], says: str, sqlite_url: str) -> None:
    result = relaycast_cli(*argv, env={"DATABASE_URL": sqlite_url, **env})
    assert result.returncode == 2
    assert says in one_line_error(result)
    assert result.stdout == ""


def test_replay_with_the_broker_unreachable_releases_what_it_claimed(sqlite_url: str,
                                                                      sqlite_store: LogStore) -> None:
    seed_lines(sqlite_store, [_row("stuck", seq, int(time.time() * 1000)) for seq in (1, 2, 3)])
    sqlite_store.mark([("stuck", 1, 3)], LineState.FAILED)
    env = {"DATABASE_URL": sqlite_url, "CELERY_BROKER_URL": "redis://127.0.0.1:1/0", **PUSHER}
    result = relaycast_cli("replay", "stuck", env=env)
    assert result.returncode == 1
    line = one_line_error(result)
    assert "broker unreachable" in line and "0 line(s) were enqueued, 3 were not" in line
    dry = relaycast_cli("replay", "stuck", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines()[0] == "would replay 3 line(s) of 1 run(s) (run stuck): failed 3"
