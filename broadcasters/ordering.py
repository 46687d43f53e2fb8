"""The ordering gate: a run's lines are published in seq order across every worker.

Two broadcast tasks of one run can run at once on two worker processes (or hosts), and
the later one could publish first. Pusher documents no ordering between HTTP triggers
either way, so browsers merge by seq regardless; but a subscriber that simply appends
lines — a terminal, a plain script, a human reading — should see them in order. So each
run has a *gate* in the shared state: the last seq whose batch has had its turn. A batch
whose first line is ``first`` may publish once the gate has reached ``first - 1``; then it
moves the gate to its last seq (``SET`` to the larger value, atomically).

**Bounded.** A batch never waits longer than ``RELAYCAST_ORDER_WAIT_MS`` (2 s): if the
batch before it is lost (its worker was SIGKILLed and the broker has not redelivered it
yet), the run goes on, out of order for that once — clients still merge by seq, and the
history has every line. A batch that failed still moves the gate (its retry is late
anyway), and so does one whose lines were skipped.

**Lanes.** The gate orders *lanes*, each with a key and a seq range: a run's lines (key: the
run id) and a stream of application events (key ``app/{stream}``: one process's events on
one channel, numbered by its outbox; ``/`` never occurs in a run id). One mechanism, one key
space: :func:`run_span` and the broadcast task's app lanes say what each one covers.

**A run's admin events** are lanes of its run too (:func:`admin_span`), so that a subscriber
of the admin channel and the run's channel sees the run in the order it happened: ``started``
sits at seq 0, before the first line (it never waits, and moves the gate to 0); an end
(``finished``, ``failed``, or any admin event carrying the run's ``last_seq``) sits after the
line ``last_seq``: it waits until the gate has passed that line, then goes. A run's first lines
wait for its ``started`` only when their batch says the run has one (``Batch.after_start``, set
by the emitter that sent the ``started``): a plain script's run, with no ``started``, never
waits. Each lane says where it may go (the gate must have reached ``after``) and where it
leaves the gate (``to``): :class:`Span`.

**Within one batch** the lanes of one key go in their order in one turn when each follows the
one before (``started``, then lines 1..k, then the end): the gate is consulted once and the
batch's lanes are handed to the manager in that order (:func:`in_lane_order`), one send.

**Not for everything.** Retries, sweeps and replays publish old lines and never wait. A run
whose gate expired (idle for a day) waits the bound once; so does the end of a run with no
line whose ``started`` was lost (an end at ``last_seq`` 0 waits for the start).

**Without Redis** (the embedded default) the gate lives in the process's memory, which is
where every worker of an in-process demo lives too. **With Redis unreachable** it fails
open: nothing waits.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, TypeVar

from broadcasters import keys
from broadcasters.histogram import bucket_of
from broadcasters.state import SharedState
from broadcasters.wire import LAST_SEQ_KEY, AdminMessage, RunLines, is_run_start

T = TypeVar("T")

GATE_TTL_S = 86_400
#: Bucket upper bounds (ms) of the gate-wait histogram kept in the pipeline counters.
WAIT_BUCKETS_MS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
#: Where a run's ``started`` sits in its lane: before line 1.
START_SEQ = 0


class Span(NamedTuple):
    """A lane's place at its gate."""

    #: The gate: a run id, or ``app/{stream}``.
    key: str
    #: The lane goes once the gate has reached this (None: at once, nothing comes before it).
    after: int | None
    #: Where the lane leaves the gate once it had its turn (never moved backwards).
    to: int


def seq_span(key: str, first: int, last: int, *, after_start: bool = False) -> Span:
    """Items ``first..last`` of a numbered lane (lines, app events): after ``first - 1``; the
    first ones (``first`` 1) at once, or after the run's ``started`` when ``after_start``."""
    if first > 1:
        return Span(key, first - 1, last)
    return Span(key, START_SEQ if after_start else None, last)


def run_span(run: RunLines, after_start: bool = False) -> Span | None:
    """A run's lines: its gate is keyed by the run id (None for no lines: nothing to order)."""
    events = run["events"]
    if not events:
        return None
    return seq_span(run["run_id"], int(events[0]["seq"]), int(events[-1]["seq"]),
                    after_start=after_start)


