"""``python -m benchmarks.prune`` still runs end to end (a small prune; the figures are the
benchmark's business, the checks are ours)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import POSTGRES_ADMIN_URL
from sqlalchemy import create_engine, text
from support.workers import run_python

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(180)
def test_the_prune_benchmark_measures_both_phases_and_checks_every_line(
        postgres_url: str) -> None:  # the fixture: PostgreSQL is there (or the test skips)
    result = run_python("-m", "benchmarks.prune", "--lines", "20000", "--quiet-s", "2",
                        env={"RELAYCAST_BENCH_POSTGRES": POSTGRES_ADMIN_URL}, cwd=REPO,
                        timeout_s=170)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    for phase in ("no prune (reference)", "during the prune", "after it"):
        assert re.search(rf"^{re.escape(phase)}\s+\d+\s+[\d.,]+\s+[\d.,]+\s+[\d.,]+$", out,
                         re.MULTILINE), out
    assert "prune: 20,000 lines, 20 runs, 20 counters" in out
    assert re.search(r"checks: ([\d,]+) of \1 emitted lines stored, numbered 1..N: True, "
                     r"old lines left: 0", out), out
    [database] = re.findall(r"created the PostgreSQL database (relaycast_bench_\w+)", result.stderr)
    admin = create_engine(POSTGRES_ADMIN_URL)
    try:
        with admin.connect() as connection:
            names = set(connection.execute(text("SELECT datname FROM pg_database")).scalars())
    finally:
        admin.dispose()
    assert database not in names, "the benchmark dropped its database"
