"""``relaycast replay``: broadcast again the stored lines no browser received live.

What is replayed (SQL is the source of truth, so every line is there to send):

* ``failed``: dead-lettered after its retries, or refused for good;
* ``logged``: taken only by ``log`` (during an outage or a spent quota), still owed to a live
  broadcaster — when one is configured (otherwise ``log`` is all there is, and it had them);
* ``pending`` for longer than the sweeper's bound (``RELAYCAST_SWEEP_AFTER_S``): lost on
  the way (a broker that lost a batch, beat not running).

Lines go through the broadcast queue as any batch does (``ordered=False``: their
predecessors are long gone), so flags, fallback, retries, dead-lettering and message ids
apply; the broadcast task marks each one ``sent`` when a live broadcaster delivers it.
``logged`` lines go in batches of their own with ``live_only`` (``log`` already has them).

**Safe to run twice.** Lines are claimed before they are enqueued: one conditional UPDATE
sets ``swept_at`` (the sweeper's "re-enqueued at") on lines not claimed in the last ten
minutes, so a second replay (or the sweeper) skips lines in flight, and of two replays at
once each line goes to one. The broadcast task clears the claim when it records the
outcome: a line that ends ``sent`` is never selected again, one that fails again can be
replayed at once. A claim whose batch vanished (a broker lost it) lapses after ten minutes.
A replay that loses lines to another one at the same moment selects again, so it goes on
with the next lines rather than stopping short of its limit while lines are owed.

**Truthful about what is left.** :func:`count` tells lines owed (``lines``) from lines
claimed and not settled yet (``in_flight``: another replay's, an earlier call's, or the
sweeper's, outcome not recorded), with the moment the last claim lapses
(``claimed_until_ms``). "Nothing to replay" means neither: nothing owed and nothing claimed.

**Bounded.** At most ``limit`` lines per call (5,000 by default) in tasks of at most
1,000 lines; the same command again continues with the next ones (those enqueued are
claimed).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypedDict

from broadcasters.factory import is_live
from broadcasters.wire import Batch, Channels, RunLines, contiguous, new_batch, pack_runs
from config import Settings
from tasks.broadcast import enqueue_batch
from tasks.sweep import RESWEEP_AFTER_S
from workflows.models import LineState, LogLine
from workflows.store import LogStore

#: Lines one call enqueues at most.
MAX_LINES_PER_REPLAY = 5000
#: Lines per broadcast task.
LINES_PER_TASK = 1000
#: How long a claimed line is left alone (the sweeper's own interval between re-enqueues).
CLAIM_S = RESWEEP_AFTER_S


@dataclass(frozen=True)
class ReplayScope:
    """Which lines: one run's or every run's, stored since ``since_ms`` if given."""

    run_id: str | None = None
    since_ms: int | None = None


@dataclass
class ReplayCounts:
    """Replayable lines, per state and run; ``in_flight``: claimed, outcome not recorded yet,
    the last of those claims lapsing at ``claimed_until_ms``."""

    by_state: Counter[str] = field(default_factory=Counter)
    by_run: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    claimed_until_ms: int | None = None

    @property
    def lines(self) -> int:
        return sum(self.by_state.values())

    @property
    def settled(self) -> bool:
        """Nothing owed and nothing claimed: the only state that is "nothing to replay"."""
        return not self.lines and not self.in_flight


@dataclass
class ReplayResult:
    enqueued: ReplayCounts
    #: Seq ranges enqueued, per run.
    ranges: dict[str, list[tuple[int, int]]]
    batches: int
    #: The limit was reached and more lines are waiting: run the same command again.
    more: bool


class ReplayEnqueueFailed(Exception):
    """The broker refused a batch; the lines not enqueued were released."""

    def __init__(self, enqueued: int, released: int, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.enqueued = enqueued
        self.released = released


class _Filters(TypedDict):
    stale_before_ms: int
    include_logged: bool
    run_id: str | None
    since_ms: int | None


def _filters(settings: Settings, scope: ReplayScope, now_ms: int) -> _Filters:
    return {"stale_before_ms": now_ms - int(settings.sweep_after_s * 1000),
            "include_logged": any(is_live(name) for name in settings.broadcaster_order),
            "run_id": scope.run_id, "since_ms": scope.since_ms}


def count(store: LogStore, settings: Settings, scope: ReplayScope, now_ms: int) -> ReplayCounts:
    """What a replay would take now (``--dry-run``), and what is in flight."""
    counts = ReplayCounts()
    rows = store.replay_counts(claimed_before_ms=now_ms - int(CLAIM_S * 1000),
                               **_filters(settings, scope, now_ms))
    for (run_id, state, in_flight), (n, claimed_at_ms) in rows.items():
        if in_flight:
            counts.in_flight += n
            if claimed_at_ms is not None:
                until_ms = claimed_at_ms + int(CLAIM_S * 1000)
                counts.claimed_until_ms = max(counts.claimed_until_ms or until_ms, until_ms)
        else:
            counts.by_state[state] += n
            counts.by_run[run_id] += n
    return counts


def replay(store: LogStore, settings: Settings, scope: ReplayScope, now_ms: int, *,
           limit: int = MAX_LINES_PER_REPLAY,
           enqueue: Callable[[Batch], None] = enqueue_batch) -> ReplayResult:
    """Claim up to ``limit`` replayable lines and enqueue them; see the module docstring."""
    lines, more = _claim(store, settings, scope, now_ms, limit)
    channels = Channels(settings.channel_prefix)
    plan = [(batch, ids) for live_only in (False, True)
            for batch, ids in _batches([line for line in lines
                                        if (line.broadcast_state == LineState.LOGGED) == live_only],
                                       channels, live_only)]
    enqueued = ReplayCounts()
    ranges: dict[str, list[tuple[int, int]]] = {}
    sent = 0
    for done, (batch, ids) in enumerate(plan):
        try:
            enqueue(batch)
        except Exception as exc:
            left = [i for _, rest in plan[done:] for i in rest]
            store.release_claims(left, at_ms=now_ms)
            raise ReplayEnqueueFailed(sent, len(left), exc) from exc
        sent += len(ids)
        for run in batch["runs"]:
            ranges.setdefault(run["run_id"], []).append(
                (run["events"][0]["seq"], run["events"][-1]["seq"]))
    for line in lines:
        enqueued.by_state[line.broadcast_state] += 1
        enqueued.by_run[line.run_id] += 1
    for spans in ranges.values():
        spans.sort()
    return ReplayResult(enqueued=enqueued, ranges=ranges, batches=len(plan), more=more)


def _claim(store: LogStore, settings: Settings, scope: ReplayScope, now_ms: int, limit: int
           ) -> tuple[list[LogLine], bool]:
    """Claim up to ``limit`` replayable lines, by run and seq; and whether more were left.

    Lines another replay claims between our SELECT and our UPDATE are lost to it: select
    again (they are no longer candidates) until the limit is reached or no candidate is
    left, so a replay started at the same moment as another takes the next lines instead of
    finding "nothing". Each round either claims lines or finds the ones it lost claimed."""
    claimed_before_ms = now_ms - int(CLAIM_S * 1000)
    filters = _filters(settings, scope, now_ms)
    lines: list[LogLine] = []
    while True:
        wanted = limit - len(lines)
        candidates = store.replay_candidates(claimed_before_ms=claimed_before_ms,
                                             limit=wanted + 1, **filters)
        taking = candidates[:wanted]
        claimed = store.claim_for_replay([line.id for line in taking], at_ms=now_ms,
                                         claimed_before_ms=claimed_before_ms)
        lines.extend(line for line in taking if line.id in claimed)
        if len(lines) >= limit or len(claimed) == len(taking):
            lines.sort(key=lambda line: (line.run_id, line.seq))
            return lines, len(candidates) > wanted


def _batches(lines: Sequence[LogLine], channels: Channels, live_only: bool
             ) -> list[tuple[Batch, list[int]]]:
    """Batches of at most :data:`LINES_PER_TASK` lines, each run's lines cut where seqs
    have a hole (a message never spans lines it does not carry)."""
    by_run: dict[str, list[LogLine]] = {}
    for line in lines:
        by_run.setdefault(line.run_id, []).append(line)
    pieces = [(run_id, piece) for run_id, run_lines in by_run.items()
              for piece in contiguous(run_lines, lambda line: line.seq)]
    out: list[tuple[Batch, list[int]]] = []
    for group in pack_runs(pieces, LINES_PER_TASK):
        runs: list[RunLines] = [{"run_id": run_id, "channel": channels.logs(run_id),
                                 "events": [line.event() for line in chunk]}
                                for run_id, chunk in group]
        out.append((new_batch(runs, ordered=False, live_only=live_only),
                    [line.id for _, chunk in group for line in chunk]))
    return out


__all__ = ["CLAIM_S", "MAX_LINES_PER_REPLAY", "ReplayCounts", "ReplayEnqueueFailed", "ReplayResult",
           "ReplayScope", "count", "replay"]
