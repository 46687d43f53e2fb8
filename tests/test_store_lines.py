"""workflows.store.lines on SQLite and PostgreSQL: seqs allocated where lines are stored, and
lines read back."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from sqlalchemy import insert

from workflows.models import LineState, LogLine
from workflows.store import LogStore


def _drafts(*messages: str) -> list[dict[str, Any]]:
    return [{"ts": 1_700_000_000_000 + i, "level": "info", "message": m, "data": {"i": i}}
            for i, m in enumerate(messages)]


def _behind_the_counter(store: LogStore, *rows: dict[str, Any]) -> None:
    """Store lines without the run's counter, as a tool or an older relaycast did."""
    with store.engine.begin() as connection:
        connection.execute(insert(LogLine), [
            {"ts": 0, "level": "info", "data": {}, "broadcast_state": LineState.PENDING, **row}
            for row in rows])


# Numbering ---------------------------------------------------------------------------------------


def test_append_numbers_each_run_from_1_and_continues_across_calls(store: LogStore) -> None:
    first = store.append([("run-a", _drafts("a1", "a2")), ("run-b", _drafts("b1"))])
    assert [(run, [e["seq"] for e in events]) for run, events in first] == [
        ("run-a", [1, 2]), ("run-b", [1])]
    assert first[0][1][0] == {"seq": 1, "ts": 1_700_000_000_000, "level": "info", "message": "a1",
                              "data": {"i": 0}}
    second = store.append([("run-a", _drafts("a3"))])
    assert second[0][1][0]["seq"] == 3
    assert [(line.seq, line.message) for line in store.lines("run-a")] == [
        (1, "a1"), (2, "a2"), (3, "a3")]
    assert [(line.seq, line.message) for line in store.lines("run-b")] == [(1, "b1")]
    assert store.lines("none") == []


def test_appending_no_lines_stores_nothing(store: LogStore) -> None:
    assert store.append([]) == []
    assert store.append([("run-c", [])]) == []
    assert store.broadcast_counts() == {}
    assert store.oldest_pending_ts() is None
    [(_, events)] = store.append([("run-c", _drafts("c1"))])
    assert events[0]["seq"] == 1, "the empty append allocated nothing"


def test_the_same_seq_in_two_runs_is_two_lines(store: LogStore) -> None:
    stored = store.append([("run-a", _drafts("a1")), ("run-b", _drafts("b1"))])
    assert [(run, [e["seq"] for e in events]) for run, events in stored] == [
        ("run-a", [1]), ("run-b", [1])]
    assert [line.message for line in store.lines("run-a")] == ["a1"]
    assert [line.message for line in store.lines("run-b")] == ["b1"]
    assert {line.broadcast_state for line in store.lines("run-a")} == {LineState.PENDING}
    assert {line.broadcaster for line in store.lines("run-a")} == {None}


def test_lines_stored_without_the_counter_move_it_past_the_highest_seq(store: LogStore) -> None:
    _behind_the_counter(store, *({"run_id": "run-a", "seq": seq, "message": f"old {seq}"}
                                 for seq in (1, 2, 7)))
    [(_, events)] = store.append([("run-a", _drafts("next"))])
    assert events[0]["seq"] == 8
    assert [line.seq for line in store.lines("run-a")] == [1, 2, 7, 8]


def test_a_collision_with_a_stored_line_is_never_silent(
        store: LogStore, caplog: pytest.LogCaptureFixture) -> None:
    """A counter behind the lines (rows written without it: a tool, an older relaycast)."""
    store.append([("run-a", _drafts("a1", "a2"))])
    _behind_the_counter(store, {"run_id": "run-a", "seq": 3, "message": "written elsewhere"})
    with caplog.at_level(logging.WARNING, logger="workflows.store"):
        [(_, events)] = store.append([("run-a", _drafts("a3", "a4"))])
    assert [e["seq"] for e in events] == [4, 5], "renumbered past the stored line, in order"
    assert [line.message for line in store.lines("run-a")] == [
        "a1", "a2", "written elsewhere", "a3", "a4"]
    assert store.renumbered == 2
    assert any("collided with stored lines" in r.getMessage() for r in caplog.records)


# Reading lines -----------------------------------------------------------------------------------


def test_lines_after_a_seq_are_exactly_the_later_ones_in_order(store: LogStore) -> None:
    data = {"rows": 1200, "nested": {"list": [1, "two", None, 3.5], "ok": True}, "text": "héllo ✓"}
    # Stored out of seq order (behind the counter), so that only the query orders them.
    _behind_the_counter(store, *({"run_id": "run-a", "seq": seq, "ts": 1_700_000_000_000 + seq,
                                  "level": level, "message": f"run-a line {seq}",
                                  "data": data if seq == 4 else {}}
                                 for seq, level in ((5, "error"), (1, "debug"), (4, "warning"),
                                                    (2, "info"), (3, "info"))))
    store.append([("run-b", _drafts(*(f"b{seq}" for seq in range(1, 10))))])

    assert [line.seq for line in store.lines("run-a")] == [1, 2, 3, 4, 5]
    later = store.lines("run-a", after_seq=2)
    assert [line.seq for line in later] == [3, 4, 5]
    assert all(line.run_id == "run-a" for line in later)
    line4 = later[1]
    assert (line4.ts, line4.level, line4.message, line4.data) == (
        1_700_000_000_004, "warning", "run-a line 4", data)
    assert [line.seq for line in store.lines("run-a", after_seq=2, limit=2)] == [3, 4]
    assert store.lines("run-a", after_seq=5) == []
    assert store.lines("run-none") == []
