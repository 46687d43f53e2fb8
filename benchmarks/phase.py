"""One phase of one design (a burst, or a sustained rate), in named steps: start the
producer and warm up, measure (counters before, emit, wait for delivery, counters after),
collect the figures."""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

from benchmarks import report as rep
from benchmarks.context import STATE_PREFIX, Context
from benchmarks.harness import (
    BenchWorker,
    ChannelLines,
    Producer,
    RssSampler,
    gate_counters,
    gate_figures,
    soketi_counters,
)
from benchmarks.options import Plan
from benchmarks.procfs import cpu_seconds, machine_busy_seconds
from broadcasters.wire import BROADCAST_TASK

TASK_NAMES = {"relaycast": BROADCAST_TASK, "baseline": "benchmarks.baseline.publish_line"}
WARMUP_LINES = 20


@dataclass(frozen=True)
class Shape:
    """How many lines a phase emits, how fast, and how long it waits for them."""

    lines: int
    rate: float  # lines/s; 0: as fast as possible
    drain_s: float  # after the producer ends
    stall_s: float  # without a new line, once the producer ended
    cap_s: float  # the whole phase

    @classmethod
    def of(cls, plan: Plan, design: str, kind: str) -> Shape:
        if kind == "fast":  # relaycast only: a fraction of the ceiling's rate
            return cls(lines=round(plan.fast_rate * plan.seconds), rate=plan.fast_rate,
                       drain_s=30.0, stall_s=15.0, cap_s=plan.seconds + 90.0)
        if kind == "sustained":
            seconds = plan.relaycast_seconds if design == "relaycast" else plan.seconds
            drain_s = 30.0 if design == "relaycast" else plan.drain_s
            return cls(lines=round(plan.rate * seconds), rate=plan.rate, drain_s=drain_s,
                       stall_s=15.0 if design == "relaycast" else drain_s,
                       cap_s=seconds + drain_s + 60.0)
        lines = plan.lines if design == "relaycast" else plan.baseline_lines
        return cls(lines=lines, rate=0.0, drain_s=plan.burst_cap_s, stall_s=20.0,
                   cap_s=plan.burst_cap_s)


@dataclass(frozen=True)
class Snapshot:
    """Counters read just before the producer goes and just after waiting stops."""

    soketi: dict[str, float] | None
    busy_s: float  # the whole machine's
    cpu_s: dict[str, float]  # per component

    @classmethod
    def take(cls, ctx: Context, worker: BenchWorker) -> Snapshot:
        others = {"redis": [ctx.redis.pid or 0], "soketi": [ctx.soketi.pid or 0],
                  "benchmark": [os.getpid()]}
        return cls(soketi=soketi_counters(ctx.soketi), busy_s=machine_busy_seconds(),
                   cpu_s={"worker": cpu_seconds(worker.pids()),
                          **{k: cpu_seconds(v) for k, v in others.items()}})


@dataclass(frozen=True)
class Measured:
    before: Snapshot
    after: Snapshot
    cutoff_ns: int  # when waiting for delivery stopped
    log_offset: int  # where the worker's log stood when the producer went
    gate_before: dict[str, int]


def run_phase(ctx: Context, worker: BenchWorker, design: str, kind: str) -> dict[str, Any]:
    phase = Phase(ctx, worker, design, kind)
    producer = phase.start_producer()
    sampler = RssSampler({"worker": worker.pids,
                          "producer": lambda: [producer.pid] if producer.running() else []})
    try:
        phase.warm_up(producer)
        measured = phase.measure(producer, sampler)
        result = producer.result(timeout_s=60.0)
    finally:
        sampler.stop()
        producer.close()
    return phase.figures(result, measured, sampler)


