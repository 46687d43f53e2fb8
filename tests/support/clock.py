"""A clock a test moves by hand, for the ``clock=`` / ``monotonic=`` parameters of the
classes that tell time (manager, shared state, occupancy, the in-memory backend)."""

from __future__ import annotations

#: 2023-11-14 22:13:20 UTC: a whole number of seconds, so sums of halves and quarters stay exact.
DEFAULT_START = 1_700_000_000.0


class FakeClock:
    """Callable like :func:`time.time`; starts at ``start`` and moves only when
    :meth:`advance` is called."""

    def __init__(self, start: float = DEFAULT_START) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
