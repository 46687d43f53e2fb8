"""``relaycast replay``: what it selects and claims (SQLite and PostgreSQL), how it cuts
batches, and the whole path — a provider failing every call dead-letters a run's lines, the
provider recovers, a replay delivers every one to a subscriber and a second sends nothing."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from support.pusher_ws import Subscriber
from support.runs import has_lines, run_env, seqs_received, start_run
from support.seeding import seed_lines
from support.servers import Soketi
from support.workers import CeleryWorker, ForwardingProxy, Started, one_line_error, relaycast_cli

from broadcasters.wire import Batch
from config import Settings, load_settings
from workflows.models import LineState
from workflows.store import LogStore

NOW = 1_800_000_000_000
MINUTE = 60_000
PUSHER = {"PUSHER_APP_ID": "1", "PUSHER_KEY": "k", "PUSHER_SECRET": "s"}
SubscriberFactory = Callable[..., Subscriber]


def _row(run_id: str, seq: int, ts: int = NOW - 10 * MINUTE) -> dict[str, Any]:
    return {"run_id": run_id, "seq": seq, "ts": ts, "level": "info",
            "message": f"{run_id} line {seq}", "data": {"seq": seq}}


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
        ("a", "failed", False): 3, ("a", "logged", False): 2, ("a", "pending", False): 1,
        ("b", "failed", False): 2}


def test_a_claimed_line_is_skipped_until_its_outcome_is_recorded(store: LogStore) -> None:
    _seed(store)
    ids = [line.id for line in store.replay_candidates(limit=100, **_filters(run_id="a"))]
    claimed = store.claim_for_replay(ids, at_ms=NOW, claimed_before_ms=NOW - 10 * MINUTE)
    assert claimed == set(ids)
    assert store.claim_for_replay(ids, at_ms=NOW + 1, claimed_before_ms=NOW - 10 * MINUTE) == set(), \
        "a second replay (or the sweeper) leaves lines in flight alone"
    assert store.replay_candidates(limit=100, **_filters(run_id="a")) == []
    assert store.replay_counts(**_filters(run_id="a")) == {
        ("a", "failed", True): 3, ("a", "logged", True): 2, ("a", "pending", True): 1}
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


# End to end ------------------------------------------------------------------------------------


def _wait_counts(store: LogStore, run_id: str, expected: dict[tuple[str, str | None], int],
                 timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while store.broadcast_counts([run_id]) != expected:
        assert time.monotonic() < deadline, store.broadcast_counts([run_id])
        time.sleep(0.2)


@pytest.mark.timeout(180)
def test_lines_dead_lettered_by_a_failing_provider_are_delivered_by_replay_once(
    broker: str, database_url: str, soketi: Soketi, subscriber_factory: SubscriberFactory,
    workers: Started, open_store: Callable[[str], LogStore],
) -> None:
    proxy = ForwardingProxy(soketi.url)
    proxy.down = True  # every call answered 503
    try:
        env = run_env(broker, database_url, **{**soketi.env(), "PUSHER_PORT": str(proxy.port)},
                      RELAYCAST_BROADCASTERS="pusher", RELAYCAST_BROADCAST_MAX_RETRIES="0")
        worker = CeleryWorker(env, concurrency=2)
        workers.start(worker)
        run_id = f"replayed-{uuid.uuid4().hex[:6]}"
        channel = f"private-logs-{run_id}"
        subscriber = subscriber_factory()
        subscriber.subscribe(channel)
        store = open_store(database_url)
        start_run(env, "burst", run_id, lines=300)
        _wait_counts(store, run_id, {(LineState.FAILED, None): 300})
        assert seqs_received(subscriber, channel) == []
        assert proxy.requests > 0, "the provider was asked, and refused"

        proxy.down = False  # the provider is healthy again
        dry = relaycast_cli("replay", run_id, "--dry-run", env=env)
        assert dry.returncode == 0, dry.stderr
        assert f"would replay 300 line(s) of 1 run(s) (run {run_id}): failed 300" in dry.stdout
        first = relaycast_cli("replay", run_id, env=env)
        assert first.returncode == 0, first.stderr
        assert first.stdout.splitlines()[:2] == [
            f"enqueued 300 line(s) of 1 run(s) in 1 batch(es) (run {run_id}): failed 300",
            f"  {run_id}  seqs 1-300"]
        subscriber.wait_for(has_lines(subscriber, channel, 300), timeout_s=60)
        assert sorted(set(seqs_received(subscriber, channel))) == list(range(1, 301))
        _wait_counts(store, run_id, {(LineState.SENT, "pusher"): 300})

        requests, received = proxy.requests, len(seqs_received(subscriber, channel))
        for argv in (["replay", run_id], ["replay", "--failed"]):
            again = relaycast_cli(*argv, env=env)
            assert again.returncode == 0, again.stderr
            assert again.stdout.startswith("nothing to replay"), again.stdout
            assert "in flight" not in again.stdout
        time.sleep(2)
        assert proxy.requests == requests, "the second replay sent nothing to the provider"
        assert len(seqs_received(subscriber, channel)) == received
        assert store.broadcast_counts([run_id]) == {(LineState.SENT, "pusher"): 300}
    finally:
        proxy.close()
