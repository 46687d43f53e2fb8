"""Numbering and writing lines to SQL, for the emitter's flusher.

:class:`LineWriter` cleans each line (:mod:`workflows.cleaning`), adds a WARNING line to
each run that lost lines from a full buffer, and hands the flush to
:meth:`workflows.store.LogStore.append`, which numbers the lines where they are stored (one
transaction; contiguous per run across every process and host).

* SQL unreachable (the store cannot be opened, or the connection fails): nothing is lost;
  the caller keeps the lines and the writer waits before the next try (backoff).
* The database refuses the data (not the connection): the lines are stored one by one; a
  refused one is stored as a placeholder holding its text escaped; if even that is refused
  (a run id SQL cannot hold), it is dropped and counted. One bad line never blocks another.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from broadcasters.backoff import FailureStreak
from broadcasters.wire import LineEvent
from workflows.buffer import AdminEntry, DropLedger, Entry
from workflows.cleaning import (
    ORIGINAL_LEVEL_KEY,
    Cleaning,
    clean_data,
    clean_text,
    normalise_level,
    safe_str,
)
from workflows.models import RunStatus

if TYPE_CHECKING:
    from workflows.store import LogStore

logger = logging.getLogger("workflows.emitter")

#: Per run, in order: its lines with their seqs.
Stored = list[tuple[str, list[LineEvent]]]
#: Lifecycle admin events the runs table follows.
_ENDINGS = {"finished": RunStatus.SUCCEEDED, "failed": RunStatus.FAILED}


def is_connection_error(exc: BaseException) -> bool:
    """Errors that mean "the database is unreachable or busy", not "it refused this data"."""
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, InterfaceError | OperationalError | OSError | ConnectionError)


def is_data_error(exc: BaseException) -> bool:
    """The database (or its driver) refused the data itself."""
    from sqlalchemy.exc import DBAPIError, StatementError

    return (isinstance(exc, DBAPIError | StatementError | UnicodeError | ValueError | TypeError)
            and not is_connection_error(exc))


@dataclass
class _Item:
    run_id: str
    line: dict[str, Any]
    entry: Entry | None  # None: the WARNING line about dropped lines


class LineWriter:
    def __init__(self, store: Callable[[], LogStore], ledger: DropLedger, cleaning: Cleaning,
                 on_drops: Callable[[int], None] | None = None) -> None:
        self._store_factory = store
        self._store: LogStore | None = None
        self.ledger = ledger
        self.cleaning = cleaning
        #: Told how many lines were dropped, once they are accounted for in SQL (health).
        self._on_drops = on_drops
        self.stored = 0
        self.failures = 0
        self.placeholders = 0
        self._streak = FailureStreak()

    # SQL availability ------------------------------------------------------------------------

    def ready(self) -> bool:
        """False while waiting after a failure (backoff)."""
        return self._streak.ready()

    def store(self) -> LogStore:
        """The store, opened on first use (in the flusher thread, never on the emit path)."""
        if self._store is None:
            self._store = self._store_factory()
        return self._store

    def forget_store(self) -> None:
        self._store = None

    def _unavailable(self, exc: BaseException, waiting: int) -> None:
        self.failures += 1
        if self._streak.failed():
            logger.warning("relaycast emitter: SQL unavailable (%s: %s); %d line(s) waiting",
                           type(exc).__name__, str(exc).splitlines()[0][:200] if str(exc) else "",
                           waiting)

    # Writing ---------------------------------------------------------------------------------

    def write(self, entries: list[Entry]) -> tuple[Stored, list[Entry]]:
        """Store ``entries`` (and the drop warnings owed); return what was stored, per run,
        and the entries left for later (all of them when SQL is unavailable)."""
        drops = self.ledger.take_unreported()
        items = self._items(entries, drops)
        if not items:
            return [], []
        try:
            store = self.store()
            stored = store.append(_group(items))
        except Exception as exc:  # noqa: BLE001 - whatever failed, the lines are kept
            if is_data_error(exc) and self._store is not None:
                logger.warning("relaycast emitter: the database refused a batch (%s); storing "
                               "line by line", type(exc).__name__)
                stored, left = self._write_one_by_one(items)
            else:
                self._unavailable(exc, len(entries))
                self.ledger.give_back(drops)
                return [], entries
        else:
            left = []
        self._streak.succeeded()
        self.stored += sum(len(events) for _, events in stored)
        reported = sum(drops.values())
        if reported and self._on_drops is not None:
            try:
                self._on_drops(reported)
            except Exception:
                logger.warning("relaycast emitter: could not report dropped lines", exc_info=True)
        return stored, left

    def _items(self, entries: list[Entry], drops: dict[str, int]) -> list[_Item]:
        now_ms = time.time_ns() // 1_000_000
        items = [_Item(run_id, {"ts": now_ms, "level": "warning",
                                "message": f"relaycast: {count} line(s) of this run were dropped "
                                           f"(emitter buffer full)",
                                "data": {"dropped": count}}, None)
                 for run_id, count in drops.items()]
        items.extend(_Item(entry[1], self._line(entry), entry) for entry in entries)
        return items

    def _line(self, entry: Entry) -> dict[str, Any]:
        _, _, level, message, data, ts = entry
        report = self.cleaning
        name, unknown = normalise_level(level, report)
        clean = clean_data(data, report)
        if unknown is not None:
            clean = {**clean, ORIGINAL_LEVEL_KEY: unknown}
        text = clean_text(message, report) if type(message) is str else safe_str(message, report)
        return {"ts": ts, "level": name, "message": text, "data": clean}

    def _write_one_by_one(self, items: list[_Item]) -> tuple[Stored, list[Entry]]:
        store = self.store()
        stored: Stored = []
        for index, item in enumerate(items):
            line: dict[str, Any] | None = item.line
            while line is not None:
                try:
                    [(_, events)] = store.append([(item.run_id, [line])])
                except Exception as exc:  # noqa: BLE001
                    if not is_data_error(exc):
                        self._unavailable(exc, len(items) - index)
                        return stored, [i.entry for i in items[index:] if i.entry is not None]
                    line = self._placeholder(item, line, exc)
                    continue
                if stored and stored[-1][0] == item.run_id:
                    stored[-1][1].extend(events)
                else:
                    stored.append((item.run_id, events))
                break
        return stored, []

    def _placeholder(self, item: _Item, line: dict[str, Any], exc: Exception
                     ) -> dict[str, Any] | None:
        if line.get("data", {}).get("unstorable"):  # even the placeholder was refused
            self.ledger.count(item.run_id)
            self.ledger.unreported.pop(item.run_id, None)
            logger.error("relaycast emitter: a line of run %r cannot be stored at all (%s); "
                         "dropped", str(item.run_id)[:40], type(exc).__name__)
            return None
        self.placeholders += 1
        logger.warning("relaycast emitter: a line of run %s was refused by the database (%s); "
                       "stored as escaped text", str(item.run_id)[:40], type(exc).__name__)
        return {**line, "message": ascii(line["message"])[:10_000],
                "data": {"unstorable": True, "error": type(exc).__name__}}

    # The runs table ---------------------------------------------------------------------------

    def record_lifecycle(self, admin: list[AdminEntry]) -> None:
        """Keep the ``runs`` table in step with lifecycle events (best effort, idempotent)."""
        for _, event_type, payload in admin:
            run_id = payload.get("run_id")
            if event_type not in ("started", *_ENDINGS) or not isinstance(run_id, str):
                continue
            try:
                store = self.store()
                if event_type == "started":
                    store.start_run(run_id, safe_str(payload.get("workflow", "")),
                                    clean_data(payload.get("params") or {}), at_ms=payload["ts"])
                else:
                    store.finish_run(run_id, _ENDINGS[event_type],
                                     payload.get("error"), at_ms=payload["ts"],
                                     workflow=safe_str(payload.get("workflow", "")))
            except Exception as exc:  # noqa: BLE001 - bookkeeping only
                logger.warning("relaycast emitter: could not record run %s %s: %s", run_id,
                               event_type, exc)


def _group(items: list[_Item]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Lines per run, runs in first-seen order, lines in order."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        runs.setdefault(item.run_id, []).append(item.line)
    return list(runs.items())
