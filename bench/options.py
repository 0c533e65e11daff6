"""How long and how often the scenarios run (``python -m bench --help``)."""

from __future__ import annotations

import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Options:
    repeat: int = 3
    """Repetitions of each measurement; the table shows their median."""
    load_seconds: float = 8.0
    """Seconds of load per endpoint and repetition (submit path)."""
    concurrency: int = 16
    """Connections the load generator keeps busy (submit path)."""
    drain_jobs: int = 400
    """No-op jobs each worker drains per repetition."""
    latency_samples: int = 30
    """Jobs submitted one at a time to an idle worker, per worker kind."""
    fanout_jobs: int = 10_000
    """Jobs one fan-out request enqueues."""
    idle_seconds: float = 610.0
    """Window over which idle processes are counted: one full maintenance period (600 s)."""
    soak_minutes: float = 120.0
    """Length of the soak (``--only soak``, never run by default): mixed traffic on one web process."""
    soak_rate: float = 25.0
    """Requests per second the soak sends (about 40% of them submit a job)."""
    soak_csv: str = "soak.csv"
    """Where the soak writes its samples (seconds, requests, RSS, Redis memory)."""


QUICK = Options(repeat=1, load_seconds=3.0, drain_jobs=150, latency_samples=10, idle_seconds=90.0)
"""A smoke run: every scenario once, short windows (figures are rougher)."""


def progress(message: str) -> None:
    """Tell the person waiting what is running (stderr, so the table can be piped)."""
    print(f"bench: {message}", file=sys.stderr, flush=True)
