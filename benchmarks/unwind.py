"""Signals unwind a benchmark run, and its cleanup runs to the end.

Both benchmarks start servers, processes, databases and temporary directories that must
not outlive them. :func:`cleanup_stack` gives the run an :class:`contextlib.ExitStack` for
those: while the run goes on, SIGINT, SIGTERM and SIGHUP raise :class:`Stop` (a
``KeyboardInterrupt``), so the stack unwinds as it does on Ctrl-C (SIGINT is handled
explicitly too: a shell starts background jobs with it ignored); while the stack's callbacks
run, SIGINT is ignored, so a second Ctrl-C cannot cut the cleanup short. The handlers that
were there before are put back at the end.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType

UNWIND_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stop(KeyboardInterrupt):
    """One of :data:`UNWIND_SIGNALS` arrived: unwind so that everything is cleaned up."""


def _raise_stop(signum: int, _frame: FrameType | None) -> None:
    raise Stop(f"signal {signum}")


@contextlib.contextmanager
def cleanup_stack() -> Iterator[contextlib.ExitStack]:
    """An ExitStack for the run's resources; signals unwind it, a second Ctrl-C waits."""
    previous = {}
    for sig in UNWIND_SIGNALS:
        with contextlib.suppress(ValueError):  # not the main thread
            previous[sig] = signal.signal(sig, _raise_stop)
    try:
        with contextlib.ExitStack() as stack:
            try:
                yield stack
            finally:
                if signal.SIGINT in previous:
                    signal.signal(signal.SIGINT, signal.SIG_IGN)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
