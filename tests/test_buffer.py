"""The emitter's buffer: bounded, DEBUG shed first, every drop counted per run.

Lines reach the buffer the way production puts them there: ``Emitter.emit`` (which appends
to the buffer inline). The emitter's flusher is held (``HELD``: it only runs when asked), so
what the test drains is exactly what was emitted.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from support.emitting import HELD, MakeEmitter

from workflows.buffer import DropLedger, LineBuffer
from workflows.emitter import Emitter
from workflows.store import LogStore

HeldEmitter = Callable[[int], Emitter]


@pytest.fixture
def held(sqlite_store: LogStore, emitters: MakeEmitter) -> HeldEmitter:
    """An emitter whose buffer holds at most ``max_lines`` lines and whose flusher waits."""
    def make(max_lines: int) -> Emitter:
        return emitters(lambda: sqlite_store, None, flush_interval_ms=HELD,
                        max_buffer_lines=max_lines)
    return make


def _fill(emitter: Emitter, levels: list[str], run_id: str = "etl-1") -> None:
    for i, level in enumerate(levels):
        emitter.emit(run_id, level, f"line {i}", {})


def test_lines_come_out_in_emit_order_across_levels(held: HeldEmitter) -> None:
    buffer = (emitter := held(100)).buffer
    _fill(emitter, ["info", "debug", "warning", "debug", "error"])
    assert [e[3] for e in buffer.drain(10)] == [f"line {i}" for i in range(5)]
    assert buffer.waiting() == 0


def test_drain_takes_at_most_the_limit_and_leaves_the_rest_in_order(held: HeldEmitter) -> None:
    buffer = (emitter := held(100)).buffer
    _fill(emitter, ["info"] * 10)
    assert [e[3] for e in buffer.drain(4)] == [f"line {i}" for i in range(4)]
    assert buffer.oldest_order() is not None
    assert [e[3] for e in buffer.drain(100)] == [f"line {i}" for i in range(4, 10)]
    assert buffer.oldest_order() is None


def test_past_the_bound_the_oldest_debug_lines_go_first_and_are_counted(held: HeldEmitter
                                                                        ) -> None:
    buffer = (emitter := held(4)).buffer
    _fill(emitter, ["debug", "info", "debug", "info", "debug", "info"])
    assert emitter.stats.dropped == 2
    assert buffer.ledger.take_unreported() == {"etl-1": 2}, "what the run's WARNING line says"
    assert [e[3] for e in buffer.drain(10)] == ["line 1", "line 3", "line 4", "line 5"]


def test_without_debug_lines_the_oldest_others_go(held: HeldEmitter) -> None:
    buffer = (emitter := held(3)).buffer
    for i in range(5):
        emitter.emit(("a", "b")[i % 2], "info", f"line {i}", {})
    assert buffer.ledger.take_unreported() == {"a": 1, "b": 1}
    assert [e[3] for e in buffer.drain(10)] == ["line 2", "line 3", "line 4"]


def test_lines_taken_out_but_not_stored_obey_the_same_bound(held: HeldEmitter) -> None:
    source = held(100)
    _fill(source, ["info", "debug", "info", "debug", "info"])
    taken = source.buffer.drain(10)  # a backlog: waiting for SQL
    buffer = LineBuffer(max_lines=3)
    kept = buffer.bound(taken)
    assert [e[3] for e in kept] == ["line 0", "line 2", "line 4"], "in order, DEBUG went first"
    assert buffer.ledger.total == 2


def test_unreported_drops_are_taken_once_and_can_be_given_back() -> None:
    ledger = DropLedger()
    ledger.count("a", 3)
    ledger.count("b")
    taken = ledger.take_unreported()
    assert taken == {"a": 3, "b": 1}
    assert ledger.take_unreported() == {}
    ledger.give_back(taken)
    assert ledger.take_unreported() == {"a": 3, "b": 1}
    assert ledger.total == 4, "the total is not counted twice"


def test_admin_events_and_lines_share_one_order(held: HeldEmitter) -> None:
    buffer = (emitter := held(10)).buffer
    emitter.emit("a", "info", "first", {})
    # What Emitter.emit_admin appends (emit_admin itself wakes the flusher at once).
    buffer.append_admin("deploy", {"v": 1})
    emitter.emit("a", "info", "second", {})
    lines, admin = buffer.drain(10), buffer.drain_admin()
    assert lines[0][0] < admin[0][0] < lines[1][0]
    assert buffer.next_order() > lines[1][0]
