"""The viewer in real Chromium: Debian's chromium driven by Playwright for Python (never a
downloaded browser), against real soketi, a private Redis, a real ``celery worker`` with two
processes and ``relaycast api``, all on loopback.

The run view renders only the rows in sight (see relaycast/api/static/run.js), so completeness is read
from the client's state (``#log[data-line-count]``, ``relaycastView.seqs()``), and
exactly-once / in-order is checked on what is rendered by scrolling through the whole log.
Screenshots go to ``$RELAYCAST_ARTIFACTS`` (default ``tests/artifacts/``).
"""

from __future__ import annotations

import os
import time
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
from support.runs import start_run
from support.seeding import seed_lines
from support.servers import Soketi, free_port, soketi_available
from support.workers import CeleryWorker, ForwardingProxy, relaycast_cli

from workflows.models import RunStatus
from workflows.store import LogStore

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

REPO = Path(__file__).resolve().parents[1]
TOKEN = "viewer-token-for-browser-tests"
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
        closing.append(context)
        view = Viewer(context, api)
        view.first = view.page()
        if signed_in:
            view.sign_in(view.first)
        return view

    return make


def _run_id(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex[:8]}"


def line_count(page: Page) -> int:
    return int(page.evaluate(LINE_COUNT))


def wait_for_lines(page: Page, count: int, timeout_s: float = 90) -> None:
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


# The Show list ------------------------------------------------------------------------------


@pytest.mark.timeout(180)
def test_a_2000_line_run_watched_from_its_start_shows_every_line_once_in_order(
        make_stack: Callable[..., Stack], viewer: Callable[..., Viewer], soketi: Soketi) -> None:
    stack = make_stack(soketi)
    view = viewer(stack.api)
    page = view.first
    run_id = _run_id("watch")
    view.open_run(page, run_id)
    wait_for_state(page, "live", "pusher")
    stack.start_run("burst", run_id, lines=2000, delay_ms=2)
    wait_for_lines(page, 2000)
    page.wait_for_selector("#run-status[data-status='succeeded']", timeout=60_000)
    assert page.evaluate("relaycastView.seqs()") == list(range(1, 2001))
    assert page.get_attribute("#log", "data-line-count") == "2000"
    assert page.get_attribute("#log", "data-last-seq") == "2000"
    assert page.is_visible("#connection[data-state='live'][data-transport='pusher']")
    stats = page.evaluate("relaycastView.stats()")
    print(f"\n2,000-line run watched live: {stats}")
    assert stats["live"] >= 1000, "most lines arrived through Pusher, not history"
    page.wait_for_timeout(300)
    screenshot(page, "run-view.png")
    assert rendered_in_full(page) == list(range(1, 2001)), "every line rendered exactly once, in order"
    view.check_clean()


@pytest.mark.timeout(180)
def test_a_page_opened_halfway_through_a_run_merges_history_and_live_without_gap_or_repeat(
        make_stack: Callable[..., Stack], viewer: Callable[..., Viewer], soketi: Soketi) -> None:
    stack = make_stack(soketi)
    view = viewer(stack.api)
    page = view.first
    run_id = _run_id("halfway")
    total = 3000
    stack.start_run("burst", run_id, lines=total, delay_ms=3)
    store = stack.store()
    try:
        deadline = time.monotonic() + 60
        while store.line_counts([run_id]).get(run_id, (0, 0))[0] < 1000 and time.monotonic() < deadline:
            time.sleep(0.05)
        stored_when_opened = store.line_counts([run_id]).get(run_id, (0, 0))[0]
    finally:
        store.close()
    assert 1000 <= stored_when_opened < total, "the page opens mid-run"
    view.open_run(page, run_id)
    wait_for_lines(page, total)
    page.wait_for_selector("#run-status[data-status='succeeded']", timeout=60_000)
    assert page.evaluate("relaycastView.seqs()") == list(range(1, total + 1))
    stats = page.evaluate("relaycastView.stats()")
    print(f"\nopened at seq {stored_when_opened}: {stats}")
    assert stats["history"] >= stored_when_opened - 50, "the first part came from history"
    assert stats["live"] > 0, "the rest arrived live"
    assert rendered_in_full(page) == list(range(1, total + 1))
    view.check_clean()


