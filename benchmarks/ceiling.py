"""The ceiling: what one Pusher client can push through the same soketi to the same subscriber,
with no Celery, no SQL and nothing encoded while it sends.

    python -m benchmarks.ceiling --channel C --run-id R --lines N --result FILE

The sender process (started by :func:`run_ceiling`, with the benchmark's ``PUSHER_*``
environment) builds ``N`` lines shaped like the producer's, packs them as relaycast packs a
run's lines (:class:`~broadcasters.packing.LogBatch`, 10 KB events), groups the events ten per
request (Pusher's batch limit) and encodes every request body up front. It prints ``READY``,
waits for ``GO``, then sends the requests one after another from one client
(``trigger_batch(..., already_encoded=True)``, the SDK relaycast uses) and writes when it
started and ended. The subscriber's arrival times give the throughput: first request → last
line received, like relaycast's burst (first emit → last line).

Every relaycast figure is then also printed as a fraction of this one: the ratios against the
one-task-per-line baseline say how much better relaycast is than the obvious design; this
one says how close it is to what the machine and the provider can do at all.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.context import Context
from benchmarks.harness import Producer

#: Events per ``trigger_batch`` request (Pusher Channels' documented maximum).
EVENTS_PER_REQUEST = 10
#: soketi runs with ``SOKETI_EVENT_MAX_SIZE_IN_KB=10``: relaycast's packing limit for Pusher.
EVENT_MAX_BYTES = 10_000
#: One busy run's burst, as a fraction of the ceiling measured in the same run.
BURST_FRACTION_TARGET = 1 / 3
#: p99 emit → subscriber of the fast sustained phase (a fraction of the ceiling's rate).
FAST_P99_TARGET_MS = 250.0


def run_ceiling(ctx: Context) -> dict[str, Any]:
    """Send ``plan.lines`` pre-encoded lines (as many as relaycast's burst) to a fresh channel
    of the benchmark's soketi; the figures of the best of ``plan.ceiling_rounds`` rounds."""
    rounds = [_one_round(ctx, i) for i in range(ctx.plan.ceiling_rounds)]
    best = max(rounds, key=lambda r: r["throughput_lps"] or 0.0)
    best["rounds_lps"] = [r["throughput_lps"] for r in rounds]
    ctx.progress.done("ceiling", f"{best['throughput_lps'] or 0:,.0f} lines/s (best of "
                                 f"{len(rounds)}: " + ", ".join(
                                     f"{r['throughput_lps'] or 0:,.0f}" for r in rounds) + ")")
    return best


def _one_round(ctx: Context, index: int) -> dict[str, Any]:
    lines = ctx.plan.lines
    run_id = f"bench-ceiling-{index}-{uuid.uuid4().hex[:6]}"
    channel = f"private-logs-{run_id}"
    sink = ctx.subscriber.watch(channel)
    ctx.progress.note(f"ceiling round {index + 1}: {lines:,} pre-encoded lines from one client")
    sender = Producer(["--channel", channel, "--run-id", run_id, "--lines", str(lines)],
                      ctx.env, ctx.workdir, name=f"ceiling-{index}", module="benchmarks.ceiling")
    try:
        sender.wait_ready(timeout_s=90.0)
        sender.go()
        result = sender.result(timeout_s=ctx.plan.burst_cap_s)
        deadline = time.monotonic() + 30.0
        while len({i for i, _, _ in list(sink.lines)}) < lines and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        sender.close()
    received = list(sink.lines)
    distinct = len({i for i, _, _ in received})
    last_recv = max((recv for _, _, recv in received), default=None)
    span_s = (last_recv - result["first_send_ns"]) / 1e9 if last_recv is not None else None
    return {"lines": lines, "delivered": distinct, "messages": result["messages"],
            "requests": result["requests"], "send_s": result["send_s"],
            "first_send_to_last_line_s": span_s,
            "throughput_lps": distinct / span_s if span_s and distinct else None}


def ceiling_targets(results: dict[str, Any], ceiling: dict[str, Any]) -> list[dict[str, Any]]:
    """Per relaycast database: the burst as a fraction of the ceiling (≥ 1/3), and the fast
    sustained phase (every line delivered, p99 ≤ 250 ms)."""
    top = ceiling.get("throughput_lps")
    rows: list[dict[str, Any]] = []
    for design, figures in results.items():
        if not design.startswith("relaycast"):
            continue
        burst = (figures.get("burst") or {}).get("throughput_lps")
        fraction = burst / top if burst is not None and top else None
        rows.append({"name": f"{design} burst / ceiling", "value": fraction,
                     "target": f"≥ {BURST_FRACTION_TARGET:.3g}",
                     "verdict": _verdict(None if fraction is None
                                         else fraction >= BURST_FRACTION_TARGET),
                     "detail": f"{_n(burst)} of {_n(top)} lines/s"})
        fast = figures.get("fast") or {}
        if fast:
            p99 = (fast.get("latency_ms") or {}).get("p99_all_emitted")
            complete = fast.get("delivered") == fast.get("expected")
            rows.append({"name": f"{design} fast sustained p99, ms", "value": p99,
                         "target": f"≤ {FAST_P99_TARGET_MS:g} ms, every line",
                         "verdict": _verdict(None if p99 is None
                                             else p99 <= FAST_P99_TARGET_MS and complete),
                         "detail": f"{_n(fast.get('delivered'))} of {_n(fast.get('expected'))} "
                                   f"lines delivered at {_n(fast.get('rate'))} lines/s"})
    return rows


def render_ceiling(report: dict[str, Any]) -> str:
    """The CEILING section: the phase's figures and every relaycast figure against it."""
    ceiling = report.get("ceiling")
    if not ceiling:
        return ""
    rounds = ", ".join(_n(v) for v in ceiling["rounds_lps"])
    lines = ["", f"CEILING: one pusher client, {_n(ceiling['lines'])} pre-encoded lines "
                 f"({_n(ceiling['messages'])} events, {_n(ceiling['requests'])} requests of ≤ "
                 f"{EVENTS_PER_REQUEST}), no Celery, no SQL",
             f"  {_n(ceiling['throughput_lps'])} lines/s first request → last line (best of: "
             f"{rounds}); sending took {ceiling['send_s']:.3f} s"]
    setup = report["setup"]
    if setup.get("fast_rate"):
        lines.append(f"  fast sustained phase: {_n(setup['fast_rate'])} lines/s "
                     f"({setup['fast_fraction']:g} of the ceiling) for {setup['seconds']:g} s")
    lines.append("")
    width = max((len(t["name"]) for t in report.get("ceiling_targets", ())), default=10)
    for t in report.get("ceiling_targets", ()):
        value = t["value"]
        shown = "-" if value is None else (f"{value:.3f}" if value < 10 else f"{value:,.1f}")
        lines.append(f"  {t['name']:<{width}}  {shown:>9}  {t['target']:<24} {t['verdict']:<5} "
                     f"({t['detail']})")
    return "\n".join(lines)


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def _n(value: Any) -> str:
    return "-" if value is None else f"{value:,.0f}"


# ---------------------------------------------------------------------------------- the sender

def _requests(channel: str, run_id: str, lines: int) -> tuple[list[list[dict[str, str]]], int]:
    """The request bodies' batches, every event's data already a JSON string; and how many
    events they hold."""
    from broadcasters.packing import LogBatch

    now_ms, now_ns = int(time.time() * 1000), time.time_ns()
    events = [{"seq": i, "ts": now_ms, "level": "info", "message": f"bench line {i}",
               "data": {"i": i, "t": now_ns}} for i in range(1, lines + 1)]
    messages = LogBatch(channel, run_id, events).pack(EVENT_MAX_BYTES)
    batches = [[{"channel": m.channel, "name": m.event, "data": m.payload}
                for m in messages[k:k + EVENTS_PER_REQUEST]]
               for k in range(0, len(messages), EVENTS_PER_REQUEST)]
    return batches, len(messages)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ceiling")
    parser.add_argument("--channel", required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--lines", type=int, required=True)
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args(argv)
    from broadcasters.pusher import pusher_client
    from config import load_settings

    client = pusher_client(load_settings())
    batches, messages = _requests(args.channel, args.run_id, args.lines)
    print("READY", flush=True)
    if sys.stdin.readline().strip() != "GO":
        return 1
    first = time.time_ns()
    started = time.perf_counter()
    for batch in batches:
        client.trigger_batch(batch, already_encoded=True)
    send_s = time.perf_counter() - started
    args.result.write_text(json.dumps({"first_send_ns": first, "send_s": send_s,
                                       "requests": len(batches), "messages": messages}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
