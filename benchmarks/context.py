"""What every phase runs against: the servers on loopback, the environment the workers and
producers get, the subscriber, the progress bar and the notes gathered on the way."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.harness import (
    REPO,
    Progress,
    RedisServer,
    Soketi,
    TimedSubscriber,
    project_env,
    soketi_counters,
)
from benchmarks.options import Plan
from benchmarks.profiling import PySpy

#: The shared state's key prefix in the benchmark's private redis-server.
STATE_PREFIX = "bench:"


@dataclass
class Context:
    plan: Plan
    workdir: Path
    env: dict[str, str]
    db_url: str
    redis: RedisServer
    soketi: Soketi
    subscriber: TimedSubscriber
    progress: Progress
    profiler: PySpy | None = None
    notes: list[str] = field(default_factory=list)
    #: Which database relaycast stores in: ``sqlite`` or ``postgresql`` (names files, labels).
    database: str = "sqlite"


def design_key(database: str) -> str:
    """Where a relaycast run on ``database`` is filed in the results (SQLite, the embedded
    default, is plain ``relaycast``: the ratios against the baseline are taken on it)."""
    return "relaycast" if database == "sqlite" else f"relaycast-{database}"


def postgresql_context(ctx: Context, stack: contextlib.ExitStack) -> Context:
    """``ctx`` with relaycast storing in a fresh PostgreSQL database (migrated, dropped by
    ``stack``), at ``RELAYCAST_BENCH_POSTGRES`` (the server's ``postgres`` database by default)."""
    from benchmarks.prune import create_database, drop_database
    from workflows.store import LogStore

    ctx.progress.note("creating a PostgreSQL database for relaycast's runs")
    url = create_database()
    stack.callback(drop_database, url)
    LogStore.from_url(url).close()  # migrations, as `relaycast db upgrade` would
    return dataclasses.replace(ctx, env={**ctx.env, "DATABASE_URL": url}, db_url=url,
                               database="postgresql")


def open_context(plan: Plan, stack: contextlib.ExitStack, progress: Progress) -> Context:
    """Start redis-server, soketi, the SQLite database and the subscriber; ``stack`` stops
    them and removes the temporary directory."""
    workdir = Path(tempfile.mkdtemp(prefix="relaycast-bench-"))
    stack.callback(shutil.rmtree, workdir, ignore_errors=True)
    progress.note("starting redis-server and soketi on loopback")
    redis_server = RedisServer()
    stack.callback(redis_server.close)
    redis_server.start()
    soketi = Soketi(extra_env={"SOKETI_EVENT_MAX_SIZE_IN_KB": "10",
                               "SOKETI_METRICS_ENABLED": "true"})
    stack.callback(soketi.close)
    soketi.start()
    db_url = f"sqlite:///{workdir / 'relaycast.db'}"
    from workflows.store import LogStore

    LogStore.from_url(db_url).close()  # migrations, as `relaycast db upgrade` would
    python_path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    env = project_env({
        "REDIS_URL": redis_server.url, "DATABASE_URL": db_url, **soketi.env(),
        "RELAYCAST_STATE_PREFIX": STATE_PREFIX,
        "RELAYCAST_FLUSH_INTERVAL_MS": str(plan.flush_interval_ms),
        "RELAYCAST_FLUSH_MAX_LINES": str(plan.flush_max_lines),
        "PYTHONPATH": python_path,
    })
    subscriber = TimedSubscriber(soketi.host, soketi.port, soketi.key, soketi.secret)
    stack.callback(subscriber.close)
    ctx = Context(plan=plan, workdir=workdir, env=env, db_url=db_url, redis=redis_server,
                  soketi=soketi, subscriber=subscriber, progress=progress)
    if soketi_counters(soketi) is None:
        ctx.notes.append("soketi's metrics endpoint did not answer: HTTP requests not counted")
    if plan.profile:
        ctx.profiler = PySpy(workdir / "profiles")
        ctx.profiler.workdir.mkdir()
        stack.callback(ctx.profiler.stop_all)
    return ctx
