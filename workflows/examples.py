"""Example workflows: real-looking multi-step work that reports progress as it goes.

Run one with ``relaycast run etl --param rows=5000`` (needs a broker) or ``relaycast demo``
(``--workflow fanout`` for a run spread over a chord of shards).
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from typing import Any

from celery import Signature, chain, chord

from workflows.base import step, workflow
from workflows.log_stream import LogStream


def _pause(delay_ms: float) -> None:
    if delay_ms > 0:
        time.sleep(delay_ms / 1000.0)


@workflow("etl")
def etl(log: LogStream, *, rows: int = 2000, batch_size: int = 250, delay_ms: float = 5,
        seed: int = 7) -> dict[str, int]:
    """Extract rows, validate and transform them in batches, load them; report progress."""
    rng = random.Random(seed)
    log.info("extract: reading source", source="orders.csv", rows=rows)
    records = [{"id": i, "amount": round(rng.uniform(-5, 500), 2)} for i in range(rows)]
    loaded = rejected = 0
    batches = max(1, (rows + batch_size - 1) // batch_size)
    for number in range(batches):
        chunk = records[number * batch_size:(number + 1) * batch_size]
        bad = [r for r in chunk if r["amount"] < 0]
        for record in bad[:3]:
            log.warning("transform: negative amount rejected", record_id=record["id"],
                        amount=record["amount"])
        good = [r for r in chunk if r["amount"] >= 0]
        digest = hashlib.sha256(repr(good).encode()).hexdigest()[:12]
        log.debug("transform: batch checksum", batch=number + 1, checksum=digest)
        _pause(delay_ms)
        loaded += len(good)
        rejected += len(bad)
        log.info(f"load: batch {number + 1}/{batches} written", loaded=loaded,
                 progress=round((number + 1) / batches * 100, 1))
    log.info("done", loaded=loaded, rejected=rejected)
    return {"loaded": loaded, "rejected": rejected}


@workflow("agent")
def agent(log: LogStream, *, steps: int = 6, delay_ms: float = 20,
          goal: str = "summarise the quarterly report") -> dict[str, Any]:
    """An LLM-agent-shaped loop: plan, call tools, observe, answer."""
    log.info("agent: goal received", goal=goal)
    tools = ["search_docs", "read_table", "compute_stats", "draft_answer"]
    observations = []
    for number in range(1, steps + 1):
        tool = tools[(number - 1) % len(tools)]
        log.debug("agent: thinking", step=number)
        log.info(f"agent: step {number}/{steps} calling {tool}", step=number, tool=tool,
                 progress=round(number / steps * 100, 1))
        _pause(delay_ms)
        observations.append(f"{tool} ok")
        log.info("agent: observation", step=number, tool=tool, tokens=120 + 17 * number)
    log.info("agent: answer ready", steps=steps)
    return {"steps": steps, "observations": len(observations)}


@workflow("failing")
def failing(log: LogStream, *, fail_at: int = 3, steps: int = 5,
            delay_ms: float = 10) -> None:
    """Gets some way, then raises: shows a failed run keeps its lines and a ``failed`` event."""
    for number in range(1, steps + 1):
        log.info(f"step {number}/{steps}", step=number)
        _pause(delay_ms)
        if number == fail_at:
            raise RuntimeError(f"upstream API returned garbage at step {number}")


@workflow("burst")
def burst(log: LogStream, *, lines: int = 1000, big_line_bytes: int = 0,
          delay_ms: float = 0) -> int:
    """Emit ``lines`` lines as fast as possible (tests and benchmarks); optionally one line
    of ``big_line_bytes`` UTF-8 bytes in the middle."""
    for i in range(1, lines + 1):
        log.info(f"burst line {i}", i=i)
        if big_line_bytes and i == lines // 2:
            log.info("é" * (big_line_bytes // 2), big=True)
        if delay_ms:
            _pause(delay_ms)
    return lines


@step("fanout.shard")
def fanout_shard(log: LogStream, *, shard: int, lines: int = 50, delay_ms: float = 2,
                 fail: bool = False) -> dict[str, int]:
    """One shard of a fan-out: its lines go to the run of the workflow that started it."""
    checksum = 0
    for i in range(1, lines + 1):
        checksum = (checksum * 31 + shard * 1000 + i) % 1_000_003
        log.info(f"shard {shard}: item {i}/{lines}", shard=shard, item=i, pid=os.getpid())
        _pause(delay_ms)
        if fail and i == lines // 2:
            raise RuntimeError(f"shard {shard} could not read its input at item {i}")
    return {"shard": shard, "items": lines, "checksum": checksum}


@step("fanout.summary")
def fanout_summary(log: LogStream, results: list[dict[str, int]]) -> dict[str, int]:
    """The chord's callback: runs once every shard has finished."""
    items = sum(r["items"] for r in results)
    log.info("summary: every shard done", shards=len(results), items=items)
    return {"shards": len(results), "items": items}


@workflow("fanout")
def fanout(log: LogStream, *, shards: int = 8, lines: int = 50, delay_ms: float = 2,
           fail_shard: int = -1) -> Signature:
    """Split the work over ``shards`` tasks (a group, spread over the worker's processes)
    and summarise when all are done (a chord): one run, one ``started``, one ``finished``
    (or one ``failed`` if a shard raises: ``fail_shard`` makes one)."""
    log.info("fan-out: splitting the work", shards=shards, lines_per_shard=lines)
    return chord([fanout_shard.s(shard=i, lines=lines, delay_ms=delay_ms, fail=i == fail_shard)
                  for i in range(shards)], fanout_summary.s())


@step("relay.leg")
def relay_leg(log: LogStream, previous: dict[str, int] | None = None, *, leg: int,
              lines: int = 25, delay_ms: float = 0) -> dict[str, int]:
    """One leg of a relay: it starts when the leg before it ends, often on another process."""
    for i in range(1, lines + 1):
        log.info(f"leg {leg}: item {i}/{lines}", leg=leg, item=i, pid=os.getpid())
        _pause(delay_ms)
    return {"leg": leg, "pid": os.getpid(), "after_pid": previous["pid"] if previous else 0}


@workflow("relay")
def relay(log: LogStream, *, legs: int = 6, lines: int = 25, delay_ms: float = 0,
          queues: str = "") -> Signature:
    """A chain of ``legs`` steps, each handing its result to the next: one run written by
    whichever worker processes the legs land on, in turn. ``queues`` (comma-separated) sends
    the legs to those queues in turn — as a pipeline whose steps need different machines
    would — e.g. ``--param queues=workflows,gpu``."""
    log.info("relay: starting", legs=legs)
    names = [q.strip() for q in queues.split(",") if q.strip()]
    return chain(*(relay_leg.s(leg=n, lines=lines, delay_ms=delay_ms).set(
        **({"queue": names[(n - 1) % len(names)]} if names else {}))
        for n in range(1, legs + 1)))