class Phase:
    def __init__(self, ctx: Context, worker: BenchWorker, design: str, kind: str) -> None:
        self.ctx, self.worker, self.design, self.kind = ctx, worker, design, kind
        self.shape = Shape.of(ctx.plan, design, kind)
        token = uuid.uuid4().hex[:6]
        self.run_id = f"bench-{design}-{kind}-{token}"
        self.warm_id = f"bench-{design}-{kind}-warmup-{token}"
        self.label = (f"{design} {kind}" if ctx.database == "sqlite"
                      else f"{design} ({ctx.database}) {kind}")
        self.tag = design if ctx.database == "sqlite" else f"{design}-{ctx.database}"
        self.sink = ctx.subscriber.watch(f"private-logs-{self.run_id}")
        self.warm_sink = ctx.subscriber.watch(f"private-logs-{self.warm_id}")

    # ------------------------------------------------------------------ start and warm up

    def start_producer(self) -> Producer:
        lines, rate = self.shape.lines, self.shape.rate
        self.ctx.progress.note(f"{self.label}: {lines:,} lines" + (
            f" at {rate:g}/s" if rate else " as fast as possible"))
        return Producer(
            ["--design", self.design, "--run-id", self.run_id, "--lines", str(lines),
             "--rate", str(rate), "--warmup-run-id", self.warm_id,
             "--warmup-lines", str(WARMUP_LINES)],
            self.ctx.env, self.ctx.workdir, name=f"{self.tag}-{self.kind}")

    def warm_up(self, producer: Producer) -> None:
        producer.wait_ready(timeout_s=90.0)
        if not _wait_lines(self.warm_sink, WARMUP_LINES, 30.0):
            self.ctx.notes.append(f"{self.label}: the warm-up lines did not all arrive within 30 s")
        time.sleep(0.3)  # let the workers finish the warm-up tasks' bookkeeping

    # ------------------------------------------------------------------ measure

    def measure(self, producer: Producer, sampler: RssSampler) -> Measured:
        ctx, worker = self.ctx, self.worker
        profiler = ctx.profiler if self.design == "relaycast" or self.kind == "burst" else None
        if profiler is not None:
            profiler.start(f"{self.tag}-{self.kind}-producer", producer.pid)
            if worker.pid is not None:
                profiler.start(f"{self.tag}-{self.kind}-worker", worker.pid,
                               subprocesses=True)
            time.sleep(1.0)  # py-spy attaches
        log_offset = len(worker.full_log())
        gate_before = (gate_counters(ctx.redis.url, STATE_PREFIX)
                       if self.design == "relaycast" else {})
        before = Snapshot.take(ctx, worker)
        sampler.start()
        producer.go()
        self.wait_for_delivery(producer)
        cutoff_ns = time.time_ns()
        after = Snapshot.take(ctx, worker)
        sampler.stop()
        if profiler is not None:
            profiler.stop_all()
        return Measured(before, after, cutoff_ns, log_offset, gate_before)

    def wait_for_delivery(self, producer: Producer) -> None:
        """Until every line arrived, or the producer ended and the drain time passed or the
        lines stalled, or the phase's cap."""
        shape, sink, label = self.shape, self.sink, self.label
        go = time.monotonic()
        producer_done: float | None = None
        last_count, last_change = 0, go
        while True:
            now = time.monotonic()
            count = len(sink.lines)
            if count != last_count:
                last_count, last_change = count, now
            if producer_done is None and not producer.running():
                producer_done = now
                if producer.proc.returncode != 0:
                    raise RuntimeError(f"{label}: producer failed\n{producer.log_tail()}")
            state = "emitting" if producer_done is None else "draining"
            self.ctx.progress.update(label, count, shape.lines,
                                     f"{count:,}/{shape.lines:,} lines  {now - go:5.1f}s  {state}")
            if count >= shape.lines and _distinct(sink) >= shape.lines:
                return
            if (producer_done is not None and producer.result_path.exists()
                    and count >= (emitted := _emitted(producer))
                    and _distinct(sink) >= emitted):
                return
            if producer_done is not None and (now - producer_done >= shape.drain_s
                                              or now - last_change >= shape.stall_s):
                return
            if now - go >= shape.cap_s:
                self.ctx.notes.append(f"{label}: stopped waiting after {shape.cap_s:.0f} s")
                return
            time.sleep(0.1)

    # ------------------------------------------------------------------ figures

    def figures(self, result: dict[str, Any], measured: Measured,
                sampler: RssSampler) -> dict[str, Any]:
        lines = self.shape.lines
        emitted = int(result.get("emitted", lines))
        self._note_short_emit(result, emitted)
        figures = rep.line_figures(list(self.sink.lines), list(self.sink.messages), emitted,
                                   result["first_emit_ns"], result["last_emit_ns"],
                                   measured.cutoff_ns)
        figures["planned"] = lines
        for key in ("emit", "emit_loop_s", "flushed_s", "pacing", "emitter", "flusher_ms",
                    "rss_peak_kb"):
            if key in result:
                figures[key] = result[key]
        figures["run_id"] = self.run_id
        figures["rate"] = self.shape.rate
        self._add_traffic(figures, measured)
        self._add_cpu(figures, result, measured)
        if self.kind in ("sustained", "fast"):
            window = (result["first_emit_ns"], result["last_emit_ns"])
            figures["memory"] = {g: rep.memory_figures(sampler.series(g, *window))
                                 for g in ("worker", "producer")}
        if self.design == "relaycast":
            time.sleep(0.3)  # the last tasks' counters
            figures["gate"] = gate_figures(measured.gate_before,
                                           gate_counters(self.ctx.redis.url, STATE_PREFIX))
        if self.design == "relaycast" and self.kind == "burst":
            figures["sql"] = _sql_counts(self.ctx.db_url, self.run_id)
        self._report_delivery(figures, result, emitted, measured.cutoff_ns)
        return figures

    def _note_short_emit(self, result: dict[str, Any], emitted: int) -> None:
        if result.get("flushed") is False:
            self.ctx.notes.append(f"{self.label}: the emitter had not stored and enqueued every "
                                  f"line when the producer's flush timed out")
        if emitted < self.shape.lines:
            self.ctx.notes.append(
                f"{self.label}: the producer emitted {emitted:,} of the {self.shape.lines:,} "
                f"planned lines ({emitted / (result['emit_loop_s'] or 1):,.0f} lines/s): each "
                f"emit costs more than 1/{self.shape.rate:g} s, so it could not keep the rate "
                f"and stopped at the end of the window")

    def _add_traffic(self, figures: dict[str, Any], measured: Measured) -> None:
        """HTTP requests to soketi, lines per provider message, the worker's Celery tasks."""
        delivered = figures["delivered"]
        before, after = measured.before.soketi, measured.after.soketi
        if before is not None and after is not None:
            figures["http_calls"] = int(after["http_calls"] - before["http_calls"])
            figures["requests_per_1000_lines"] = (figures["http_calls"] / delivered * 1000
                                                  if delivered else None)
        figures["lines_per_message"] = (delivered / figures["messages"]
                                        if figures["messages"] else None)
        tasks = rep.task_figures(self.worker.full_log()[measured.log_offset:])
        mine = tasks["tasks"].get(TASK_NAMES[self.design], {})
        figures["celery_tasks"] = mine.get("count")
        figures["task_mean_ms"] = mine.get("mean_ms")
        figures["task_p99_ms"] = mine.get("p99_ms")
        figures["worker"] = {"warnings_or_errors": tasks["warnings_or_errors"],
                             "first_problems": tasks["first_problems"], "tasks": tasks["tasks"]}

    def _add_cpu(self, figures: dict[str, Any], result: dict[str, Any],
                 measured: Measured) -> None:
        before, after = measured.before, measured.after
        cpu = {"worker": after.cpu_s["worker"] - before.cpu_s["worker"],
               "producer": float(result.get("cpu_s") or 0.0),
               **{k: after.cpu_s[k] - before.cpu_s[k] for k in before.cpu_s if k != "worker"}}
        figures["cpu_s"] = cpu
        busy = after.busy_s - before.busy_s
        # Whatever else ran on the machine meanwhile (other users' processes): a noise gauge.
        figures["machine"] = {"window_s": (measured.cutoff_ns - result["first_emit_ns"]) / 1e9,
                              "busy_cpu_s": busy, "benchmark_cpu_s": sum(cpu.values()),
                              "other_cpu_s": max(0.0, busy - sum(cpu.values())),
                              "load_avg_1m": os.getloadavg()[0]}
        delivered = figures["delivered"]
        figures["cpu_ms_per_1000_lines"] = ({k: v / delivered * 1e6 for k, v in cpu.items()}
                                            if delivered else None)

    def _report_delivery(self, figures: dict[str, Any], result: dict[str, Any], emitted: int,
                         cutoff_ns: int) -> None:
        delivered = figures["delivered"]
        self.ctx.progress.done(self.label, f"{delivered:,}/{emitted:,} delivered; "
                                           f"{rep.fmt(figures['throughput_lps'])} lines/s; "
                                           f"p99 {rep.fmt(figures['latency_ms']['p99'])} ms; "
                                           f"tail {rep.fmt(figures['tail_after_last_emit_s'], 2)} s")
        if delivered < emitted:
            self.ctx.notes.append(
                f"{self.label}: {emitted - delivered:,} of {emitted:,} emitted lines "
                f"({(emitted - delivered) / emitted:.0%}) had not reached the subscriber when "
                f"waiting stopped ({(cutoff_ns - result['last_emit_ns']) / 1e9:.1f} s after the "
                f"last emit)")


def _distinct(sink: ChannelLines) -> int:
    """Lines received, each counted once (a redelivered line arrives twice)."""
    return len({i for i, _, _ in list(sink.lines)})


def _wait_lines(sink: ChannelLines, count: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _distinct(sink) >= count:
            return True
        time.sleep(0.05)
    return False


def _emitted(producer: Producer) -> int:
    """What the producer's result file says it emitted (huge until the file is readable)."""
    try:
        return int(json.loads(producer.result_path.read_text()).get("emitted", 0))
    except (OSError, ValueError):
        return 1 << 62


def _sql_counts(db_url: str, run_id: str) -> dict[str, int]:
    from workflows.store import LogStore

    time.sleep(0.5)  # the last task's bookkeeping (marking lines sent) follows its send
    store = LogStore.from_url(db_url, migrate=False)
    try:
        counts = store.broadcast_counts([run_id])
    finally:
        store.close()
    return {f"{state}/{name or '-'}": n for (state, name), n in sorted(
        counts.items(), key=lambda item: (item[0][0], item[0][1] or ""))}
