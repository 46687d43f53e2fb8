"""workflows.store.engine and the store's opening on SQLite and PostgreSQL: migrations applied
on first use, once even when processes open a fresh database together, and one store per
process and URL."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

from sqlalchemy import inspect

from workflows.store import LogStore, current_revision, head_revision, make_engine, store_for


def test_a_fresh_database_is_upgraded_automatically_on_first_use(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        assert current_revision(engine) is None
        LogStore(engine, migrate=False)
        assert current_revision(engine) is None, "migrate=False leaves the schema alone"
        store = LogStore(engine)
        assert head_revision() is not None
        assert current_revision(engine) == head_revision()
        assert {"log_lines", "runs", "alembic_version"} <= set(inspect(engine).get_table_names())
        store.append([("run-a", [{"ts": 1, "level": "info", "message": "a1", "data": {}}])])
        # Opening it again (another process) leaves the data and the revision alone.
        again = LogStore(engine)
        assert [line.seq for line in again.lines("run-a")] == [1]
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


def test_store_for_gives_one_store_per_process_and_url(sqlite_url: str, tmp_path: Any) -> None:
    other_url = f"sqlite:///{tmp_path / 'other.db'}"
    first = store_for(sqlite_url)
    try:
        assert store_for(sqlite_url) is first
        other = store_for(other_url)
        assert other is not first
        assert current_revision(other.engine) == head_revision()
    finally:
        first.engine.dispose()
        store_for(other_url).engine.dispose()


def test_processes_opening_a_fresh_database_at_once_all_get_the_schema(database_url: str) -> None:
    """Prefork workers open the store together on first use; each must find a whole schema
    and none may fail on a table another one has just created."""
    opener = ("import sys, time\n"
              "from workflows.store import LogStore\n"
              "time.sleep(max(0.0, float(sys.argv[2]) - time.time()))\n"
              "LogStore.from_url(sys.argv[1]).close()\n")
    start_at = time.time() + 4.0
    processes = [subprocess.Popen([sys.executable, "-c", opener, database_url, str(start_at)],
                                  stderr=subprocess.PIPE, text=True) for _ in range(6)]
    failures = []
    for process in processes:
        _, stderr = process.communicate(timeout=60)
        if process.returncode != 0:
            failures.append(stderr.strip().splitlines()[-1])
    assert failures == []
    engine = make_engine(database_url)
    try:
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()
