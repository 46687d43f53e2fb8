"""The viewer over Socket.IO (``relaycast socketio``) in Chromium. The harness is
``tests/support/viewer.py``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from support.viewer import (
    Stack,
    Viewer,
    line_count,
    new_run_id,
    rendered_in_full,
    socketio_stack,
    wait_for_lines,
    wait_for_state,
)

if TYPE_CHECKING:
    pass


@pytest.mark.timeout(180)
def test_with_socketio_active_the_viewer_shows_a_run_live_and_complete(
        make_stack: Callable[..., Stack], viewer: Callable[..., Viewer], broker: str,
        closing: list[Any]) -> None:
    stack, _ = socketio_stack(make_stack, broker, closing)
    view = viewer(stack.api)
    page = view.first
    run_id = new_run_id("sio")
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
    run_id = new_run_id("sio-restart")
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
