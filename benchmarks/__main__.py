"""``python -m benchmarks``: relaycast's batched design against one Celery task per line.

    python -m benchmarks [--quick] [--lines N] [--rate R] [--seconds T] [--soak]
                         [--json FILE] [--profile]

Everything runs on this machine, on loopback, started and stopped by the benchmark: a
private redis-server (broker and shared state), soketi (the Pusher protocol, 10 KB event
limit like Pusher Channels), SQLite in a temporary directory, one ``celery -A tasks
worker`` per design (prefork, concurrency 2 by default) and a WebSocket subscriber playing
the browser. Each design runs two phases, each with a fresh producer process:

* burst: N lines as fast as possible (relaycast 20,000; baseline 2,000, as it is ~100x
  slower: rates are compared, not totals);
* sustained: R lines/s (1,000) for T seconds (30; ``--soak``: relaycast 5 minutes), with
  the worker's RSS sampled every second. The baseline falls behind: what it delivers
  within ``--drain`` seconds after its last emit is counted, the rest is reported lost.

Figures: end-to-end lines/s (first emit → last line at the subscriber), emit cost per line
(µs, timed around the emit call in the producer), latency emit → subscriber (timestamps
embedded in each line; one clock), provider messages (``log`` events received) and HTTP
requests (soketi's counter) per 1,000 lines, Celery tasks, CPU time per component, and
RSS start/end/max/slope. Then the ratios relaycast/baseline and PASS/FAIL per target.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from benchmarks import report as rep
from benchmarks.harness import (
    REPO,
    BenchWorker,
    ChannelLines,
    ForwardingProxy,
    Producer,
    Progress,
    RedisServer,
    RssSampler,
    Soketi,
    TimedSubscriber,
    gate_counters,
    gate_figures,
    project_env,
    soketi_available,
    soketi_counters,
)
from benchmarks.profiling import PySpy, anchored, everything_but, py_spy_binary, summarize

DESIGNS = ("relaycast", "baseline")
TASK_NAMES = {"relaycast": "relaycast.broadcast", "baseline": "benchmarks.baseline.publish_line"}
SOAK_SECONDS = 300.0
STATE_PREFIX = "bench:"
WARMUP_LINES = 20


@dataclass
class Plan:
    lines: int
    baseline_lines: int
    rate: float
    seconds: float
    relaycast_seconds: float
    drain_s: float
    burst_cap_s: float
    concurrency: int
    flush_interval_ms: int
    flush_max_lines: int
    designs: list[str]
    soak: bool
    quick: bool
    profile: bool


@dataclass
class Context:
    plan: Plan
    workdir: Path
    env: dict[str, str]
    db_url: str
    redis: RedisServer
    soketi: Soketi
    subscriber: TimedSubscriber
    progress: Progress
    profiler: PySpy | None = None
    notes: list[str] = field(default_factory=list)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="Also: python -m benchmarks.prune (retention on PostgreSQL: a workflow's store "
               "latency while 1,000,000 old lines are pruned; --help for its options).")
    parser.add_argument("--quick", action="store_true",
                        help="smaller run (≤ ~60 s): 5,000/500 burst lines, 8 s sustained, 4 s drain")
    parser.add_argument("--lines", type=int, default=None,
                        help="relaycast burst lines (default 20,000; --quick 5,000)")
    parser.add_argument("--baseline-lines", type=int, default=None,
                        help="baseline burst lines (default 2,000; --quick 500)")
    parser.add_argument("--rate", type=float, default=1000.0, help="sustained lines/s")
    parser.add_argument("--seconds", type=float, default=None,
                        help="sustained phase length (default 30; --quick 8)")
    parser.add_argument("--soak", action="store_true",
                        help=f"relaycast's sustained phase lasts {SOAK_SECONDS:.0f} s (memory target)")
    parser.add_argument("--drain", type=float, default=None,
                        help="seconds the baseline may take after its last sustained emit "
                             "(default 20; --quick 4)")
    parser.add_argument("--concurrency", type=int, default=2,
                        help="prefork processes per worker (Celery's default: one per CPU)")
    parser.add_argument("--flush-interval-ms", type=int, default=50,
                        help="RELAYCAST_FLUSH_INTERVAL_MS (project default 50)")
    parser.add_argument("--flush-max-lines", type=int, default=1000,
                        help="RELAYCAST_FLUSH_MAX_LINES (project default 1000)")
    parser.add_argument("--only", choices=DESIGNS, default=None, help="run one design only")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE",
                        help="also write every figure as JSON")
    parser.add_argument("--profile", action="store_true",
                        help="sample the producer and the workers with py-spy (needs "
                             "`.venv/bin/pip install py-spy`; figures are then perturbed)")
    parser.add_argument("--profile-dir", type=Path, default=None,
                        help="keep py-spy's raw (collapsed-stack) files here")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target fails")
    return parser


def make_plan(args: argparse.Namespace) -> Plan:
    quick = bool(args.quick)
    seconds = args.seconds if args.seconds is not None else (8.0 if quick else 30.0)
    return Plan(
        lines=args.lines or (5_000 if quick else 20_000),
        baseline_lines=args.baseline_lines or (500 if quick else 2_000),
        rate=args.rate, seconds=seconds,
        relaycast_seconds=max(seconds, SOAK_SECONDS) if args.soak else seconds,
        drain_s=args.drain if args.drain is not None else (4.0 if quick else 20.0),
        burst_cap_s=60.0 if quick else 180.0,
        concurrency=args.concurrency, flush_interval_ms=args.flush_interval_ms,
        flush_max_lines=args.flush_max_lines,
        designs=[args.only] if args.only else list(DESIGNS), soak=bool(args.soak), quick=quick,
        profile=bool(args.profile))


# ---------------------------------------------------------------------------------- CPU time

_TICKS = os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU time the whole machine spent busy (all CPUs, /proc/stat), in seconds."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICKS


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of ``pids`` (processes that are gone count 0)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += (int(fields[11]) + int(fields[12])) / _TICKS
    return total


# ---------------------------------------------------------------------------------- phases

def _worker(ctx: Context, design: str) -> BenchWorker:
    if design == "relaycast":
        return BenchWorker(ctx.env, queues="broadcast", concurrency=ctx.plan.concurrency,
                           name="bench-relaycast")
    return BenchWorker(ctx.env, queues="baseline", concurrency=ctx.plan.concurrency,
                       name="bench-baseline", extra_args=["-I", "benchmarks.baseline"])


def _wait_lines(sink: ChannelLines, count: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if len({i for i, _, _ in list(sink.lines)}) >= count:
            return True
        time.sleep(0.05)
    return False


def run_phase(ctx: Context, worker: BenchWorker, design: str, kind: str) -> dict[str, Any]:
    plan = ctx.plan
    sustained = kind == "sustained"
    if sustained:
        seconds = plan.relaycast_seconds if design == "relaycast" else plan.seconds
        lines, rate = round(plan.rate * seconds), plan.rate
        drain_s = 30.0 if design == "relaycast" else plan.drain_s
        stall_s = 15.0 if design == "relaycast" else drain_s
        cap_s = seconds + drain_s + 60.0
    else:
        lines = plan.lines if design == "relaycast" else plan.baseline_lines
        rate, drain_s, stall_s, cap_s = 0.0, plan.burst_cap_s, 20.0, plan.burst_cap_s
    token = uuid.uuid4().hex[:6]
    run_id = f"bench-{design}-{kind}-{token}"
    warm_id = f"bench-{design}-{kind}-warmup-{token}"
    sink = ctx.subscriber.watch(f"private-logs-{run_id}")
    warm_sink = ctx.subscriber.watch(f"private-logs-{warm_id}")
    label = f"{design} {kind}"
    ctx.progress.note(f"{label}: {lines:,} lines" + (f" at {rate:g}/s" if rate else
                                                      " as fast as possible"))
    producer = Producer(
        ["--design", design, "--run-id", run_id, "--lines", str(lines), "--rate", str(rate),
         "--warmup-run-id", warm_id, "--warmup-lines", str(WARMUP_LINES)],
        ctx.env, ctx.workdir, name=f"{design}-{kind}")
    sampler = RssSampler({"worker": worker.pids,
                          "producer": lambda: [producer.pid] if producer.running() else []})
    try:
        producer.wait_ready(timeout_s=90.0)
        if not _wait_lines(warm_sink, WARMUP_LINES, 30.0):
            ctx.notes.append(f"{label}: the warm-up lines did not all arrive within 30 s")
        time.sleep(0.3)  # let the workers finish the warm-up tasks' bookkeeping
        profiling = ctx.profiler is not None and (design == "relaycast" or kind == "burst")
        if profiling and ctx.profiler is not None:
            ctx.profiler.start(f"{design}-{kind}-producer", producer.pid)
            if worker.pid is not None:
                ctx.profiler.start(f"{design}-{kind}-worker", worker.pid, subprocesses=True)
            time.sleep(1.0)  # py-spy attaches
        log_offset = len(worker.full_log())
        gate_before = gate_counters(ctx.redis.url, STATE_PREFIX) if design == "relaycast" else {}
        before = soketi_counters(ctx.soketi)
        others = {"redis": [ctx.redis.pid or 0], "soketi": [ctx.soketi.pid or 0],
                  "benchmark": [os.getpid()]}
        busy_before = machine_busy_seconds()
        cpu_before = {"worker": cpu_seconds(worker.pids()),
                      **{k: cpu_seconds(v) for k, v in others.items()}}
        sampler.start()
        producer.go()
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
            ctx.progress.update(label, count, lines,
                                f"{count:,}/{lines:,} lines  {now - go:5.1f}s  {state}")
            if count >= lines and len({i for i, _, _ in list(sink.lines)}) >= lines:
                break
            if (producer_done is not None and producer.result_path.exists()
                    and count >= (emitted := _emitted(producer))
                    and len({i for i, _, _ in list(sink.lines)}) >= emitted):
                break
            if producer_done is not None and (now - producer_done >= drain_s
                                              or now - last_change >= stall_s):
                break
            if now - go >= cap_s:
                ctx.notes.append(f"{label}: stopped waiting after {cap_s:.0f} s")
                break
            time.sleep(0.1)
        cutoff_ns = time.time_ns()
        after = soketi_counters(ctx.soketi)
        cpu_after = {"worker": cpu_seconds(worker.pids()),
                     **{k: cpu_seconds(v) for k, v in others.items()}}
        busy = machine_busy_seconds() - busy_before
        sampler.stop()
        if profiling and ctx.profiler is not None:
            ctx.profiler.stop_all()
        result = producer.result(timeout_s=60.0)
    finally:
        sampler.stop()
        producer.close()

    emitted = int(result.get("emitted", lines))
    if result.get("flushed") is False:
        ctx.notes.append(f"{label}: the emitter had not stored and enqueued every line when the "
                         f"producer's flush timed out")
    if emitted < lines:
        ctx.notes.append(
            f"{label}: the producer emitted {emitted:,} of the {lines:,} planned lines "
            f"({emitted / (result['emit_loop_s'] or 1):,.0f} lines/s): each emit costs more than "
            f"1/{rate:g} s, so it could not keep the rate and stopped at the end of the window")
    figures = rep.line_figures(list(sink.lines), list(sink.messages), emitted,
                               result["first_emit_ns"], result["last_emit_ns"], cutoff_ns)
    figures["planned"] = lines
    delivered = figures["delivered"]
    for key in ("emit", "emit_loop_s", "flushed_s", "pacing", "emitter", "flusher_ms",
                "rss_peak_kb"):
        if key in result:
            figures[key] = result[key]
    figures["run_id"] = run_id
    figures["rate"] = rate
    if before is not None and after is not None:
        figures["http_calls"] = int(after["http_calls"] - before["http_calls"])
        figures["requests_per_1000_lines"] = (figures["http_calls"] / delivered * 1000
                                              if delivered else None)
    figures["lines_per_message"] = delivered / figures["messages"] if figures["messages"] else None
    tasks = rep.task_figures(worker.full_log()[log_offset:])
    mine = tasks["tasks"].get(TASK_NAMES[design], {})
    figures["celery_tasks"] = mine.get("count")
    figures["task_mean_ms"] = mine.get("mean_ms")
    figures["task_p99_ms"] = mine.get("p99_ms")
    figures["worker"] = {"warnings_or_errors": tasks["warnings_or_errors"],
                         "first_problems": tasks["first_problems"], "tasks": tasks["tasks"]}
    cpu = {"worker": cpu_after["worker"] - cpu_before["worker"],
           "producer": float(result.get("cpu_s") or 0.0),
           **{k: cpu_after[k] - cpu_before[k] for k in others}}
    figures["cpu_s"] = cpu
    window_s = (cutoff_ns - result["first_emit_ns"]) / 1e9
    # Whatever else ran on the machine meanwhile (other users' processes): a noise gauge.
    figures["machine"] = {"window_s": window_s, "busy_cpu_s": busy,
                          "benchmark_cpu_s": sum(cpu.values()),
                          "other_cpu_s": max(0.0, busy - sum(cpu.values())),
                          "load_avg_1m": os.getloadavg()[0]}
    figures["cpu_ms_per_1000_lines"] = ({k: v / delivered * 1e6 for k, v in cpu.items()}
                                        if delivered else None)
    if sustained:
        window = (result["first_emit_ns"], result["last_emit_ns"])
        figures["memory"] = {g: rep.memory_figures(sampler.series(g, *window))
                             for g in ("worker", "producer")}
    if design == "relaycast":
        time.sleep(0.3)  # the last tasks' counters
        figures["gate"] = gate_figures(gate_before, gate_counters(ctx.redis.url, STATE_PREFIX))
    if design == "relaycast" and kind == "burst":
        figures["sql"] = _sql_counts(ctx.db_url, run_id)
    tail = figures["tail_after_last_emit_s"]
    ctx.progress.done(label, f"{delivered:,}/{emitted:,} delivered; "
                             f"{rep.fmt(figures['throughput_lps'])} lines/s; "
                             f"p99 {rep.fmt(figures['latency_ms']['p99'])} ms; "
                             f"tail {rep.fmt(tail, 2)} s")
    if delivered < emitted:
        ctx.notes.append(
            f"{label}: {emitted - delivered:,} of {emitted:,} emitted lines "
            f"({(emitted - delivered) / emitted:.0%}) had not reached the subscriber when waiting "
            f"stopped ({(cutoff_ns - result['last_emit_ns']) / 1e9:.1f} s after the last emit)")
    return figures


def _emitted(producer: Producer) -> int:
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


def run_design(ctx: Context, stack: contextlib.ExitStack, design: str) -> dict[str, Any]:
    worker = _worker(ctx, design)
    stack.callback(worker.close)
    ctx.progress.note(f"starting the {design} worker (prefork, concurrency {ctx.plan.concurrency})")
    worker.start(timeout_s=90.0)
    try:
        out = {"burst": run_phase(ctx, worker, design, "burst"),
               "sustained": run_phase(ctx, worker, design, "sustained")}
    finally:
        if design == "baseline":
            _purge(ctx.redis.url, "baseline")
        worker.close()
    if design == "relaycast":
        out["unwatched"] = run_unwatched(ctx, stack)
    return out


def run_unwatched(ctx: Context, stack: contextlib.ExitStack) -> dict[str, Any]:
    """A run nobody watches, with occupancy gating on: how many provider messages its log
    channel costs (counted at a proxy in front of soketi; the target is none)."""
    from broadcasters.backends import RedisBackend
    from broadcasters.occupancy import Occupancy
    from broadcasters.state import SharedState
    from workflows.store import LogStore

    lines = 2_000 if ctx.plan.quick else 10_000
    proxy = ForwardingProxy(ctx.soketi.url)
    stack.callback(proxy.close)
    env = {**ctx.env, "PUSHER_PORT": str(proxy.port), "RELAYCAST_OCCUPANCY": "webhooks",
           "RELAYCAST_OCCUPANCY_RECONCILE_S": "1"}
    worker = BenchWorker(env, queues="broadcast", concurrency=ctx.plan.concurrency,
                         name="bench-unwatched", extra_args=["-B", "-s", str(ctx.workdir / "beat")])
    stack.callback(worker.close)
    ctx.progress.note(f"unwatched run: {lines:,} lines with occupancy gating (worker with beat)")
    worker.start(timeout_s=90.0)
    state = SharedState(RedisBackend.from_url(ctx.redis.url, STATE_PREFIX))
    occupancy = Occupancy(state, reconcile_s=1)
    deadline = time.monotonic() + 30
    while not occupancy.known() and time.monotonic() < deadline:
        time.sleep(0.2)
    run_id = f"bench-unwatched-{uuid.uuid4().hex[:6]}"
    producer = Producer(["--design", "relaycast", "--run-id", run_id, "--lines", str(lines),
                         "--rate", "0", "--warmup-run-id", f"{run_id}-warmup", "--warmup-lines",
                         "0"], ctx.env, ctx.workdir, name="unwatched")
    store = LogStore.from_url(ctx.db_url, migrate=False)
    try:
        producer.wait_ready(timeout_s=90.0)
        producer.go()
        producer.result(timeout_s=120.0)
        deadline = time.monotonic() + 60
        while True:
            counts = store.broadcast_counts([run_id])
            if not counts.get(("pending", None), 0) and sum(counts.values()) >= lines:
                break
            if time.monotonic() > deadline:
                ctx.notes.append("unwatched run: lines still pending after 60 s")
                break
            time.sleep(0.2)
    finally:
        producer.close()
        store.close()
        state.close()
        worker.close()
    messages = len(proxy.published_to(f"private-logs-{run_id}", "log"))
    ctx.progress.done("unwatched run", f"{messages} log events published for {lines:,} lines")
    return {"lines": lines, "stored": sum(counts.values()),
            "skipped": counts.get(("skipped", None), 0), "messages": messages,
            "messages_per_1000_lines": messages / lines * 1000,
            "admin_events": len(proxy.published_to("private-admin-events")),
            "occupancy_known": occupancy.known()}


def _purge(url: str, queue: str) -> None:
    """Drop the baseline's backlog so its worker can stop promptly."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.delete(queue)
    except redis.RedisError:
        pass
    finally:
        client.close()


