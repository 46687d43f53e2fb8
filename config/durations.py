"""Human durations such as ``90s``, ``15m``, ``1h30m`` or ``2d``."""

from __future__ import annotations

import re

_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
#: The longest duration accepted anywhere: a year and a day.
MAX_DURATION_S = 366 * 86400.0


def parse_duration_s(text: str, *, max_s: float = MAX_DURATION_S) -> float:
    """Return the number of seconds in ``text``; a bare number means seconds; at most ``max_s``.

    >>> parse_duration_s("1h30m")
    5400.0
    """
    cleaned = text.strip().lower()
    if not cleaned:
        raise ValueError("empty duration")
    try:
        seconds = float(cleaned)
    except ValueError:
        pos = 0
        seconds = 0.0
        for match in _PART.finditer(cleaned):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNIT_S[match.group(2)]
            pos = match.end()
        if pos != len(cleaned) or pos == 0:
            raise ValueError(
                f"not a duration: {text!r} (use e.g. 90s, 15m, 1h30m, 2d)"
            ) from None
    if not seconds > 0:  # also refuses NaN
        raise ValueError(f"duration must be positive: {text!r}")
    if seconds > max_s:
        raise ValueError(f"duration too long: {text!r} (at most {format_duration_s(max_s)})")
    return seconds


def format_duration_s(seconds: float) -> str:
    """Short form for people: ``3h12m``, ``45s``."""
    total = round(seconds)
    if total < 60:
        return f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s" if secs else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours}h" if hours else f"{days}d"
