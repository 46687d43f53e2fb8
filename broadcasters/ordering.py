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

**Not for everything.** Retries, sweeps and replays publish old lines and never wait. A run
whose gate expired (idle for a day) waits the bound once.

**Without Redis** (the embedded default) the gate lives in the process's memory, which is
where every worker of an in-process demo lives too. **With Redis unreachable** it fails
open: nothing waits.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from broadcasters.backends import StateUnavailable
from broadcasters.state import SharedState, bucket_of
from broadcasters.wire import RunLines

T = TypeVar("T")
#: (gate key, first seq, last seq) of a lane; None for an empty one (nothing to order).
Span = tuple[str, int, int] | None

GATE_TTL_S = 86_400
#: Bucket upper bounds (ms) of the gate-wait histogram kept in the pipeline counters.
WAIT_BUCKETS_MS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


def run_span(run: RunLines) -> Span:
    """A run's lines: its gate is keyed by the run id."""
    events = run["events"]
    return (run["run_id"], int(events[0]["seq"]), int(events[-1]["seq"])) if events else None


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

    def _positions(self, keys: Sequence[str]) -> dict[str, int] | None:
        """Each lane's gate (-1: none yet); None when the shared state is unreachable."""
        try:
            raw = self.state.backend.get_many([f"gate:{k}" for k in keys])
        except StateUnavailable as exc:
            self.state.note_unavailable("read ordering gates", exc)
            return None
        return {k: int(v) if v is not None else -1 for k, v in zip(keys, raw, strict=True)}

    def passed(self, lanes: Sequence[T], span: Callable[[T], Span] = run_span) -> None:  # type: ignore[assignment]
        """These lanes have had their turn: let the ones after them go (one round trip)."""
        last: dict[str, int] = {}
        for lane in lanes:
            covers = span(lane)
            if covers is not None:
                key = f"gate:{covers[0]}"
                last[key] = max(last.get(key, -1), covers[2])
        try:
            self.state.backend.set_max_many(last, GATE_TTL_S)
        except StateUnavailable as exc:
            self.state.note_unavailable("move an ordering gate", exc)

    def turns(self, lanes: Sequence[T], stats: GateStats | None = None,
              span: Callable[[T], Span] = run_span) -> Iterator[list[T]]:  # type: ignore[assignment]
        """Yield groups of ``lanes`` whose turn has come, waiting (bounded) for the others.

        The caller publishes each group, then calls :meth:`passed` with it.
        """
        stats = stats if stats is not None else GateStats()
        spans = {id(lane): covers for lane in lanes if (covers := span(lane)) is not None}
        waiting = [lane for lane in lanes if id(lane) in spans]
        if self.wait_s <= 0 or not waiting:
            if waiting:
                yield waiting
            return
        started = self._clock()
        deadline = started + self.wait_s
        ready: list[T]
        while waiting:
            positions = self._positions(list(dict.fromkeys(spans[id(lane)][0] for lane in waiting)))
            if positions is None:  # fail open
                ready, waiting = waiting, []
            else:
                ready = []
                later: list[T] = []
                for lane in waiting:
                    key, first, _ = spans[id(lane)]
                    (ready if first == 1 or positions[key] >= first - 1 else later).append(lane)
                waiting = later
                if waiting and not ready and self._clock() >= deadline:
                    stats.timeouts += len(waiting)
                    ready, waiting = waiting, []
            if ready:
                stats.turns += 1
                stats.runs.extend(spans[id(lane)][0] for lane in ready)
                stats.waited_s = self._clock() - started
                yield ready
            elif waiting:
                self._sleep(self.poll_s)

