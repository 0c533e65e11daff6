"""Footprint: the Redis memory a finished no-op job keeps for its result TTL.

A fresh Redis server, N no-op jobs drained by Offload's worker (as deployed) with each
FINISHED_JOB_FOOTPRINT; then ``MEMORY USAGE`` of every key a job left (its hash, its results
stream, any other key named after it), summed, plus its share of the finished registry.
"rq" leaves what RQ itself leaves; "compact" is Offload's default.
"""

from __future__ import annotations

from bench import stack
from bench.options import Options, progress
from bench.report import Row

JOBS = 300
TARGET = 1536
"""The issue's target, in bytes: 1.5 KB plus the result (a no-op's result is ``null``)."""


def footprint(setting: str) -> float:
    """Mean bytes a finished no-op job keeps in Redis under FINISHED_JOB_FOOTPRINT=``setting``."""
    with stack.stack() as processes:
        redis = processes.redis
        queue = stack.queue(redis)
        queue.enqueue_many(stack.noop_jobs(JOBS))
        worker = processes.spawn(
            "worker", f"{stack.PRODUCTION_WORKER} --max-jobs {JOBS}", FINISHED_JOB_FOOTPRINT=setting
        )
        worker.wait(300)
        ids = set(queue.finished_job_registry.get_job_ids())
        if len(ids) < JOBS:
            progress(f"footprint: only {len(ids)} of {JOBS} jobs finished ({setting})")
        total = 0
        for key in redis.scan_iter(count=1000):
            name = key.decode()
            if any(part in ids for part in name.split(":")):
                total += redis.memory_usage(key, samples=0) or 0
        registry = redis.memory_usage(queue.finished_job_registry.key, samples=0) or 0
        return (total + registry) / max(len(ids), 1)


def run(options: Options) -> list[Row]:
    figures = {}
    for setting in ("compact", "rq"):
        progress(f"footprint: {JOBS} no-op jobs, FINISHED_JOB_FOOTPRINT={setting}")
        figures[setting] = footprint(setting)
    return [
        Row(
            "footprint", "bytes a finished no-op job keeps", figures["compact"], figures["rq"], "RQ's layout", digits=0
        ),
        Row(
            "footprint",
            "bytes a finished no-op job keeps",
            figures["compact"],
            TARGET,
            "the issue's target (1.5 KB)",
            "<= 1x",
            lambda ratio: ratio <= 1.0,
            digits=0,
        ),
    ]
