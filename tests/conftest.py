"""Shared pytest fixtures for relaycast."""

from __future__ import annotations

# ============================================================================
# Test-harness fixtures (real redis-server, soketi, fault-injecting HTTP server,
# Pusher WebSocket subscribers).  Keep this block self-contained; add project
# fixtures below it.
# ============================================================================
import os
import shutil
from collections.abc import Iterator

import pytest
import redis
from support.fault_server import FaultServer
from support.pusher_ws import Subscriber, SubscriberFactory
from support.redis_keys import delete_prefixed
from support.servers import RedisServer, Soketi, SoketiFactory, soketi_available

#: The viewer's browser fixtures (``browser``, ``make_stack``, ``viewer``), for tests/test_viewer_*.py.
pytest_plugins = ["support.viewer"]

#: soketi's per-event payload limit, matching Pusher Channels' 10 KB.
SOKETI_EVENT_MAX_SIZE_IN_KB = "10"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``long_wait`` (minutes spent waiting, hardly any CPU) run first: dealt out
    before the rest, each occupies one test process while the others get through the suite."""
    items.sort(key=lambda item: item.get_closest_marker("long_wait") is None)


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


def require(condition: bool, what: str) -> None:
    """Fail in CI (where everything must be present), skip locally."""
    if condition:
        return
    if in_ci():
        pytest.fail(f"required for this test but missing in CI: {what}")
    pytest.skip(f"missing: {what}")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server on a free port (never the system one on 6379)."""
    require(shutil.which("redis-server") is not None, "redis-server on PATH")
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A client of the private redis (this session's own: everything in it was written by
    tests), FLUSHALLed before and after."""
    assert redis_server.port != 6379, "refusing to flush the system redis"
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    try:
        yield client
    finally:
        client.close()
        # A test may have stopped the server (outage simulation): bring it back.
        if not redis_server.is_running():
            redis_server.start()
        assert redis_server.port != 6379, "refusing to flush the system redis"
        flusher = redis.Redis(host=redis_server.host, port=redis_server.port)
        try:
            flusher.flushall()
        finally:
            flusher.close()


@pytest.fixture(scope="session")
def soketi() -> Iterator[Soketi]:
    """The default soketi app (id "1", key "app-key", secret "app-secret", 10 KB limit)."""
    require(soketi_available(), "soketi (run `npm ci` in tools/) and node")
    server = Soketi(extra_env={"SOKETI_EVENT_MAX_SIZE_IN_KB": SOKETI_EVENT_MAX_SIZE_IN_KB})
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def soketi_factory() -> Iterator[SoketiFactory]:
    """Start extra soketi servers with special settings; all stopped at teardown.

    ``soketi_factory(extra_env={...}, app_id="1", key="app-key", secret="app-secret")``.
    The 10 KB event limit applies unless ``extra_env`` overrides it.
    """
    require(soketi_available(), "soketi (run `npm ci` in tools/) and node")
    started: list[Soketi] = []

    def make(
        extra_env: dict[str, str] | None = None,
        app_id: str = "1",
        key: str = "app-key",
        secret: str = "app-secret",
    ) -> Soketi:
        env = {"SOKETI_EVENT_MAX_SIZE_IN_KB": SOKETI_EVENT_MAX_SIZE_IN_KB, **(extra_env or {})}
        server = Soketi(app_id=app_id, key=key, secret=secret, extra_env=env)
        started.append(server)
        server.start()
        return server

    try:
        yield make
    finally:
        for server in started:
            server.close()


@pytest.fixture
def fault_server() -> Iterator[FaultServer]:
    server = FaultServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def subscriber_factory(request: pytest.FixtureRequest) -> Iterator[SubscriberFactory]:
    """Build Pusher WebSocket subscribers; all closed at teardown.

    ``subscriber_factory(server=None, *, key=None, secret=None)`` connects to
    ``server`` (default: the session ``soketi``) with its key/secret unless
    overridden.
    """
    made: list[Subscriber] = []

    def make(
        server: Soketi | None = None, *, key: str | None = None, secret: str | None = None
    ) -> Subscriber:
        target: Soketi = server if server is not None else request.getfixturevalue("soketi")
        sub = Subscriber(
            target.host,
            target.port,
            key if key is not None else target.key,
            secret if secret is not None else target.secret,
        )
        made.append(sub)
        return sub

    try:
        yield make
    finally:
        for sub in made:
            sub.close()


# ============================================================================
# End of test-harness fixtures.
# ============================================================================


# Project fixtures ------------------------------------------------------------------------------

import uuid  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from broadcasters.backends import MemoryBackend, RedisBackend  # noqa: E402
from broadcasters.state import SharedState  # noqa: E402
from workflows.store import LogStore  # noqa: E402

_PROJECT_ENV_PREFIXES = ("PUSHER_", "ABLY_", "RELAYCAST_", "REDIS_URL", "DATABASE_URL", "CELERY_")


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
                          ) -> None:
    """No test sees the developer's relaycast variables or a stray .env file."""
    import os

    for name in list(os.environ):
        if name.startswith(_PROJECT_ENV_PREFIXES):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


