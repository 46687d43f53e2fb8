"""The run view live in Chromium: a run watched from its start, joined halfway, with a lost
message or a truncated line, and through provider outages (soketi stopped, Pusher disabled).
The harness is ``tests/support/viewer.py``."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from support.servers import Soketi
from support.viewer import (
    Stack,
    Viewer,
    finished_at,
    line_count,
    new_run_id,
    note_row_times,
    own_soketi,
    provider_changes,
    rendered_in_full,
    screenshot,
    wait_for_lines,
    wait_for_state,
)
from support.workers import ForwardingProxy, relaycast_cli

if TYPE_CHECKING:
    pass


@pytest.mark.timeout(180)
def test_a_2000_line_run_watched_from_its_start_shows_every_line_once_in_order(
        make_stack: Callable[..., Stack], viewer: Callable[..., Viewer], soketi: Soketi) -> None:
    stack = make_stack(soketi)
    view = viewer(stack.api)
    page = view.first
    run_id = new_run_id("watch")
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
    run_id = new_run_id("halfway")
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
    run_id = new_run_id("lossy")
    total = 1201  # 1,200 lines and, in the middle (seq 601), one of 12,000 bytes: too large for Pusher
    view.open_run(page, run_id)
    wait_for_state(page, "live", "pusher")
    stack.start_run("burst", run_id, lines=1200, delay_ms=5, big_line_bytes=12_000)
    # First the big line arrives live, truncated (seq 601); only then is a publish lost, so
    # the two fills cannot merge into one however slow the machine (arranged: a gap fill
    # running while seq 601 is stored would bring it whole from history before it came live).
    wait_for_lines(page, 650)
    proxy.fail_next(200, "{}")  # the next publish never reaches soketi
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
    run_id = new_run_id("outage")
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
    run_id = new_run_id("disable")
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


@pytest.mark.timeout(180)
def test_pusher_disabled_while_nothing_is_sent_reaches_the_page_once_as_pusher_to_log(
        make_stack: Callable[..., Stack], viewer: Callable[..., Viewer], soketi: Soketi) -> None:
    """No worker sends after the disable, so no worker announces it: the page learns it from
    /ui/config, which names where traffic goes next (log), not the broadcaster it left. The
    run that follows (the workers' own announcement, later configs) adds no second event."""
    stack = make_stack(soketi, RELAYCAST_BROADCASTERS="pusher,log")
    view = viewer(stack.api)
    page = view.first
    run_id = new_run_id("idle")
    view.open_run(page, run_id)
    wait_for_state(page, "live", "pusher")
    result = relaycast_cli("disable", "pusher", "--reason", "test: idle", env=stack.env)
    assert result.returncode == 0, result.stderr
    wait_for_state(page, "polling", "polling", timeout_s=15)
    page.wait_for_function("relaycastView.adminEvents().length > 0", timeout=120_000)
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
