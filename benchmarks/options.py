"""The benchmark's command line and the plan it becomes (how many lines, how fast, how long)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

DESIGNS = ("relaycast", "baseline")
DATABASES = ("sqlite", "postgresql")
SOAK_SECONDS = 300.0


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
    databases: list[str]
    ceiling_rounds: int
    fast_fraction: float
    #: Lines/s of relaycast's fast sustained phase: ``fast_fraction`` of the ceiling, set once
    #: the ceiling is measured (0: no fast phase).
    fast_rate: float = 0.0


def build_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=description,
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
    parser.add_argument("--database", choices=DATABASES, action="append", default=None,
                        help="where relaycast stores lines (repeat for both; default both: "
                             "SQLite in a temporary directory, and a PostgreSQL database "
                             "created at RELAYCAST_BENCH_POSTGRES, 127.0.0.1:5432, and dropped)")
    parser.add_argument("--ceiling-rounds", type=int, default=3,
                        help="rounds of the ceiling phase (the best is kept)")
    parser.add_argument("--fast-fraction", type=float, default=0.25,
                        help="the fast sustained phase runs at this fraction of the ceiling "
                             "(0: no fast phase)")
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
        profile=bool(args.profile), databases=list(dict.fromkeys(args.database or DATABASES)),
        ceiling_rounds=max(1, args.ceiling_rounds), fast_fraction=args.fast_fraction)
