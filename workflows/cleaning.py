"""Making whatever workflow code hands the emitter storable and sendable, losing nothing.

Text: NUL characters (PostgreSQL text cannot hold them) become U+FFFD; a lone surrogate —
what ``os.fsdecode`` makes of a file name that is not UTF-8, e.g. ``report-\\udcff.csv`` —
becomes the escaped byte it stood for (``report-\\xff.csv``), since UTF-8 cannot encode it
and one such character must never stop a line, its flush or the history from going out.

Data: plain JSON values (str keys; str, int, bool, None, finite floats; lists; dicts).
Anything else becomes its ``str`` (tuples and sets become lists, non-string keys their
``str``, NaN and infinities their names, a reference cycle a marker); what cannot be made
text at all is replaced by a marker, and the line is kept.

Levels: ``debug``, ``info``, ``warning``, ``error``, ``critical``, in any case; the standard
aliases (``warn``, ``fatal``, ``exception``) and ``logging``'s numbers map to them. An
unknown level is stored as ``info`` with the level given kept in the data
(``relaycast_level``), and counted.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

LEVELS = ("debug", "info", "warning", "error", "critical")
_ALIASES = {"warn": "warning", "fatal": "critical", "exception": "error", "err": "error",
            "crit": "critical", "information": "info"}
#: Where an unknown level given by the workflow is kept.
ORIGINAL_LEVEL_KEY = "relaycast_level"
_MAX_DEPTH = 64
_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]+")
_SCALARS = (int, bool, type(None))


@dataclass
class Cleaning:
    """What cleaning had to change, for the emitter's counters."""

    #: Text with NUL characters or lone surrogates replaced.
    text: int = 0
    #: Values (or whole data) that could not be made text and were replaced by a marker.
    lost: int = 0
    #: Lines with a level relaycast does not know (stored as ``info``).
    unknown_levels: int = 0
    unknown_level_names: set[str] = field(default_factory=set)


def _escape_surrogates(match: re.Match[str]) -> str:
    run = match.group(0)
    try:  # surrogateescape: each stands for one byte that was not UTF-8
        return run.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return "\ufffd" * len(run)


def clean_text(text: str, report: Cleaning | None = None) -> str:
    """``text`` without NUL characters or lone surrogates (see the module docstring)."""
    if _BAD_TEXT.search(text) is None:
        return text
    if report is not None:
        report.text += 1
    return _LONE_SURROGATE.sub(_escape_surrogates, text.replace("\x00", "\ufffd"))


def safe_str(value: object, report: Cleaning | None = None) -> str:
    """``str(value)`` cleaned; a marker when ``__str__`` itself raises."""
    try:
        return clean_text(str(value), report)
    except Exception:  # noqa: BLE001 - a broken __str__ must not cost the line
        if report is not None:
            report.lost += 1
        return f"<unprintable {type(value).__name__}>"


def _plain(value: Any, report: Cleaning, path: set[int], depth: int) -> Any:
    kind = type(value)
    if kind is str:
        return clean_text(value, report)
    if kind in _SCALARS:
        return value
    if kind is float:
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Mapping | list | tuple | set | frozenset):
        if id(value) in path:
            return "<circular reference>"
        if depth >= _MAX_DEPTH:
            return f"<nested deeper than {_MAX_DEPTH} levels>"
        path.add(id(value))
        try:
            if isinstance(value, Mapping):
                return {(clean_text(k, report) if type(k) is str else safe_str(k, report)):
                        _plain(v, report, path, depth + 1) for k, v in value.items()}
            items = sorted(value, key=repr) if isinstance(value, set | frozenset) else value
            return [_plain(v, report, path, depth + 1) for v in items]
        finally:
            path.discard(id(value))
    # Subclasses of the plain types (IntEnum, StrEnum, numpy's float64...) as the plain type.
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return _plain(float(value), report, path, depth)
    if isinstance(value, str):
        return clean_text(str.__str__(value), report)
    return safe_str(value, report)


def clean_data(data: Any, report: Cleaning | None = None) -> dict[str, Any]:
    """``data`` as plain JSON values that every supported database stores (never raises).

    A flat dict of plain values — the usual ``log.info("...", rows=1200)`` — is returned
    as it is, without a copy; anything else is rebuilt. Data that is not a dict is kept
    under ``"value"``.
    """
    report = report if report is not None else Cleaning()
    if not data:
        return {}
    if type(data) is dict and all(
            type(k) is str and _BAD_TEXT.search(k) is None
            and (type(v) in _SCALARS or (type(v) is str and _BAD_TEXT.search(v) is None)
                 or (type(v) is float and math.isfinite(v)))
            for k, v in data.items()):
        return data
    try:
        plain = _plain(data, report, set(), 0)
    except Exception as exc:  # noqa: BLE001 - e.g. a mapping whose items() raises
        report.lost += 1
        return {"unserialisable": f"<{type(data).__name__}>",
                "error": clean_text(f"{type(exc).__name__}: {exc}"[:200])}
    return plain if isinstance(plain, dict) else {"value": plain}


def normalise_level(level: object, report: Cleaning | None = None) -> tuple[str, str | None]:
    """``(level, original)``: one of :data:`LEVELS`, and the level given when it was unknown."""
    if isinstance(level, str):
        name = level.strip().lower()
        if name in LEVELS:
            return name, None
        if name in _ALIASES:
            return _ALIASES[name], None
    elif isinstance(level, int) and not isinstance(level, bool):
        return numeric_level(level), None
    if report is not None:
        report.unknown_levels += 1
        report.unknown_level_names.add(safe_str(level)[:40])
    return "info", safe_str(level)[:40]


def numeric_level(levelno: int) -> str:
    """A ``logging`` level number as the nearest level at or below it."""
    if levelno >= logging.CRITICAL:
        return "critical"
    if levelno >= logging.ERROR:
        return "error"
    if levelno >= logging.WARNING:
        return "warning"
    if levelno >= logging.INFO:
        return "info"
    return "debug"
