"""The store's database: engines, and the schema's Alembic migrations (shipped in
:mod:`workflows.migrations`), applied by ``relaycast db upgrade`` and automatically the first
time a process opens the store."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


#: How long a connection keeps asking to switch a new SQLite file to WAL while another holds it.
WAL_SWITCH_S = 30.0


def _use_wal(cursor: Any) -> None:
    """Put the file in WAL mode. WAL is a property of the file, set once: asking to set it
    again takes a lock that a busy writer can refuse at once ("database is locked", with no
    busy wait), so a file already in WAL is left alone, and a switch refused because another
    connection holds the file is asked again until it is done (by us or by the other)."""
    import sqlite3
    import time

    deadline = time.monotonic() + WAL_SWITCH_S
    while str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets its folder created, WAL and a busy timeout."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA busy_timeout=30000")
            _use_wal(cursor)
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5,
                         connect_args={"connect_timeout": 5} if parsed.get_backend_name() ==
                         "postgresql" else {})


def head_revision() -> str | None:
    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


@contextmanager
def _sqlite_file_lock(engine: Engine) -> Iterator[None]:
    """Hold an exclusive lock beside a SQLite file while its schema changes.

    SQLite runs DDL outside a transaction, so two processes opening a fresh file at once
    (prefork workers on first use) would both create the tables and one would fail. The
    lock file sits next to the database; the second process waits, then finds the head
    revision and changes nothing. Other databases (and in-memory SQLite) need no lock here.
    """
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    with open(f"{database}.migrate-lock", "a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply migrations up to ``revision``, one process at a time (PostgreSQL: under an
    advisory lock; a SQLite file: under a lock file beside it)."""
    with _sqlite_file_lock(engine), engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(774411)"))
        config = _alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