@pytest.fixture(params=["memory", "redis"])
def shared_state(request: pytest.FixtureRequest) -> Iterator[SharedState]:
    """The same state policy on each store: in memory, and on a private redis-server."""
    if request.param == "memory":
        yield SharedState(MemoryBackend())
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    store = RedisBackend.from_url(server.url, prefix=f"test-{uuid.uuid4().hex[:8]}:")
    yield SharedState(store)
    delete_prefixed(store)
    store.client.close()


POSTGRES_ADMIN_URL = os.environ.get("RELAYCAST_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database of our own, dropped afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import OperationalError

    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"relaycast_test_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        admin.dispose()
        require(False, f"PostgreSQL at {POSTGRES_ADMIN_URL} ({exc.__class__.__name__})")
    yield make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    from workflows.store import log_store as store_module

    for url, store in list(store_module._stores.items()):
        if url.endswith(f"/{name}"):
            store.engine.dispose()
            del store_module._stores[url]
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('db') / 'relaycast.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each storage test runs on the embedded default and on PostgreSQL."""
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture
def store(database_url: str) -> Iterator[LogStore]:
    """A LogStore on each database (SQLite and PostgreSQL)."""
    log_store = LogStore.from_url(database_url)
    try:
        yield log_store
    finally:
        log_store.close()


@pytest.fixture
def sqlite_store(sqlite_url: str) -> Iterator[LogStore]:
    log_store = LogStore.from_url(sqlite_url)
    try:
        yield log_store
    finally:
        log_store.close()


@pytest.fixture
def broker(redis_server: RedisServer) -> Iterator[str]:
    """The private Redis as broker and shared state, emptied before and after (ours alone)."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    yield redis_server.url
    client.flushall()
    client.close()


# The emitter's parts ------------------------------------------------------------------------------

from support.emitting import STOP_TIMEOUT_S, LateDatabase, MakeEmitter, late_sqlite  # noqa: E402

from workflows.emitter import Emitter  # noqa: E402


@pytest.fixture
def emitters() -> Iterator[MakeEmitter]:
    """Build emitters (flush interval 10 ms unless given); every one is stopped afterwards.

    Request it after the store fixture so emitters stop before their database goes away.
    """
    made: list[Emitter] = []

    def make(store: Callable[[], LogStore], enqueue: Callable[..., None] | None, **options: Any
             ) -> Emitter:
        options.setdefault("flush_interval_ms", 10)
        emitter = Emitter(store=store, enqueue=enqueue, **options)
        made.append(emitter)
        return emitter

    try:
        yield make
    finally:
        for emitter in made:
            emitter.stop(timeout_s=STOP_TIMEOUT_S)


@pytest.fixture
def late_database(database_url: str, tmp_path: Path) -> Iterator[LateDatabase]:
    """SQLite: the database's folder is a plain file until made available. PostgreSQL: the
    database does not exist until made available (then it is created, empty)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    if make_url(database_url).get_backend_name() == "sqlite":
        late = late_sqlite(tmp_path)
        yield late
        for log_store in late.opened:
            log_store.engine.dispose()
        return

    parsed = make_url(database_url)
    name = f"{parsed.database}_late"
    admin = create_engine(database_url, isolation_level="AUTOCOMMIT")

    def create() -> None:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))

    late = LateDatabase(parsed.set(database=name).render_as_string(hide_password=False), create)
    try:
        yield late
    finally:
        for log_store in late.opened:
            log_store.engine.dispose()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# Processes and stores of end-to-end tests -----------------------------------------------------------

from support.workers import Started  # noqa: E402


@pytest.fixture
def open_store() -> Iterator[Callable[[str], LogStore]]:
    """Open the test's view of a database; closed at teardown."""
    opened: list[LogStore] = []

    def open_(url: str) -> LogStore:
        opened.append(LogStore.from_url(url))
        return opened[-1]

    yield open_
    for log_store in opened:
        log_store.close()


@pytest.fixture
def workers() -> Iterator[Started]:
    """Processes (workers, beat) a test started (``workers.start(...)``); closed at teardown."""
    started = Started()
    yield started
    started.close()


@pytest.fixture
def closing() -> Iterator[list[Any]]:
    """Things with close() (servers, workers, clients, contexts) closed at teardown, last first."""
    items: list[Any] = []
    yield items
    for item in reversed(items):
        item.close()
