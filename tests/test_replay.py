"""``relaycast replay``: what the store selects and claims (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from support.pusher_ws import Subscriber

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
    store.insert_lines([_row("a", seq) for seq in range(1, 8)] + [_row("a", 8, NOW - 5000)]
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
