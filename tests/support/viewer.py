"""The viewer's browser-test harness: Debian's chromium driven by Playwright for Python (never
a downloaded browser), against real soketi, a private Redis, a real ``celery worker`` with two
processes and ``relaycast api``, all on loopback. Registered as a pytest plugin by
``tests/conftest.py``; the tests are in ``tests/test_viewer_*.py``.

The run view renders only the rows in sight (see relaycast/api/static/logview.js), so
completeness is read from the client's state (``#log[data-line-count]``,
``relaycastView.seqs()``), and exactly-once / in-order is checked on what is rendered by
scrolling through the whole log. Screenshots go to ``$RELAYCAST_ARTIFACTS`` (default
``tests/artifacts/``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest
from conftest import require

from support.api import ApiServer, SocketIOServer
from support.browser import CHROMIUM, chromium
from support.runs import TEST_ORDER_WAIT_MS, start_run
from support.servers import Soketi, free_port, soketi_available
from support.workers import CeleryWorker
from workflows.store import LogStore

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

REPO = Path(__file__).resolve().parents[2]
TOKEN = "viewer-token-for-browser-tests"
#: How long any page wait may take before the test gives up (a hang guard, not a bound).
PAGE_WAIT_MS = 120_000
ARTIFACTS = Path(os.environ.get("RELAYCAST_ARTIFACTS") or REPO / "tests" / "artifacts")

LINE_COUNT = "document.querySelector('#log').dataset.lineCount"
# The pages' Content-Security-Policy forbids eval: page.wait_for_function gets functions
# ("() => ..."), never bare expressions, which Playwright would evaluate with eval.


# Fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    require(CHROMIUM.exists(), f"{CHROMIUM} (apt-get install chromium; tools/test.sh does it)")
    with chromium() as launched:
        yield launched


@dataclass
class Viewer:
    """A browser context signed in to one ``relaycast api``, recording what its pages do."""

    context: BrowserContext
    api: ApiServer
    hosts: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    first: Page = field(init=False)

    def page(self) -> Page:
        page = self.context.new_page()
        page.on("request", lambda request: self.hosts.add(urlsplit(request.url).hostname or ""))
        page.on("websocket", lambda socket: self.hosts.add(urlsplit(socket.url).hostname or ""))
        page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))
        page.on("console", lambda message: self.errors.append(f"console: {message.text}")
                if "Content Security Policy" in message.text else None)
        return page

    def sign_in(self, page: Page) -> None:
        answer = page.goto(f"{self.api.url}/ui/?token={TOKEN}")
        assert answer is not None
        assert answer.status == 200
        assert page.url == f"{self.api.url}/ui/"

    def open_run(self, page: Page, run_id: str) -> None:
        page.goto(f"{self.api.url}/ui/runs/{run_id}")

    def check_clean(self) -> None:
        """No script error, no CSP violation, nothing loaded from anywhere but loopback."""
        assert self.errors == []
        assert self.hosts <= {"127.0.0.1"}, self.hosts


@dataclass
class Stack:
    env: dict[str, str]
    api: ApiServer
    database_url: str

    def start_run(self, workflow: str, run_id: str, **params: Any) -> None:
        start_run(self.env, workflow, run_id, **params)

    def store(self) -> LogStore:
        return LogStore.from_url(self.database_url)


@pytest.fixture
def make_stack(broker: str, sqlite_url: str, closing: list[Any]) -> Callable[..., Stack]:
    """``make_stack(soketi, worker=True, **env)``: api (and a 2-process worker) on soketi."""

    def make(soketi: Soketi | None, *, worker: bool = True, **extra: str) -> Stack:
        env = {"REDIS_URL": broker, "DATABASE_URL": sqlite_url,
               "RELAYCAST_STATE_PREFIX": f"v{uuid.uuid4().hex[:6]}:",
               "RELAYCAST_FLUSH_INTERVAL_MS": "50", "RELAYCAST_ADMIN_TOKEN": TOKEN,
               "RELAYCAST_ORDER_WAIT_MS": TEST_ORDER_WAIT_MS,
               **(soketi.env() if soketi else {}), **extra}
        if worker:
            celery = CeleryWorker(env, concurrency=2)
            closing.append(celery)
            celery.start()
        api = ApiServer(env, "--host", "127.0.0.1")
        closing.append(api)
        api.start()
        return Stack(env, api, sqlite_url)

    return make


@pytest.fixture
def viewer(browser: Browser, closing: list[Any]) -> Callable[..., Viewer]:
    """``viewer(api, signed_in=True)``: a fresh browser context (and its first page,
    ``.first``), signed in through the sign-in link unless told otherwise."""

    def make(api: ApiServer, *, signed_in: bool = True) -> Viewer:
        context = browser.new_context(viewport={"width": 1360, "height": 860})
        # Waits are for conditions, not speed: on a busy machine a page may take long.
        context.set_default_timeout(PAGE_WAIT_MS)
        closing.append(context)
        view = Viewer(context, api)
        view.first = view.page()
        if signed_in:
            view.sign_in(view.first)
        return view

    return make


def new_run_id(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex[:8]}"


def line_count(page: Page) -> int:
    return int(page.evaluate(LINE_COUNT))


def wait_for_lines(page: Page, count: int, timeout_s: float = 240) -> None:
    page.wait_for_function(f"() => Number({LINE_COUNT}) >= {count}", timeout=timeout_s * 1000)


def wait_for_state(page: Page, state: str, transport: str | None = None, timeout_s: float = 30) -> None:
    selector = f"#connection[data-state='{state}']"
    if transport:
        selector += f"[data-transport='{transport}']"
    page.wait_for_selector(selector, timeout=timeout_s * 1000)


def rendered_in_full(page: Page) -> list[int]:
    """Scroll the log from top to bottom, one screen at a time, rendering each position; check
    each screen's rows are distinct, consecutive and in seq order, and return every seq seen."""
    result: dict[str, Any] = page.evaluate("""() => {
        const log = document.querySelector('#log');
        relaycastView.setFollow(false);
        const rowH = parseFloat(getComputedStyle(log).getPropertyValue('--row-h'));
        const seen = []; const problems = []; let maxRows = 0;
        for (let top = 0; ; top += log.clientHeight) {
            log.scrollTop = top;
            relaycastView.renderNow();
            const rows = [...log.querySelectorAll('#log .line')];
            maxRows = Math.max(maxRows, rows.length);
            const seqs = rows.map(r => Number(r.dataset.seq));
            for (let i = 1; i < seqs.length; i++) {
                if (seqs[i] !== seqs[i - 1] + 1) problems.push(`at ${top}: ${seqs[i - 1]} then ${seqs[i]}`);
            }
            if (rows.some(r => !r.dataset.level)) problems.push(`at ${top}: a row without data-level`);
            seen.push(...seqs);
            if (top + log.clientHeight >= log.scrollHeight) break;
        }
        return {seen, problems, maxRows, screenRows: Math.ceil(log.clientHeight / rowH)};
    }""")
    assert result["problems"] == []
    assert result["maxRows"] <= result["screenRows"] + 30, "only the rows in sight are rendered"
    return sorted(set(result["seen"]))


