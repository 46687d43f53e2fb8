"""Each design's run: its own Celery worker, the burst and the sustained phase; for
relaycast also the unwatched run (occupancy gating on, provider messages counted at a proxy)."""

from __future__ import annotations

import contextlib
import time
import uuid
from typing import Any

from benchmarks.context import STATE_PREFIX, Context
from benchmarks.harness import BenchWorker, ForwardingProxy, Producer
from benchmarks.phase import run_phase


def run_design(ctx: Context, stack: contextlib.ExitStack, design: str, *,
               unwatched: bool = True) -> dict[str, Any]:
    """``design``'s phases on ``ctx``'s database; relaycast also runs the fast sustained phase
    (when the ceiling set its rate) and, with ``unwatched``, the unwatched run."""
    worker = _worker(ctx, design)
    stack.callback(worker.close)
    ctx.progress.note(f"starting the {design} worker (prefork, concurrency {ctx.plan.concurrency})")
    worker.start(timeout_s=90.0)
    try:
        out = {"burst": run_phase(ctx, worker, design, "burst"),
               "sustained": run_phase(ctx, worker, design, "sustained")}
        if design == "relaycast" and ctx.plan.fast_rate > 0:
            out["fast"] = run_phase(ctx, worker, design, "fast")
    finally:
        if design == "baseline":
            _purge(ctx.redis.url, "baseline")
        worker.close()
    if design == "relaycast" and unwatched:
        out["unwatched"] = run_unwatched(ctx, stack)
    return out


def _worker(ctx: Context, design: str) -> BenchWorker:
    if design == "relaycast":
        return BenchWorker(ctx.env, queues="broadcast", concurrency=ctx.plan.concurrency,
                           name="bench-relaycast")
    return BenchWorker(ctx.env, queues="baseline", concurrency=ctx.plan.concurrency,
                       name="bench-baseline", extra_args=["-I", "benchmarks.baseline"])


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