def admin_span(message: AdminMessage) -> Span | None:
    """A run's admin event as a lane of its run; None for one that is not a run's (deploys,
    provider changes, anything without a ``run_id``): those go with the batch's first send.

    * ``started`` (:func:`~broadcasters.wire.is_run_start`): at seq 0, before line 1;
    * a run's end: any event whose data has the run's ``last_seq`` (``finished``, ``failed``,
      and whatever end is added later): after line ``last_seq`` (0: after the ``started``).
    """
    data = message["data"]
    run_id = data.get("run_id") if isinstance(data, dict) else None
    if not isinstance(run_id, str):
        return None
    if is_run_start(message):
        return Span(run_id, None, START_SEQ)
    last = data.get(LAST_SEQ_KEY)
    if isinstance(last, int) and not isinstance(last, bool) and last >= START_SEQ:
        return Span(run_id, last, last)
    return None


def in_lane_order(lanes: Sequence[T], spans: dict[int, Span]) -> list[T]:
    """``lanes`` (those with a span in ``spans``, keyed by ``id``) with each key's lanes in
    their order at the gate: ``started``, lines by seq, the end. Keys keep the order of their
    first lane."""
    keys: dict[str, int] = {}
    for lane in lanes:
        keys.setdefault(spans[id(lane)].key, len(keys))

    def place(lane: T) -> tuple[int, int, int]:
        key, after, to = spans[id(lane)]
        return keys[key], -1 if after is None else after, to

    return sorted(lanes, key=place)


@dataclass
class GateStats:
    """What one batch went through at the gate."""

    waited_s: float = 0.0
    #: Runs published without their predecessor (the bound ran out).
    timeouts: int = 0
    turns: int = 0
    runs: list[str] = field(default_factory=list)

    @property
    def wait_bucket(self) -> int:
        """The bucket of the gate-wait histogram this batch's wait falls in."""
        return bucket_of(self.waited_s * 1000, WAIT_BUCKETS_MS)


class RunGate:
    def __init__(self, state: SharedState, *, wait_s: float, poll_s: float = 0.005,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.state = state
        self.wait_s = wait_s
        self.poll_s = poll_s
        self._clock = clock
        self._sleep = sleep

    def _positions(self, lanes: Sequence[str]) -> dict[str, int] | None:
        """Each lane's gate (-1: none yet); None when the shared state is unreachable."""
        backend = self.state.backend
        raw: list[str | None] | None = self.state.fail_open(
            "read ordering gates", lambda: backend.get_many([keys.gate(lane) for lane in lanes]),
            None)
        if raw is None:
            return None
        return {lane: int(v) if v is not None else -1 for lane, v in zip(lanes, raw, strict=True)}

    def passed(self, lanes: Sequence[T], span: Callable[[T], Span | None] = run_span) -> None:  # type: ignore[assignment]
        """These lanes have had their turn: let the ones after them go (one round trip)."""
        last: dict[str, int] = {}
        for lane in lanes:
            covers = span(lane)
            if covers is not None:
                key = keys.gate(covers.key)
                last[key] = max(last.get(key, -1), covers.to)
        backend = self.state.backend
        self.state.fail_open("move an ordering gate",
                             lambda: backend.set_max_many(last, GATE_TTL_S), None)

    def turns(self, lanes: Sequence[T], stats: GateStats | None = None,
              span: Callable[[T], Span | None] = run_span) -> Iterator[list[T]]:  # type: ignore[assignment]
        """Yield groups of ``lanes`` whose turn has come, waiting (bounded) for the others.

        Each group is in lane order (:func:`in_lane_order`), and holds every lane whose place
        is reached, counting the lanes before it in the group (``started`` then lines 1..k of
        one batch go together). The caller publishes each group in its order, then calls
        :meth:`passed` with it.
        """
        stats = stats if stats is not None else GateStats()
        spans = {id(lane): covers for lane in lanes if (covers := span(lane)) is not None}
        waiting = in_lane_order([lane for lane in lanes if id(lane) in spans], spans)
        if self.wait_s <= 0 or not waiting:
            if waiting:
                yield waiting
            return
        started = self._clock()
        deadline = started + self.wait_s
        ready: list[T]
        while waiting:
            positions = self._positions(list(dict.fromkeys(spans[id(lane)].key
                                                           for lane in waiting)))
            if positions is None:  # fail open
                ready, waiting = waiting, []
            else:
                ready = []
                later: list[T] = []
                for lane in waiting:  # in lane order: a lane counts the ones before it
                    key, after, to = spans[id(lane)]
                    if after is None or positions[key] >= after:
                        ready.append(lane)
                        positions[key] = max(positions[key], to)
                    else:
                        later.append(lane)
                waiting = later
                if waiting and not ready and self._clock() >= deadline:
                    stats.timeouts += len(waiting)
                    ready, waiting = waiting, []
            if ready:
                stats.turns += 1
                stats.runs.extend(spans[id(lane)].key for lane in ready)
                stats.waited_s = self._clock() - started
                yield ready
            elif waiting:
                self._sleep(self.poll_s)