@pytest.mark.timeout(180)
def test_a_live_message_lost_on_the_way_or_a_truncated_line_is_filled_from_history(
        make_stack: Callable[..., Stack], viewer: Callable[..., Viewer], soketi: Soketi,
        closing: list[Any]) -> None:
    # Workers publish through a proxy that can swallow a request and answer 200, as if
    # delivered; the browser connects to soketi itself (RELAYCAST_BROWSER_WS_PORT).
    proxy = ForwardingProxy(soketi.url)
    closing.append(proxy)
    stack = make_stack(soketi, PUSHER_PORT=str(proxy.port), RELAYCAST_BROWSER_WS_PORT=str(soketi.port))
    view = viewer(stack.api)
    page = view.first
    run_id = _run_id("lossy")
    total = 1201  # 1,200 lines and, in the middle (seq 601), one of 12,000 bytes: too large for Pusher
    view.open_run(page, run_id)
    wait_for_state(page, "live", "pusher")
    stack.start_run("burst", run_id, lines=1200, delay_ms=5, big_line_bytes=12_000)
    wait_for_lines(page, 50)
    proxy.fail_next(200, "{}")  # the next publish (long before seq 601) never reaches soketi
    wait_for_lines(page, total)
    assert page.evaluate("relaycastView.seqs()") == list(range(1, total + 1))
    stats = page.evaluate("relaycastView.stats()")
    print(f"\none message swallowed, one line truncated live: {stats}")
    assert stats["gapFills"] >= 1
    assert stats["history"] >= 1, "the lost lines came from history"
    assert stats["truncated"] == 1
    big = page.evaluate("""() => {
        relaycastView.setFollow(false);
        const log = document.querySelector('#log');
        log.scrollTop = 600 * 22;
        relaycastView.renderNow();
        return document.querySelector("#log .line[data-seq='601'] .msg").textContent;
    }""")
    assert big == "é" * 6000, "the whole line, from history, not the truncated live one"
    assert page.is_visible("#connection[data-state='live'][data-transport='pusher']")
    view.check_clean()


@pytest.mark.timeout(240)
def test_soketi_stopped_mid_run_the_page_polls_then_goes_live_again_and_misses_nothing(
        make_stack: Callable[..., Stack], viewer: Callable[..., Viewer],
        closing: list[Any]) -> None:
    server = own_soketi(closing)
    stack = make_stack(server)
    view = viewer(stack.api)
    page = view.first
    run_id = _run_id("outage")
    total = 2000
    view.open_run(page, run_id)
    wait_for_state(page, "live", "pusher")
    page.evaluate("""() => {
        const el = document.querySelector('#connection');
        window.connectionLog = [];
        new MutationObserver(() => window.connectionLog.push(
            [Math.round(performance.now()), el.dataset.transport, el.dataset.state, el.title])
        ).observe(el, {attributes: true, attributeFilter: ['data-state', 'data-transport']});
    }""")
    stack.start_run("burst", run_id, lines=total, delay_ms=20)  # about 45 s of lines
    wait_for_lines(page, 150)

    server.stop()
    stopped = time.monotonic()
    page.wait_for_function("() => document.querySelector('#connection').dataset.state !== 'live'",
                           timeout=5000)
    left_live_s = time.monotonic() - stopped
    wait_for_state(page, "polling", "polling", timeout_s=15)
    before = line_count(page)
    wait_for_lines(page, before + 100, timeout_s=20)
    assert not server.is_running()
    print(f"\nsoketi stopped: left live after {left_live_s:.2f} s; lines kept arriving by polling "
          f"({before} -> {line_count(page)})")

    server.start()
    assert server.port == int(stack.env["PUSHER_PORT"]), "restarted on the same port"
    restarted = time.monotonic()
    wait_for_state(page, "live", "pusher", timeout_s=45)
    back_at = line_count(page)
    print(f"soketi restarted: live again after {time.monotonic() - restarted:.1f} s at line {back_at}")
    assert back_at < total, "back to live while the run still runs"
    print("indicator:", page.evaluate("window.connectionLog"))
    wait_for_lines(page, total, timeout_s=90)
    page.wait_for_selector("#run-status[data-status='succeeded']", timeout=60_000)
    assert page.evaluate("relaycastView.seqs()") == list(range(1, total + 1)), "nothing missing or doubled"
    assert page.get_attribute("#log", "data-line-count") == str(total)
    assert rendered_in_full(page) == list(range(1, total + 1))
    view.check_clean()


