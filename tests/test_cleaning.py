"""Cleaning what workflow code hands the emitter: storable and sendable, losing nothing."""

from __future__ import annotations

import enum
import json
import logging
import math
import os
from typing import Any

import pytest

from workflows.cleaning import (
    Cleaning,
    clean_data,
    clean_text,
    normalise_level,
    numeric_level,
    safe_str,
)


class _Opaque:
    def __str__(self) -> str:
        return "<opaque thing>"


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no text form")


class _Colour(enum.IntEnum):
    RED = 3


def test_a_file_name_that_is_not_utf8_keeps_the_byte_it_stood_for() -> None:
    report = Cleaning()
    name = os.fsdecode(b"/data/report-\xff.csv")
    cleaned = clean_text(name, report)
    assert cleaned == "/data/report-\\xff.csv"
    assert cleaned.encode("utf-8")
    assert report.text == 1


def test_nul_and_other_lone_surrogates_become_the_replacement_character() -> None:
    assert clean_text("binary\x00output") == "binary\ufffdoutput"
    assert clean_text("half a pair \ud800!") == "half a pair \ufffd!"
    plain = "nothing to clean ✓ é 🚀"
    assert clean_text(plain) is plain, "clean text is not copied"


def test_data_is_made_of_plain_json_values() -> None:
    report = Cleaning()
    circular: list[Any] = []
    circular.append(circular)
    data = {"tuple": (1, 2), (1, 2): "pair", "set": {"b", "a"}, "ratio": math.nan,
            "limit": -math.inf, "colour": _Colour.RED, "thing": _Opaque(),
            "path": os.fsdecode(b"report-\xfe.csv"), "nul": "a\x00b", "circular": circular,
            "nested": {"deeper": [{"x": math.inf}]}}
    clean = clean_data(data, report)
    assert clean == {"tuple": [1, 2], "(1, 2)": "pair", "set": ["a", "b"], "ratio": "nan",
                     "limit": "-inf", "colour": 3, "thing": "<opaque thing>",
                     "path": "report-\\xfe.csv", "nul": "a\ufffdb",
                     "circular": ["<circular reference>"], "nested": {"deeper": [{"x": "inf"}]}}
    assert json.loads(json.dumps(clean, allow_nan=False)) == clean
    assert (report.text, report.lost) == (2, 0)


def test_a_flat_dict_of_plain_values_is_returned_without_a_copy() -> None:
    data = {"rows": 1200, "ok": True, "name": "orders.csv", "ratio": 0.5, "none": None}
    assert clean_data(data) is data


def test_what_cannot_be_made_text_is_a_marker_and_counted() -> None:
    report = Cleaning()
    assert clean_data({"value": _Unprintable(), "fine": 1}, report) == {
        "value": "<unprintable _Unprintable>", "fine": 1}
    assert report.lost == 1
    assert safe_str(_Unprintable()) == "<unprintable _Unprintable>"


def test_data_that_is_not_a_dict_is_kept_under_value() -> None:
    assert clean_data([1, "two"]) == {"value": [1, "two"]}
    assert clean_data("text") == {"value": "text"}
    assert clean_data(None) == {}
    assert clean_data({}) == {}


def test_very_deep_data_is_cut_with_a_marker_rather_than_crashing() -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(5000):
        node["child"] = {}
        node = node["child"]
    clean = clean_data(deep)
    text = json.dumps(clean)
    assert "nested deeper than 64 levels" in text


@pytest.mark.parametrize(("given", "stored"), [
    ("debug", "debug"), ("INFO", "info"), ("Warning", "warning"), ("warn", "warning"),
    ("error", "error"), ("exception", "error"), ("CRITICAL", "critical"), ("fatal", "critical"),
    (logging.CRITICAL, "critical"), (logging.WARNING, "warning"), (25, "info"), (5, "debug"),
])
def test_standard_levels_and_their_aliases_map(given: object, stored: str) -> None:
    report = Cleaning()
    assert normalise_level(given, report) == (stored, None)
    assert report.unknown_levels == 0


def test_an_unknown_level_is_info_keeping_the_level_given() -> None:
    report = Cleaning()
    assert normalise_level("trace", report) == ("info", "trace")
    assert normalise_level(None, report) == ("info", "None")
    assert report.unknown_levels == 2
    assert report.unknown_level_names == {"trace", "None"}
    # Where the level given is kept (data["relaycast_level"]): test_writer.py, on stored lines.


def test_numeric_levels_map_to_the_nearest_level_at_or_below() -> None:
    assert [numeric_level(n) for n in (60, 50, 45, 40, 35, 30, 25, 20, 15, 10, 0)] == [
        "critical", "critical", "error", "error", "warning", "warning", "info", "info", "debug",
        "debug", "debug"]
