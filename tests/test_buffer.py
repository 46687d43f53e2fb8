"""The emitter's buffer: bounded, DEBUG shed first, every drop counted per run."""

from __future__ import annotations

from workflows.buffer import DropLedger, LineBuffer


def _fill(buffer: LineBuffer, levels: list[str], run_id: str = "etl-1") -> None:
    for i, level in enumerate(levels):
        buffer.append(run_id, level, f"line {i}", {}, i)


def test_lines_come_out_in_emit_order_across_levels() -> None:
    buffer = LineBuffer(max_lines=100)
    _fill(buffer, ["info", "debug", "warning", "debug", "error"])
    assert [e[3] for e in buffer.drain(10)] == [f"line {i}" for i in range(5)]
    assert buffer.waiting() == 0


def test_drain_takes_at_most_the_limit_and_leaves_the_rest_in_order() -> None:
    buffer = LineBuffer(max_lines=100)
    _fill(buffer, ["info"] * 10)
    assert [e[3] for e in buffer.drain(4)] == [f"line {i}" for i in range(4)]
    assert buffer.oldest_order() is not None
    assert [e[3] for e in buffer.drain(100)] == [f"line {i}" for i in range(4, 10)]
    assert buffer.oldest_order() is None


def test_past_the_bound_the_oldest_debug_lines_go_first_and_are_counted() -> None:
    buffer = LineBuffer(max_lines=4)
    _fill(buffer, ["debug", "info", "debug", "info", "debug", "info"])
    assert buffer.ledger.total == 2
    assert buffer.ledger.by_run == {"etl-1": 2}
    assert [e[3] for e in buffer.drain(10)] == ["line 1", "line 3", "line 4", "line 5"]


def test_without_debug_lines_the_oldest_others_go() -> None:
    buffer = LineBuffer(max_lines=3)
    for i in range(5):
        buffer.append(("a", "b")[i % 2], "info", f"line {i}", {}, i)
    assert buffer.ledger.by_run == {"a": 1, "b": 1}
    assert [e[3] for e in buffer.drain(10)] == ["line 2", "line 3", "line 4"]


def test_lines_taken_out_but_not_stored_obey_the_same_bound() -> None:
    source = LineBuffer(max_lines=100)
    _fill(source, ["info", "debug", "info", "debug", "info"])
    taken = source.drain(10)  # a backlog: waiting for SQL
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


def test_admin_events_and_lines_share_one_order() -> None:
    buffer = LineBuffer(max_lines=10)
    buffer.append("a", "info", "first", {}, 0)
    buffer.append_admin("deploy", {"v": 1})
    buffer.append("a", "info", "second", {}, 1)
    lines, admin = buffer.drain(10), buffer.drain_admin()
    assert lines[0][0] < admin[0][0] < lines[1][0]
    assert buffer.next_order() > lines[1][0]