@pytest.mark.timeout(180)
def test_pusher_disabled_mid_run_switches_the_page_to_polling_and_the_run_completes_on_screen(
        make_stack: Callable[..., Stack], viewer: Callable[..., Viewer], soketi: Soketi) -> None:
    stack = make_stack(soketi, RELAYCAST_BROADCASTERS="pusher,log")
    view = viewer(stack.api)
    page = view.first
    run_id = _run_id("disable")
    total = 1500
    view.open_run(page, run_id)
    wait_for_state(page, "live", "pusher")
    stack.start_run("burst", run_id, lines=total, delay_ms=10)
    wait_for_lines(page, 200)

    result = relaycast_cli("disable", "pusher", "--reason", "test: operator", env=stack.env)
    assert result.returncode == 0, result.stderr
    disabled = time.monotonic()
    wait_for_state(page, "polling", "polling", timeout_s=15)
    switched_s = time.monotonic() - disabled
    changes = provider_changes(page)
    print(f"\npusher disabled: the page polls after {switched_s:.2f} s; provider-changed: {changes}")
    assert [(e["from"], e["to"]) for e in changes] == [("pusher", "log")], (
        "the switch reached the page once, as a provider-changed event")
    at_switch = line_count(page)
    assert at_switch < total, "switched while the run still runs"
    # The runs list, opened now, cannot hear admin events either: it re-reads GET /runs.
    runs_page = view.page()
    runs_page.goto(f"{stack.api.url}/ui/")
    wait_for_state(runs_page, "polling", "polling")
    runs_page.wait_for_selector(f"#runs-body tr[data-run-id='{run_id}'][data-status='running']")
    note_row_times(runs_page)
    runs_page.wait_for_selector(".bc[data-name='pusher'][data-state='disabled']")
    assert "test: operator" in (runs_page.text_content(".bc[data-name='pusher'] .bc-reason") or "")

    wait_for_lines(page, total, timeout_s=90)
    page.wait_for_selector("#run-status[data-status='succeeded']", timeout=60_000)
    assert page.evaluate("relaycastView.seqs()") == list(range(1, total + 1))
    assert page.is_visible("#connection[data-state='polling'][data-transport='polling']")
    runs_page.wait_for_selector(f"#runs-body tr[data-run-id='{run_id}'][data-status='succeeded']")
    ended = runs_page.evaluate("window.rowTimes")[f"{run_id} succeeded"]
    late_ms = ended - finished_at(stack, run_id)[1]
    print(f"runs list by polling: 'succeeded' {late_ms} ms after the end")
    assert late_ms <= 2000
    screenshot(runs_page, "runs-list-pusher-disabled.png")
    view.check_clean()


def provider_changes(page: Page) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = page.evaluate("relaycastView.adminEvents()")
    return [e for e in events if e["type"] == "provider-changed"]


