"""Lines put in a store for a test the way the writer stores them: :meth:`LogStore.append`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from workflows.store import LogStore


def seed_lines(store: LogStore, rows: Iterable[Mapping[str, Any]]) -> None:
    """Append ``rows`` (each with its ``run_id``, ``seq``, ``ts``, ``level``, ``message`` and
    ``data``) in one :meth:`LogStore.append`, each run's in seq order.

    Each run's seqs must be the ones ``append`` gives them, its next ones (from 1 for a new
    run): the test fails here otherwise, rather than on lines numbered other than it says.
    """
    by_run: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        by_run.setdefault(row["run_id"], []).append(row)
    wanted = {run_id: sorted(lines, key=lambda row: int(row["seq"]))
              for run_id, lines in by_run.items()}
    stored = store.append([(run_id, [{"ts": row["ts"], "level": row["level"],
                                      "message": row["message"], "data": row["data"]}
                                     for row in lines])
                           for run_id, lines in wanted.items()])
    numbered = {run_id: [event["seq"] for event in events] for run_id, events in stored}
    asked = {run_id: [int(row["seq"]) for row in lines] for run_id, lines in wanted.items()}
    assert numbered == asked, "seed_lines: each run's seqs must be its next ones"


def replay_row(run_id: str, seq: int, ts: int) -> dict[str, Any]:
    """A plain info line of ``run_id`` (what the replay tests seed)."""
    return {"run_id": run_id, "seq": seq, "ts": ts, "level": "info",
            "message": f"{run_id} line {seq}", "data": {"seq": seq}}