# ---------------------------------------------------------------------------------- profile

def profile_summary(profiler: PySpy, designs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    wanted: list[tuple[str, str, Callable[[list[str]], int | None]]] = []
    pacing = r"^Pacer\.wait \("
    if "relaycast" in designs:
        for kind in ("burst", "sustained"):
            wanted += [
                (f"relaycast {kind}: emit path (producer main thread, under the emit loop)",
                 f"relaycast-{kind}-producer", anchored(r"^_emit_lines_relaycast \(", exclude=pacing)),
                (f"relaycast {kind}: flusher thread (producer)",
                 f"relaycast-{kind}-producer", anchored(r"^Emitter\.flush_once \(|^flush_once \(")),
                (f"relaycast {kind}: broadcast task (worker pool)",
                 f"relaycast-{kind}-worker", anchored(r"^broadcast \(.*tasks/broadcast\.py")),
                (f"relaycast {kind}: worker outside the task (Celery, kombu, pool)",
                 f"relaycast-{kind}-worker", everything_but(r"tasks/broadcast\.py")),
            ]
    if "baseline" in designs:
        wanted += [
            ("baseline burst: emit path (publish_line.delay)", "baseline-burst-producer",
             anchored(r"^_emit_lines_baseline \(", exclude=pacing)),
            ("baseline burst: task (worker pool)", "baseline-burst-worker",
             anchored(r"^publish_line \(")),
            ("baseline burst: worker outside the task (Celery, kombu, pool)",
             "baseline-burst-worker", everything_but(r"^publish_line \(")),
        ]
    for name, label, belongs in wanted:
        # "Outside the task" stacks all start in Celery's entry point: only self costs say anything.
        summary = summarize(profiler.stacks(label), belongs,
                            inclusive_top=0 if "outside the task" in name else None)
        if summary["samples"]:
            out[name] = summary
    return out


# ---------------------------------------------------------------------------------- main

class _Stop(KeyboardInterrupt):
    """SIGINT/SIGTERM/SIGHUP: unwind so every process and directory is cleaned up (SIGINT is
    handled explicitly too: a shell starts background jobs with it ignored)."""


@contextlib.contextmanager
def _signals_unwind() -> Iterator[None]:
    def handler(signum: int, _frame: FrameType | None) -> None:
        raise _Stop(f"signal {signum}")

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(ValueError):  # not the main thread
            previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _line_bytes() -> int:
    sample = {"seq": 12345, "ts": 1_700_000_000_000, "level": "info",
              "message": "bench line 12345", "data": {"i": 12345, "t": 1_700_000_000_000_000_000}}
    return len(json.dumps(sample, separators=(",", ":")))


def _preflight() -> str | None:
    if shutil.which("redis-server") is None:
        return "redis-server is not on PATH (apt-get install redis-server)"
    if not soketi_available():
        return "soketi is not installed: run `npm ci` in tools/ (and install node)"
    return None


def execute(plan: Plan, args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="relaycast-bench-"))
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        progress.note("starting redis-server and soketi on loopback")
        redis_server = RedisServer()
        stack.callback(redis_server.close)
        redis_server.start()
        soketi = Soketi(extra_env={"SOKETI_EVENT_MAX_SIZE_IN_KB": "10",
                                   "SOKETI_METRICS_ENABLED": "true"})
        stack.callback(soketi.close)
        soketi.start()
        db_url = f"sqlite:///{workdir / 'relaycast.db'}"
        from workflows.store import LogStore

        LogStore.from_url(db_url).close()  # migrations, as `relaycast db upgrade` would
        python_path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
        env = project_env({
            "REDIS_URL": redis_server.url, "DATABASE_URL": db_url, **soketi.env(),
            "RELAYCAST_STATE_PREFIX": STATE_PREFIX,
            "RELAYCAST_FLUSH_INTERVAL_MS": str(plan.flush_interval_ms),
            "RELAYCAST_FLUSH_MAX_LINES": str(plan.flush_max_lines),
            "PYTHONPATH": python_path,
        })
        subscriber = TimedSubscriber(soketi.host, soketi.port, soketi.key, soketi.secret)
        stack.callback(subscriber.close)
        ctx = Context(plan=plan, workdir=workdir, env=env, db_url=db_url, redis=redis_server,
                      soketi=soketi, subscriber=subscriber, progress=progress)
        if soketi_counters(soketi) is None:
            ctx.notes.append("soketi's metrics endpoint did not answer: HTTP requests not counted")
        if plan.profile:
            ctx.profiler = PySpy(workdir / "profiles")
            ctx.profiler.workdir.mkdir()
            stack.callback(ctx.profiler.stop_all)
        results: dict[str, Any] = {}
        try:
            for design in plan.designs:
                results[design] = run_design(ctx, stack, design)
            profile = profile_summary(ctx.profiler, plan.designs) if ctx.profiler else None
            if ctx.profiler is not None and args.profile_dir is not None:
                ctx.profiler.copy_to(args.profile_dir)
            progress.note("stopping servers")
        finally:
            # A second Ctrl-C must not cut the cleanup short.
            previous_sigint = signal.signal(signal.SIGINT, signal.SIG_IGN)
            stack.callback(signal.signal, signal.SIGINT, previous_sigint)
    setup = {
        "cpus": os.cpu_count(), "python": platform.python_version(),
        "concurrency": plan.concurrency, "flush_interval_ms": plan.flush_interval_ms,
        "flush_max_lines": plan.flush_max_lines, "rate": plan.rate,
        "seconds": plan.seconds, "relaycast_seconds": plan.relaycast_seconds,
        "drain_s": plan.drain_s, "quick": plan.quick, "soak": plan.soak,
        "line_bytes": _line_bytes(), "profiled": plan.profile,
        "wall_s": time.monotonic() - started,
    }
    notes = list(ctx.notes)
    if plan.profile:
        notes.append("py-spy was sampling the producer and workers: the figures of this run "
                     "are perturbed; compare against a run without --profile")
    return {"setup": setup, "results": results, "notes": notes, "profile": profile,
            "targets": rep.evaluate_targets(results, plan.soak)}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    plan = make_plan(args)
    problem = _preflight()
    if problem is None and plan.profile and py_spy_binary() is None:
        problem = "--profile needs py-spy: .venv/bin/pip install py-spy (not a project dependency)"
    if problem is not None:
        print(f"benchmarks: {problem}", file=sys.stderr)
        return 2
    progress = Progress()
    try:
        with _signals_unwind():
            report = execute(plan, args, progress)
    except KeyboardInterrupt:
        print("\nbenchmarks: interrupted; every process and temporary directory was removed",
              file=sys.stderr)
        return 130
    except (RuntimeError, TimeoutError, OSError) as exc:
        print(f"\nbenchmarks: failed: {exc}", file=sys.stderr)
        return 2
    print(rep.render(report))
    print(f"\n(wall time {report['setup']['wall_s']:.0f} s)")
    if args.json is not None:
        args.json.write_text(json.dumps(_plain(report), indent=2, default=str))
        print(f"figures written to {args.json}")
    failed = [t for t in report["targets"] if t["verdict"] == "FAIL"]
    return 1 if args.strict and failed else 0


def _plain(value: Any) -> Any:
    """``value`` with infinities as the string "inf" (strict JSON has no Infinity)."""
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


if __name__ == "__main__":
    raise SystemExit(main())