@pytest.mark.timeout(180)
def test_pusher_disabled_while_nothing_is_sent_reaches_the_page_once_as_pusher_to_log(
        make_stack: Callable[..., Stack], viewer: Callable[..., Viewer], soketi: Soketi) -> None:
    """No worker sends after the disable, so no worker announces it: the page learns it from
    /ui/config, which names where traffic goes next (log), not the broadcaster it left. The
    run that follows (the workers' own announcement, later configs) adds no second event."""
    stack = make_stack(soketi, RELAYCAST_BROADCASTERS="pusher,log")
    view = viewer(stack.api)
    page = view.first
    run_id = _run_id("idle")
    view.open_run(page, run_id)
    wait_for_state(page, "live", "pusher")
    result = relaycast_cli("disable", "pusher", "--reason", "test: idle", env=stack.env)
    assert result.returncode == 0, result.stderr
    wait_for_state(page, "polling", "polling", timeout_s=15)
    page.wait_for_function("relaycastView.adminEvents().length > 0", timeout=10_000)
    changes = provider_changes(page)
    assert [(e["from"], e["to"], e["source"]) for e in changes] == [("pusher", "log", "config")]
    assert changes[0]["reason"] == "pusher disabled: test: idle"

    stack.start_run("burst", run_id, lines=300, delay_ms=5)
    page.wait_for_selector("#run-status[data-status='succeeded']", timeout=60_000)
    wait_for_lines(page, 300)
    refresh_ms = page.evaluate("fetch('/ui/config').then((r) => r.json())")["config_refresh_ms"]
    page.wait_for_timeout(2 * refresh_ms + 500)  # two more readings of /ui/config
    assert [(e["from"], e["to"]) for e in provider_changes(page)] == [("pusher", "log")]
    view.check_clean()


@pytest.mark.timeout(180)
def test_the_runs_list_shows_a_run_within_2s_of_its_start_and_its_end_within_2s(
        make_stack: Callable[..., Stack], viewer: Callable[..., Viewer], soketi: Soketi) -> None:
    stack = make_stack(soketi)
    view = viewer(stack.api)
    page = view.first
    wait_for_state(page, "live", "pusher")
    note_row_times(page)
    run_id = _run_id("listed")
    stack.start_run("burst", run_id, lines=500, delay_ms=8)
    page.wait_for_selector(f"#runs-body tr[data-run-id='{run_id}'][data-status='succeeded']",
                           timeout=60_000)
    times: dict[str, int] = page.evaluate("window.rowTimes")
    run_started, run_finished = finished_at(stack, run_id)
    shown = min(at for key, at in times.items() if key.startswith(f"{run_id} "))
    ended = times[f"{run_id} succeeded"]
    print(f"\nruns list: row shown {shown - run_started} ms after the start, "
          f"'succeeded' {ended - run_finished} ms after the end")
    assert shown - run_started <= 2000
    assert ended - run_finished <= 2000

    # A failed run too, then a fresh look for the screenshot (panel, chart).
    failed_id = _run_id("failing")
    stack.start_run("failing", failed_id, fail_at=3, steps=5)
    page.wait_for_selector(f"#runs-body tr[data-run-id='{failed_id}'][data-status='failed']",
                           timeout=60_000)
    page.wait_for_function(
        f"() => document.querySelector(\"tr[data-run-id='{run_id}'] .lines\").textContent === '500'",
        timeout=10_000)
    page.reload()
    page.wait_for_selector(".bc[data-name='pusher'][data-active='true']", timeout=10_000)
    assert page.text_content("#active-broadcaster") == "pusher"
    page.wait_for_timeout(300)
    screenshot(page, "runs-list.png")
    view.check_clean()


