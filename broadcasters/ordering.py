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

from broadcasters.backends import StateUnavailable
from broadcasters.state import SharedState, bucket_of
from broadcasters.wire import RunLines

GATE_TTL_S = 86_400
#: Bucket upper bounds (ms) of the gate-wait histogram kept in the pipeline counters.
WAIT_BUCKETS_MS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


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

    def _positions(self, run_ids: Sequence[str]) -> dict[str, int] | None:
        """Each run's gate (-1: none yet); None when the shared state is unreachable."""
        try:
            raw = self.state.backend.get_many([f"gate:{r}" for r in run_ids])
        except StateUnavailable as exc:
            self.state.note_unavailable("read ordering gates", exc)
            return None
        return {r: int(v) if v is not None else -1 for r, v in zip(run_ids, raw, strict=True)}

    def passed(self, runs: Sequence[RunLines]) -> None:
        """These lines have had their turn: let the lines after them go (one round trip)."""
        last: dict[str, int] = {}
        for run in runs:
            if run["events"]:
                key = f"gate:{run['run_id']}"
                last[key] = max(last.get(key, -1), int(run["events"][-1]["seq"]))
        try:
            self.state.backend.set_max_many(last, GATE_TTL_S)
        except StateUnavailable as exc:
            self.state.note_unavailable("move an ordering gate", exc)

    def turns(self, runs: Sequence[RunLines], stats: GateStats | None = None
              ) -> Iterator[list[RunLines]]:
        """Yield groups of ``runs`` whose turn has come, waiting (bounded) for the others.

        The caller publishes each group, then calls :meth:`passed` with it.
        """
        stats = stats if stats is not None else GateStats()
        waiting = [run for run in runs if run["events"]]
        if self.wait_s <= 0 or not waiting:
            if waiting:
                yield waiting
            return
        started = self._clock()
        deadline = started + self.wait_s
        while waiting:
            positions = self._positions([run["run_id"] for run in waiting])
            if positions is None:  # fail open
                ready, waiting = waiting, []
            else:
                ready = [run for run in waiting
                         if _first(run) == 1 or positions[run["run_id"]] >= _first(run) - 1]
                waiting = [run for run in waiting if run not in ready]
                if waiting and not ready and self._clock() >= deadline:
                    stats.timeouts += len(waiting)
                    ready, waiting = waiting, []
            if ready:
                stats.turns += 1
                stats.runs.extend(run["run_id"] for run in ready)
                stats.waited_s = self._clock() - started
                yield ready
            elif waiting:
                self._sleep(self.poll_s)


def _first(run: RunLines) -> int:
    return int(run["events"][0]["seq"])
