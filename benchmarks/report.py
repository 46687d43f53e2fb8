"""Figures of a phase, the targets, and the printed results table."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

#: Samples in the first part of a window are start-up (imports, caches, pools filling);
#: the memory slope is fitted on the rest.
WARMUP_FRACTION = 0.2
#: "Memory flat": at most this growth, fitted after warm-up, summed over the worker's processes.
FLAT_MIB_PER_MIN = 1.0

TARGET_THROUGHPUT_RATIO = 50.0
TARGET_EMIT_RATIO = 1 / 100
TARGET_MESSAGES_RATIO = 1 / 20
#: With the ordering gate in the path (issue "runs across processes"): p99 at 1,000 lines/s.
TARGET_P99_MS = 100.0
#: Provider messages on an unwatched run's log channel, per 1,000 lines (occupancy gating).
TARGET_UNWATCHED_MESSAGES = 0

_TASK_DONE = re.compile(r"Task (\S+)\[[^\]]+\] succeeded in ([0-9.eE+-]+)s")


def percentile(ordered: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile of an already sorted sequence (None when empty)."""
    if not ordered:
        return None
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return float(ordered[min(len(ordered), rank) - 1])


def fit_slope(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of ``(x, y)`` points (None with fewer than 3)."""
    if len(points) < 3:
        return None
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((x - mean_x) ** 2 for x, _ in points)
    if var == 0:
        return None
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / var


def memory_figures(series: Sequence[tuple[float, int, int]]) -> dict[str, Any]:
    """Start/end/max of the summed RSS (MiB), the largest process, and the slope (MiB/min)
    fitted after the first :data:`WARMUP_FRACTION` of the window (and over all of it)."""
    if not series:
        return {}
    span = series[-1][0]
    settled = [(t, kb / 1024) for t, kb, _ in series if t >= WARMUP_FRACTION * span]
    whole = [(t, kb / 1024) for t, kb, _ in series]
    slope = fit_slope(settled)
    slope_all = fit_slope(whole)
    return {
        "samples": len(series), "window_s": span,
        "start_mib": series[0][1] / 1024, "end_mib": series[-1][1] / 1024,
        "max_mib": max(kb for _, kb, _ in series) / 1024,
        "largest_process_max_mib": max(big for _, _, big in series) / 1024,
        "slope_mib_per_min": slope * 60 if slope is not None else None,
        "slope_all_mib_per_min": slope_all * 60 if slope_all is not None else None,
    }


def task_figures(log_text: str) -> dict[str, Any]:
    """Tasks the worker finished (``succeeded in Xs`` lines) and its warnings/errors."""
    runtimes: dict[str, list[float]] = {}
    for match in _TASK_DONE.finditer(log_text):
        runtimes.setdefault(match.group(1), []).append(float(match.group(2)) * 1000)
    out: dict[str, Any] = {}
    for name, values in runtimes.items():
        values.sort()
        out[name] = {"count": len(values), "mean_ms": sum(values) / len(values),
                     "p50_ms": percentile(values, 50), "p99_ms": percentile(values, 99),
                     "max_ms": values[-1]}
    problems = [line for line in log_text.splitlines()
                if "WARNING/" in line or "ERROR/" in line or "CRITICAL/" in line]
    return {"tasks": out, "warnings_or_errors": len(problems), "first_problems": problems[:5]}


def line_figures(lines: Sequence[tuple[int, int, int]], messages: Sequence[int], expected: int,
                 first_emit_ns: int, last_emit_ns: int, cutoff_ns: int) -> dict[str, Any]:
    """Delivery, throughput and latency of one phase from what the subscriber received by
    ``cutoff_ns`` (repeats count once, at their first arrival)."""
    first_seen: dict[int, tuple[int, int]] = {}
    received = 0
    for i, t, recv in lines:
        if recv > cutoff_ns:
            continue
        received += 1
        if i not in first_seen:
            first_seen[i] = (t, recv)
    delivered = len(first_seen)
    latencies = sorted((recv - t) / 1e6 for t, recv in first_seen.values())
    last_recv = max((recv for _, recv in first_seen.values()), default=0)
    span_s = (last_recv - first_emit_ns) / 1e9 if delivered else 0.0
    out: dict[str, Any] = {
        "expected": expected, "delivered": delivered, "repeats": received - delivered,
        "undelivered": expected - delivered,
        "messages": sum(1 for recv in messages if recv <= cutoff_ns),
        "throughput_lps": delivered / span_s if span_s > 0 else None,
        "first_emit_to_last_line_s": span_s,
        "tail_after_last_emit_s": (last_recv - last_emit_ns) / 1e9 if delivered else None,
        "latency_ms": {
            "p50": percentile(latencies, 50), "p90": percentile(latencies, 90),
            "p99": percentile(latencies, 99), "max": latencies[-1] if latencies else None,
            "mean": sum(latencies) / len(latencies) if latencies else None,
        },
    }
    # Undelivered lines have an unknown latency above (cutoff - their emit time): with them
    # counted as "infinite", p99 over every emitted line is only known if ≥ 99% arrived.
    out["latency_ms"]["p99_all_emitted"] = (
        percentile(latencies + [math.inf] * (expected - delivered), 99)
        if expected >= delivered else None)
    out["messages_per_1000_lines"] = out["messages"] / delivered * 1000 if delivered else None
    return out


# ---------------------------------------------------------------------------------- targets

def _get(data: dict[str, Any], *path: str) -> Any:
    value: Any = data
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0 or math.isinf(a) or math.isinf(b):
        return None
    return a / b


def evaluate_targets(results: dict[str, Any], soak: bool) -> list[dict[str, Any]]:
    """The targets; each: name, relaycast, baseline, ratio, target, verdict, note."""
    r = results.get("relaycast", {})
    b = results.get("baseline", {})
    rows: list[dict[str, Any]] = []

    def add(name: str, rv: Any, bv: Any, ratio: float | None, target: str, ok: bool | None,
            note: str = "") -> None:
        verdict = "n/a" if ok is None else ("PASS" if ok else "FAIL")
        rows.append({"name": name, "relaycast": rv, "baseline": bv, "ratio": ratio,
                     "target": target, "verdict": verdict, "note": note})

    rt, bt = _get(r, "burst", "throughput_lps"), _get(b, "burst", "throughput_lps")
    ratio = _ratio(rt, bt)
    add("throughput, lines/s end to end (burst)", rt, bt, ratio, f"≥ {TARGET_THROUGHPUT_RATIO:g}x",
        None if ratio is None else ratio >= TARGET_THROUGHPUT_RATIO)

    re_, be = _get(r, "burst", "emit", "mean_us"), _get(b, "burst", "emit", "mean_us")
    ratio = _ratio(re_, be)
    add("emit cost, µs/line mean (burst)", re_, be, ratio, f"≤ 1/{1 / TARGET_EMIT_RATIO:g}",
        None if ratio is None else ratio <= TARGET_EMIT_RATIO)

    rm = _get(r, "sustained", "messages_per_1000_lines")
    bm = _get(b, "sustained", "messages_per_1000_lines")
    ratio = _ratio(rm, bm)
    add("provider messages / 1,000 lines (sustained)", rm, bm, ratio,
        f"≤ 1/{1 / TARGET_MESSAGES_RATIO:g}",
        None if ratio is None else ratio <= TARGET_MESSAGES_RATIO)

    rp = _get(r, "sustained", "latency_ms", "p99_all_emitted")
    bp = _get(b, "sustained", "latency_ms", "p99_all_emitted")
    add("p99 latency emit→subscriber, ms (sustained)", rp, bp, _ratio(rp, bp),
        f"≤ {TARGET_P99_MS:g} ms (relaycast)", None if rp is None else rp <= TARGET_P99_MS,
        "baseline: ∞ means more than 1% of its lines never arrived within the drain bound"
        if bp is not None and math.isinf(bp) else "")

    gate = _get(r, "sustained", "gate", "wait_p99_ms")
    if gate is not None:
        add("ordering gate wait p99, ms (sustained)", gate, None, None, "reported", None,
            "the upper bound of its histogram bucket; part of the p99 latency above")

    unwatched = _get(r, "unwatched", "messages_per_1000_lines")
    if unwatched is not None:
        add("provider messages / 1,000 lines, unwatched run", unwatched, None, None,
            f"= {TARGET_UNWATCHED_MESSAGES}", unwatched == TARGET_UNWATCHED_MESSAGES,
            "occupancy gating (RELAYCAST_OCCUPANCY=webhooks): counted at a proxy in front of soketi")

    rs = _get(r, "sustained", "memory", "worker", "slope_mib_per_min")
    bs = _get(b, "sustained", "memory", "worker", "slope_mib_per_min")
    window = _get(r, "sustained", "memory", "worker", "window_s") or 0.0
    note = ("fitted after the first 20% of the window; summed over the worker's processes"
            + ("" if soak else f"; only {window:.0f} s: indicative, run --soak (5 min) for the target"))
    add("worker RSS slope, MiB/min (sustained)", rs, bs,
        # A ratio of slopes only means something when both grow.
        _ratio(rs, bs) if rs is not None and bs is not None and rs > 0 and bs > 0 else None,
        f"flat: ≤ {FLAT_MIB_PER_MIN:g} MiB/min", None if rs is None else rs <= FLAT_MIB_PER_MIN,
        note)
    return rows


# ---------------------------------------------------------------------------------- rendering

def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isinf(value):
            return "∞"
        if value != 0 and abs(value) < 0.1:
            return f"{value:.3g}"
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def fmt_ratio(ratio: float | None) -> str:
    if ratio is None:
        return "-"
    if ratio >= 1:
        return f"{ratio:,.1f}x"
    if ratio <= 0:
        return f"{ratio:.3g}"
    return f"1/{1 / ratio:,.0f} ({ratio:.3g})"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    out = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in
                     enumerate(zip(header, widths, strict=True)))]
    out.append("  ".join("-" * w for w in widths))
    for row in rows:
        out.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                             enumerate(zip(row, widths, strict=True))))
    return out


def _row_adder(rows: list[list[str]], results: dict[str, Any], designs: list[str],
               phase: str) -> Callable[..., None]:
    def row(label: str, *path: str, digits: int = 1) -> None:
        rows.append([label, *(fmt(_get(results[d], phase, *path), digits) for d in designs)])

    return row


def render(report: dict[str, Any]) -> str:
    results = report["results"]
    setup = report["setup"]
    designs = [d for d in ("relaycast", "relaycast-postgresql", "baseline") if d in results]
    lines = [
        "",
        "relaycast throughput benchmark",
        f"  machine: {setup['cpus']} CPUs; python {setup['python']}; all servers on loopback",
        f"  workers: celery prefork, concurrency {setup['concurrency']} per design (the "
        f"default on this machine: one per CPU), prefetch multiplier 4, task events on (-E)",
        f"  relaycast: flush every {setup['flush_interval_ms']} ms or {setup['flush_max_lines']} "
        f"lines; {' and '.join(setup.get('databases', ['sqlite']))}; broadcast queue; "
        "Pusher = soketi, 10 KB events, ≤ 10 per request",
        "  baseline: one Celery task per line (queue baseline), one pusher.Pusher.trigger per "
        "task, client reused per worker process",
        "  soketi answers every HTTP API request with 'Connection: close': each provider request "
        "opens a new TCP connection (both designs)",
        f"  lines carry ~{setup['line_bytes']} bytes of JSON each "
        "(message 'bench line N', data {i, t})",
    ]
    heads = {"burst": "BURST: N lines as fast as possible",
             "sustained": f"SUSTAINED: {setup['rate']:g} lines/s paced",
             "fast": f"FAST SUSTAINED: {fmt(setup.get('fast_rate'), 0)} lines/s paced "
                     f"({fmt(setup.get('fast_fraction'), 2)} of the ceiling; relaycast only)"}
    for phase, head in heads.items():
        if not any(phase in results[d] for d in designs):
            continue
        lines += ["", head]
        rows: list[list[str]] = []
        row = _row_adder(rows, results, designs, phase)

        if phase != "burst":
            row("lines planned (rate x seconds)", "planned")
        row("lines emitted", "expected")
        row("lines delivered (unique, by cutoff)", "delivered")
        row("repeats received", "repeats")
        if phase != "burst":
            row("emit window, s", "emit_loop_s", digits=2)
            row("producer max lateness vs schedule, ms", "pacing", "max_late_ms")
        row("throughput, lines/s (first emit → last line)", "throughput_lps")
        row("first emit → last line, s", "first_emit_to_last_line_s", digits=2)
        row("last emit → last line, s", "tail_after_last_emit_s", digits=2)
        row("emit cost mean, µs/line", "emit", "mean_us", digits=2)
        row("emit cost p50, µs", "emit", "p50_us", digits=2)
        row("emit cost p99, µs", "emit", "p99_us", digits=2)
        row("emit cost p99.9, µs", "emit", "p999_us", digits=2)
        row("emit cost max, µs", "emit", "max_us", digits=1)
        row("emit loop, s (incl. formatting, pacing)", "emit_loop_s", digits=3)
        row("producer: stored+enqueued by, s", "flushed_s", digits=3)
        row("latency p50, ms", "latency_ms", "p50")
        row("latency p90, ms", "latency_ms", "p90")
        row("latency p99, ms (delivered lines)", "latency_ms", "p99")
        row("latency p99, ms (all emitted; ∞ if >1% lost)", "latency_ms", "p99_all_emitted")
        row("latency max, ms", "latency_ms", "max")
        row("provider messages ('log' events received)", "messages")
        row("provider HTTP requests (soketi)", "http_calls")
        row("messages / 1,000 lines", "messages_per_1000_lines")
        row("HTTP requests / 1,000 lines", "requests_per_1000_lines")
        row("lines / message", "lines_per_message")
        row("Celery tasks run", "celery_tasks")
        row("task run time mean, ms", "task_mean_ms", digits=2)
        row("task run time p99, ms", "task_p99_ms", digits=2)
        row("worker log warnings/errors", "worker", "warnings_or_errors")
        for part in ("producer", "worker", "redis", "soketi"):
            row(f"CPU ms / 1,000 lines: {part}", "cpu_ms_per_1000_lines", part)
        row("machine CPU busy in the phase, s (2 CPUs)", "machine", "busy_cpu_s", digits=2)
        row("  of which not the benchmark's processes, s", "machine", "other_cpu_s", digits=2)
        if phase != "burst":
            for group, label in (("worker", "worker RSS (sum of processes)"),
                                 ("producer", "producer RSS")):
                row(f"{label} start, MiB", "memory", group, "start_mib")
                row(f"{label} end, MiB", "memory", group, "end_mib")
                row(f"{label} max, MiB", "memory", group, "max_mib")
                row(f"{label} slope after warm-up, MiB/min", "memory", group,
                    "slope_mib_per_min", digits=2)
                row(f"{label} slope whole window, MiB/min", "memory", group,
                    "slope_all_mib_per_min", digits=2)
        lines += ["  " + text for text in _table(["", *designs], rows)]

    relay = results.get("relaycast", {})
    for design, phase in ((d, p) for d in designs for p in heads):
        gate = _get(results[design], phase, "gate")
        if gate:
            lines.append("")
            lines.append(f"{design} ordering gate ({phase}): {gate['batches']:,} batches, "
                         f"{gate['waited']:,} waited, wait p50 ≤ {fmt(gate['wait_p50_ms'])} ms, "
                         f"p99 ≤ {fmt(gate['wait_p99_ms'])} ms, total {gate['wait_ms']:,} ms, "
                         f"{gate['timeouts']:,} published without their predecessor")
    unwatched = relay.get("unwatched")
    if unwatched:
        lines += ["", f"UNWATCHED RUN (RELAYCAST_OCCUPANCY=webhooks): {unwatched['lines']:,} lines, "
                      f"nobody subscribed",
                  f"  stored {unwatched['stored']:,}, marked skipped {unwatched['skipped']:,}; "
                  f"'log' events published on its channel: {unwatched['messages']:,} "
                  f"({fmt(unwatched['messages_per_1000_lines'])} per 1,000 lines); admin events "
                  f"published: {unwatched['admin_events']:,}"]
    flusher = _get(relay, "burst", "flusher_ms")
    if flusher:
        lines += ["", "relaycast flusher (burst, in the producer; instrumented from outside):"]
        delivered = _get(relay, "burst", "expected") or 1
        for key, label in (("flush_once", "flush_once total"),
                           ("store_lines", "  clean + number + SQL (LineWriter.write)"),
                           ("sql_insert", "    SQL transaction (LogStore.append)"),
                           ("enqueue", "  enqueue (broadcast.apply_async)")):
            value = flusher.get(key)
            if value:
                lines.append(f"  {label:<40} {value['total_ms']:9.1f} ms in {value['calls']:>4} "
                             f"calls = {value['total_ms'] * 1000 / delivered:6.2f} µs/line")
        sql = _get(relay, "burst", "sql")
        if sql:
            lines.append(f"  SQL after the burst: {sql}")

    lines += ["", "TARGETS (ratios are relaycast / baseline)"]
    trows = [[t["name"], fmt(t["relaycast"], 2), fmt(t["baseline"], 2), fmt_ratio(t["ratio"]),
              t["target"], t["verdict"]] for t in report["targets"]]
    lines += ["  " + text for text in _table(
        ["", "relaycast", "baseline", "ratio", "target", "verdict"], trows)]
    for t in report["targets"]:
        if t["note"]:
            lines.append(f"  * {t['name']}: {t['note']}")
    if report.get("notes"):
        lines += ["", "NOTES"] + [f"  * {note}" for note in report["notes"]]
    profile = report.get("profile")
    if profile:
        lines += ["", "PROFILE (py-spy, active samples only; % of the category's samples)"]
        for name, data in profile.items():
            lines.append(f"  {name}: {data['samples']} samples")
            for label, key in (("self", "top_self"), ("inclusive", "top_inclusive")):
                for entry in data[key]:
                    lines.append(f"    {label:<9} {entry['pct']:5.1f}%  {entry['frame']}")
    return "\n".join(lines)