@pytest.mark.timeout(240)
def test_a_100000_line_stored_run_is_interactive_and_held_whole(
        make_stack: Callable[..., Stack], viewer: Callable[..., Viewer], soketi: Soketi) -> None:
    stack = make_stack(soketi, worker=False)
    run_id = _run_id("huge")
    total = 100_000
    levels = ("info", "info", "debug", "info", "warning", "info", "info", "debug", "info", "info")
    store = stack.store()
    try:
        store.start_run(run_id, "etl", {"rows": total}, at_ms=1_700_000_000_000)
        for start in range(1, total + 1, 10_000):
            seed_lines(store, [{"run_id": run_id, "seq": i, "ts": 1_700_000_000_000 + i,
                                "level": "error" if i % 1000 == 0 else levels[i % 10],
                                "message": f"record {i} processed", "data": {"i": i, "ok": True}}
                               for i in range(start, min(start + 10_000, total + 1))])
        store.finish_run(run_id, RunStatus.SUCCEEDED, at_ms=1_700_000_000_000 + total)
    finally:
        store.close()
    view = viewer(stack.api)
    page = view.first

    # Interactive: lines on screen, and a user's scroll answered with the rows of the new place.
    started = time.monotonic()
    page.goto(f"{stack.api.url}/ui/runs/{run_id}", wait_until="commit")
    page.wait_for_selector("#log .line", timeout=30_000)
    page.focus("#log")
    page.keyboard.press("Home")  # to the first line: following stops, the top is rendered
    page.wait_for_function("() => relaycastView.rendered().includes(1)", timeout=30_000)
    interactive_s = time.monotonic() - started
    wait_for_lines(page, total, timeout_s=120)
    all_lines_s = time.monotonic() - started
    # How soon is a figure (README), not a bound: a loaded machine may take longer.
    print(f"\n100,000-line run: interactive after {interactive_s:.2f} s, "
          f"all lines held after {all_lines_s:.2f} s")

    assert page.evaluate("relaycastView.seqs()") == list(range(1, total + 1))
    assert page.get_attribute("#log", "data-last-seq") == str(total)
    # Smooth at any depth: the middle and the end render only the rows in sight.
    depths: dict[str, Any] = page.evaluate("""() => {
        const log = document.querySelector('#log');
        const out = {};
        for (const seq of [50000, 99990]) {
            log.scrollTop = (seq - 1) * 22;
            const t = performance.now();
            relaycastView.renderNow();
            out[seq] = {ms: performance.now() - t, rows: relaycastView.rendered()};
        }
        return out;
    }""")
    for seq, depth in depths.items():
        assert int(seq) in depth["rows"]
        assert len(depth["rows"]) < 80
    print("render at depth (ms): " + ", ".join(f"{k}: {v['ms']:.1f}" for k, v in depths.items()))
    # Search and level filter over all 100,000 lines.
    page.fill("#search", "record 77777 ")
    page.wait_for_function("() => document.querySelector('#match-count').textContent === '1 shown'")
    assert page.evaluate("relaycastView.rendered()") == [77777]
    page.fill("#search", "")
    for level in ("debug", "info", "warning"):
        page.click(f".levels button[data-level='{level}']")
    page.wait_for_function("() => document.querySelector('#match-count').textContent === '100 shown'")
    assert {page.get_attribute(f"#log .line >> nth={i}", "data-level") for i in range(5)} == {"error"}
    screenshot(page, "run-view-100k.png")
    view.check_clean()


@pytest.mark.timeout(180)
def test_1000_lines_a_second_keep_the_tab_drawing_and_follow_pauses_on_scroll_up(
        make_stack: Callable[..., Stack], viewer: Callable[..., Viewer], soketi: Soketi) -> None:
    stack = make_stack(soketi)
    view = viewer(stack.api)
    page = view.first
    run_id = _run_id("fast")
    total = 40_000  # emitted as fast as the workflow can: the pipeline sets the pace
    view.open_run(page, run_id)
    wait_for_state(page, "live", "pusher")
    page.evaluate("""() => {
        window.frames_ = {maxGap: 0, count: 0, longest: 0, firstLineAt: 0, lastLineAt: 0};
        const log = document.querySelector('#log');
        new MutationObserver(() => {
            const held = Number(log.dataset.lineCount);
            if (held > 0 && !window.frames_.firstLineAt) window.frames_.firstLineAt = performance.now();
            window.frames_.lastLineAt = performance.now();
        }).observe(log, {attributes: true, attributeFilter: ['data-line-count']});
        let last = performance.now();
        const tick = (now) => {
            window.frames_.maxGap = Math.max(window.frames_.maxGap, now - last);
            window.frames_.count += 1;
            last = now;
            requestAnimationFrame(tick);
        };
        requestAnimationFrame(tick);
        new PerformanceObserver((list) => {
            for (const entry of list.getEntries()) {
                window.frames_.longest = Math.max(window.frames_.longest, entry.duration);
            }
        }).observe({type: 'longtask', buffered: false});
    }""")
    stack.start_run("burst", run_id, lines=total)
    wait_for_lines(page, 2000)
    # Scroll up mid-run: following pauses and the view stays where the user put it.
    page.hover("#log")
    page.mouse.wheel(0, -2000)
    page.wait_for_function("() => relaycastView.follow() === false")
    page.wait_for_timeout(500)  # a wheel scroll may be animated
    top = page.evaluate("document.querySelector('#log').scrollTop")
    held = line_count(page)
    wait_for_lines(page, held + 500)
    assert page.evaluate("document.querySelector('#log').scrollTop") == top
    assert page.get_attribute("#follow", "aria-pressed") == "false"
    assert "new" in (page.text_content("#follow") or "")
    wait_for_lines(page, total)
    frames = page.evaluate("window.frames_")
    elapsed_s = (frames["lastLineAt"] - frames["firstLineAt"]) / 1000
    rate = total / elapsed_s
    print(f"\n{total} lines arrived in {elapsed_s:.1f} s ({rate:.0f} lines/s in the page): "
          f"{frames['count']} frames, longest gap between frames {frames['maxGap']:.0f} ms, "
          f"longest task {frames['longest']:.0f} ms, "
          f"renders {page.evaluate('relaycastView.stats().renders')}")
    assert frames["count"] > 0, "the page kept drawing frames while lines arrived"
    page.click("#follow")
    page.wait_for_selector("#follow[aria-pressed='true']")
    assert page.evaluate("""() => { const l = document.querySelector('#log');
        return l.scrollTop + l.clientHeight >= l.scrollHeight - 2; }"""), "back at the newest line"
    assert page.evaluate("relaycastView.seqs()") == list(range(1, total + 1))
    view.check_clean()