def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path))
    return path


def note_row_times(page: Page) -> None:
    """Record when each runs-list row appears and changes status (``window.rowTimes``), by the
    page's clock: the same machine's clock the workers stamp started_at / finished_at with."""
    page.evaluate("""() => {
        window.rowTimes = {};
        const note = () => {
            for (const tr of document.querySelectorAll('#runs-body tr[data-run-id]')) {
                const key = `${tr.dataset.runId} ${tr.dataset.status}`;
                if (!(key in window.rowTimes)) window.rowTimes[key] = Date.now();
            }
        };
        note();
        new MutationObserver(note).observe(document.querySelector('#runs-body'),
            {subtree: true, childList: true, attributes: true, attributeFilter: ['data-status']});
    }""")


def finished_at(stack: Stack, run_id: str) -> tuple[int, int]:
    store = stack.store()
    try:
        run = store.run(run_id)
    finally:
        store.close()
    assert run is not None
    assert run.finished_at is not None
    return run.started_at, run.finished_at


def own_soketi(closing: list[Any]) -> Soketi:
    """A soketi of this test's own on a fixed port (a restart comes back on the same port)."""
    require(soketi_available(), "soketi (run `npm ci` in tools/) and node")
    server = Soketi(port=free_port(), extra_env={"SOKETI_EVENT_MAX_SIZE_IN_KB": "10"})
    closing.append(server)
    server.start()
    return server



def provider_changes(page: Page) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = page.evaluate("relaycastView.adminEvents()")
    return [e for e in events if e["type"] == "provider-changed"]


def socketio_stack(make_stack: Callable[..., Stack], broker: str, closing: list[Any]
                   ) -> tuple[Stack, SocketIOServer]:
    """Workers broadcasting through Socket.IO only, and a ``relaycast socketio`` on a port of
    its own (the page reaches it on its own host, that port)."""
    port = free_port()
    extra = {"SOCKETIO_MESSAGE_QUEUE": broker, "RELAYCAST_BROADCASTERS": "socketio",
             "RELAYCAST_SOCKETIO_PORT": str(port)}
    server = SocketIOServer({**extra, "REDIS_URL": broker, "RELAYCAST_ADMIN_TOKEN": TOKEN},
                            port=port)
    closing.append(server)
    server.start()
    return make_stack(None, **extra), server
