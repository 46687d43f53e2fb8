"""workflows.store.ledger on SQLite and PostgreSQL: each line's broadcast outcome and what is
still pending. (What a replay selects and claims: tests/test_replay.py.)"""

from __future__ import annotations

from typing import Any

from support.seeding import seed_lines

from workflows.models import LineState
from workflows.store import LogStore

PENDING, SENT, FAILED = LineState.PENDING, LineState.SENT, LineState.FAILED


def _row(run_id: str, seq: int, *, ts: int | None = None) -> dict[str, Any]:
    return {"run_id": run_id, "seq": seq, "ts": ts if ts is not None else 1_700_000_000_000 + seq,
            "level": "info", "message": f"{run_id} line {seq}", "data": {}}


def _states(store: LogStore, run_id: str) -> dict[int, tuple[str, str | None]]:
    return {line.seq: (line.broadcast_state, line.broadcaster) for line in store.lines(run_id)}


def test_mark_sets_the_state_of_exactly_the_given_ranges(store: LogStore) -> None:
    seed_lines(store, [_row("run-a", seq) for seq in range(1, 11)]
               + [_row("run-b", seq) for seq in range(1, 6)])
    store.mark([("run-a", 2, 4), ("run-b", 5, 5)], SENT, "pusher")
    store.mark([("run-a", 9, 10)], FAILED)
    store.mark([], SENT, "ably")

    states = _states(store, "run-a")
    assert [seq for seq, state in states.items() if state == (SENT, "pusher")] == [2, 3, 4]
    assert [seq for seq, state in states.items() if state == (FAILED, None)] == [9, 10]
    assert [seq for seq, state in states.items() if state == (PENDING, None)] == [1, 5, 6, 7, 8]
    assert _states(store, "run-b") == {1: (PENDING, None), 2: (PENDING, None), 3: (PENDING, None),
                                       4: (PENDING, None), 5: (SENT, "pusher")}

    # Re-marking a range moves it (a retry delivered by the fallback).
    store.mark([("run-a", 9, 10)], SENT, "ably")
    assert _states(store, "run-a")[9] == (SENT, "ably")


def test_broadcast_counts_count_lines_per_state_and_broadcaster(store: LogStore) -> None:
    seed_lines(store, [_row("run-a", seq) for seq in range(1, 11)]
               + [_row("run-b", seq) for seq in range(1, 6)])
    store.mark([("run-a", 1, 4)], SENT, "pusher")
    store.mark([("run-a", 5, 6), ("run-b", 1, 1)], SENT, "ably")
    store.mark([("run-b", 2, 3)], FAILED)
    assert store.broadcast_counts() == {(SENT, "pusher"): 4, (SENT, "ably"): 3, (FAILED, None): 2,
                                        (PENDING, None): 6}
    assert store.broadcast_counts(["run-b"]) == {(SENT, "ably"): 1, (FAILED, None): 2,
                                                 (PENDING, None): 2}
    assert store.broadcast_counts(["run-none"]) == {}


def test_the_oldest_pending_ts_ignores_lines_already_sent(store: LogStore) -> None:
    seed_lines(store, [_row("run-a", seq, ts=1000 * seq) for seq in range(1, 5)])
    assert store.oldest_pending_ts() == 1000
    store.mark([("run-a", 1, 2)], SENT, "pusher")
    assert store.oldest_pending_ts() == 3000
    store.mark([("run-a", 3, 4)], SENT, "pusher")
    assert store.oldest_pending_ts() is None