def test_sign_in_in_the_browser_and_html_in_a_line_renders_as_text(
        make_stack: Callable[..., Stack], viewer: Callable[..., Viewer]) -> None:
    stack = make_stack(None, worker=False)
    run_id = _run_id("html")
    hostile = ["<script>window.pwned = 1</script>", '<img src=x onerror="window.pwned = 2">',
               "<b>bold</b> & <i>italic</i>"]
    store = stack.store()
    try:
        seed_lines(store, [{"run_id": run_id, "seq": i, "ts": 1_700_000_000_000 + i,
                            "level": "warning", "message": message, "data": {"html": message}}
                           for i, message in enumerate(hostile, start=1)])
    finally:
        store.close()
    view = viewer(stack.api, signed_in=False)
    page = view.first
    answer = page.goto(f"{stack.api.url}/ui/")
    assert answer is not None
    assert answer.status == 401
    assert "Sign in" in (page.text_content("h1") or "")
    answer = page.goto(f"{stack.api.url}/ui/runs/{run_id}?token=wrong-{TOKEN}")
    assert answer is not None
    assert answer.status == 401
    assert view.context.cookies() == []

    answer = page.goto(f"{stack.api.url}/ui/runs/{run_id}?token={TOKEN}")
    assert answer is not None
    assert answer.status == 200
    assert page.url == f"{stack.api.url}/ui/runs/{run_id}", "the token is gone from the address bar"
    (cookie,) = view.context.cookies()
    assert cookie["name"] == "relaycast_session"
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert TOKEN not in cookie["value"]
    assert page.evaluate("document.cookie") == "", "scripts cannot read the session"

    wait_for_lines(page, 3, timeout_s=20)
    page.evaluate("relaycastView.renderNow()")
    messages = page.eval_on_selector_all("#log .line .msg", "rows => rows.map(r => r.textContent)")
    assert messages == hostile
    assert page.evaluate("document.querySelectorAll('#log img, #log script, #log b, #log i').length") == 0
    page.click("#log .line[data-seq='2']")
    assert page.text_content("#detail-message") == hostile[1]
    assert page.evaluate("document.querySelectorAll('#detail img, #detail script').length") == 0
    assert page.evaluate("window.pwned") is None
    # The cookie authorises the page's own calls: its status and history answered.
    assert page.get_attribute("#log", "data-line-count") == "3"
    assert page.is_visible("#connection[data-transport='polling']")
    view.check_clean()


