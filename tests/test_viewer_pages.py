"""The viewer's pages in Chromium: the runs list, a 100,000-line run, 1,000 lines/s, sign-in and
escaping, levels. The harness is ``tests/support/viewer.py``."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from support.seeding import seed_lines
from support.servers import Soketi
from support.viewer import (
    TOKEN,
    Stack,
    Viewer,
    finished_at,
    line_count,
    new_run_id,
    note_row_times,
    screenshot,
    wait_for_lines,
    wait_for_state,
)

from workflows.models import RunStatus

if TYPE_CHECKING:
    pass


@pytest.mark.timeout(180)
def test_the_runs_list_shows_a_run_while_it_runs_and_its_end_live(
        make_stack: Callable[..., Stack], viewer: Callable[..., Viewer], soketi: Soketi) -> None:
    stack = make_stack(soketi)
    view = viewer(stack.api)
    page = view.first
    wait_for_state(page, "live", "pusher")
    note_row_times(page)
    run_id = new_run_id("listed")
    stack.start_run("burst", run_id, lines=500, delay_ms=8)
    page.wait_for_selector(f"#runs-body tr[data-run-id='{run_id}'][data-status='succeeded']",
                           timeout=60_000)
    times: dict[str, int] = page.evaluate("window.rowTimes")
    run_started, run_finished = finished_at(stack, run_id)
    shown = min(at for key, at in times.items() if key.startswith(f"{run_id} "))
    ended = times[f"{run_id} succeeded"]
    # How soon is a figure, not a bound: the row comes from the live `started` event while
    # the run still runs, and its end from the live `finished` event.
    print(f"\nruns list: row shown {shown - run_started} ms after the start, "
          f"'succeeded' {ended - run_finished} ms after the end")
    assert shown < run_finished, "the row appeared while the run was still running"
    assert ended >= run_finished

    # A failed run too, then a fresh look for the screenshot (panel, chart).
    failed_id = new_run_id("failing")
    stack.start_run("failing", failed_id, fail_at=3, steps=5)
    page.wait_for_selector(f"#runs-body tr[data-run-id='{failed_id}'][data-status='failed']",
                           timeout=60_000)
    page.wait_for_function(
        f"() => document.querySelector(\"tr[data-run-id='{run_id}'] .lines\").textContent === '500'",
        timeout=120_000)
    page.reload()
    page.wait_for_selector(".bc[data-name='pusher'][data-active='true']", timeout=120_000)
    assert page.text_content("#active-broadcaster") == "pusher"
    page.wait_for_timeout(300)
    screenshot(page, "runs-list.png")
    view.check_clean()


@pytest.mark.timeout(240)
def test_a_100000_line_stored_run_is_interactive_and_held_whole(
        make_stack: Callable[..., Stack], viewer: Callable[..., Viewer], soketi: Soketi) -> None:
    stack = make_stack(soketi, worker=False)
    run_id = new_run_id("huge")
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
    page.wait_for_selector("#log .line", timeout=120_000)
    page.focus("#log")
    page.keyboard.press("Home")  # to the first line: following stops, the top is rendered
    page.wait_for_function("() => relaycastView.rendered().includes(1)", timeout=120_000)
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


@pytest.mark.timeout(400)
def test_1000_lines_a_second_keep_the_tab_drawing_and_follow_pauses_on_scroll_up(
        make_stack: Callable[..., Stack], viewer: Callable[..., Viewer], soketi: Soketi) -> None:
    stack = make_stack(soketi)
    view = viewer(stack.api)
    page = view.first
    run_id = new_run_id("fast")
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
    run_id = new_run_id("html")
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
    run_id = new_run_id("levels")
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
