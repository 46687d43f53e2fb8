"""Example workflows: real-looking multi-step work that reports progress as it goes.

Run one with ``relaycast run etl --param rows=5000`` (needs a broker) or ``relaycast demo``.
"""

from __future__ import annotations

import hashlib
import random
import time
from typing import Any

from workflows.base import workflow
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
    for step in range(1, steps + 1):
        tool = tools[(step - 1) % len(tools)]
        log.debug("agent: thinking", step=step)
        log.info(f"agent: step {step}/{steps} calling {tool}", step=step, tool=tool,
                 progress=round(step / steps * 100, 1))
        _pause(delay_ms)
        observations.append(f"{tool} ok")
        log.info("agent: observation", step=step, tool=tool, tokens=120 + 17 * step)
    log.info("agent: answer ready", steps=steps)
    return {"steps": steps, "observations": len(observations)}


@workflow("failing")
def failing(log: LogStream, *, fail_at: int = 3, steps: int = 5,
            delay_ms: float = 10) -> None:
    """Gets some way, then raises: shows a failed run keeps its lines and a ``failed`` event."""
    for step in range(1, steps + 1):
        log.info(f"step {step}/{steps}", step=step)
        _pause(delay_ms)
        if step == fail_at:
            raise RuntimeError(f"upstream API returned garbage at step {step}")


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