def test_every_stored_level_keeps_its_own_label_count_and_filter(
        make_stack: Callable[..., Stack], viewer: Callable[..., Viewer]) -> None:
    """The five levels relaycast stores (``critical`` included: ``log.critical``, logging's
    CRITICAL and ``fatal`` map to it) each show as themselves, are counted, and filter."""
    stack = make_stack(None, worker=False)
    run_id = _run_id("levels")
    levels = ["debug", "info", "warning", "error", "critical", "critical"]
    store = stack.store()
    try:
        seed_lines(store, [{"run_id": run_id, "seq": i, "ts": 1_700_000_000_000 + i,
                            "level": level, "message": f"a {level} line", "data": {}}
                           for i, level in enumerate(levels, start=1)])
    finally:
        store.close()
    view = viewer(stack.api)
    page = view.first
    view.open_run(page, run_id)
    wait_for_lines(page, len(levels), timeout_s=20)
    page.evaluate("relaycastView.renderNow()")
    assert page.eval_on_selector_all("#log .line", "rows => rows.map(r => r.dataset.level)") == levels
    assert page.eval_on_selector_all("#log .line .lvl", "els => els.map(e => e.textContent)") == levels
    counts = {level: page.text_content(f".levels button[data-level='{level}'] .count")
              for level in dict.fromkeys(levels)}
    assert counts == {"debug": "1", "info": "1", "warning": "1", "error": "1", "critical": "2"}
    screenshot(page, "run-view-levels.png")
    page.click(".levels button[data-level='critical']")
    page.wait_for_function("() => document.querySelector('#match-count').textContent === '4 shown'")
    page.evaluate("relaycastView.renderNow()")
    assert page.eval_on_selector_all("#log .line", "rows => rows.map(r => r.dataset.level)") == levels[:4]
    view.check_clean()


# Socket.IO (relaycast socketio) ---------------------------------------------------------------


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


@pytest.mark.timeout(180)
def test_with_socketio_active_the_viewer_shows_a_run_live_and_complete(
        make_stack: Callable[..., Stack], viewer: Callable[..., Viewer], broker: str,
        closing: list[Any]) -> None:
    stack, _ = socketio_stack(make_stack, broker, closing)
    view = viewer(stack.api)
    page = view.first
    run_id = _run_id("sio")
    view.open_run(page, run_id)
    wait_for_state(page, "live", "socketio")
    stack.start_run("burst", run_id, lines=1500, delay_ms=2)
    wait_for_lines(page, 1500)
    page.wait_for_selector("#run-status[data-status='succeeded']", timeout=60_000)
    assert page.evaluate("relaycastView.seqs()") == list(range(1, 1501))
    stats = page.evaluate("relaycastView.stats()")
    print(f"\n1,500-line run watched over Socket.IO: {stats}")
    assert stats["live"] >= 750, "most lines arrived through Socket.IO, not history"
    assert page.is_visible("#connection[data-state='live'][data-transport='socketio']")
    assert rendered_in_full(page) == list(range(1, 1501))
    view.check_clean()


@pytest.mark.timeout(240)
def test_the_socketio_server_restarted_mid_run_the_page_polls_then_goes_live_again(
        make_stack: Callable[..., Stack], viewer: Callable[..., Viewer], broker: str,
        closing: list[Any]) -> None:
    stack, server = socketio_stack(make_stack, broker, closing)
    view = viewer(stack.api)
    page = view.first
    run_id = _run_id("sio-restart")
    total = 1500
    view.open_run(page, run_id)
    wait_for_state(page, "live", "socketio")
    stack.start_run("burst", run_id, lines=total, delay_ms=20)  # about 35 s of lines
    wait_for_lines(page, 150)
    server.stop()
    wait_for_state(page, "polling", "polling", timeout_s=15)
    before = line_count(page)
    wait_for_lines(page, before + 100, timeout_s=20)
    print(f"\nsocketio stopped: lines kept arriving by polling ({before} -> {line_count(page)})")
    server.start()
    wait_for_state(page, "live", "socketio", timeout_s=45)
    assert line_count(page) < total, "back to live while the run still runs"
    wait_for_lines(page, total, timeout_s=90)
    page.wait_for_selector("#run-status[data-status='succeeded']", timeout=60_000)
    assert page.evaluate("relaycastView.seqs()") == list(range(1, total + 1)), "nothing missing"
    assert rendered_in_full(page) == list(range(1, total + 1))
    view.check_clean()
