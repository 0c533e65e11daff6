"""Drain: N no-op jobs through one worker process of each kind, from a full queue.

Each run gets a fresh Redis server holding N queued no-op jobs; the worker is started
(not in burst mode, as deployed) with ``--max-jobs N`` and exits when done. Throughput
comes from the jobs' own timestamps (first start to last end), so start-up is left out;
Redis commands per job come from INFO commandstats, minus what the same command sends
to start and stop on an empty queue (measured once per kind).

A second pass mixes in jobs that crash (SIGSEGV): every other job must still finish.
"""

from __future__ import annotations

import random
import subprocess
from dataclasses import dataclass

from rq import Queue

from bench import stack
from bench.options import Options, progress
from bench.report import Row, at_least, median

WORKERS = {
    "offload": stack.PRODUCTION_WORKER,
    "forking": stack.STOCK_FORKING_WORKER,
    "simple": stack.STOCK_SIMPLE_WORKER,
}
NAMES = {
    "offload": "Offload worker",
    "forking": "rq worker (forking)",
    "simple": "rq worker SimpleWorker",
}
CRASH_EVERY = 50


@dataclass
class Drained:
    jobs_per_second: float
    commands: int
    finished: int


def drain(command: str, count: int, crash_every: int | None = None, timeout: float = 300) -> Drained:
    """Run ``command --max-jobs count`` over ``count`` queued jobs on a fresh Redis server."""
    with stack.stack() as processes:
        queue = stack.queue(processes.redis)
        jobs = stack.noop_jobs(count)
        if crash_every:
            for index in range(crash_every - 1, count, crash_every):
                jobs[index] = Queue.prepare_data("bench.jobs.crash", result_ttl=3600, failure_ttl=3600)
        queue.enqueue_many(jobs)
        before = stack.command_counts(processes.redis)
        worker = processes.start_worker(f"{command} --max-jobs {count}", wait=False)
        try:
            worker.wait(timeout)
        except subprocess.TimeoutExpired:
            progress(f"drain: {command!r} did not finish {count} jobs in {timeout} s; stopped")
        after = stack.command_counts(processes.redis)
        ids = queue.finished_job_registry.get_job_ids()
        finished = [job for job in queue.job_class.fetch_many(ids, queue.connection, queue.serializer) if job]
        span = 0.0
        if len(finished) > 1:
            span = (max(job.ended_at for job in finished) - min(job.started_at for job in finished)).total_seconds()
        return Drained(
            jobs_per_second=len(finished) / span if span else 0.0,
            commands=(after - before).total(),
            finished=len(finished),
        )


def start_stop_commands(command: str) -> int:
    """Commands ``command`` sends to start, find nothing to do, and stop."""
    with stack.stack() as processes:
        before = stack.command_counts(processes.redis)
        processes.start_worker(f"{command} --burst", wait=False).wait(60)
        return (stack.command_counts(processes.redis) - before).total()


def run(options: Options) -> list[Row]:
    count = options.drain_jobs
    overhead = {kind: start_stop_commands(command) for kind, command in WORKERS.items()}
    runs: dict[str, list[Drained]] = {kind: [] for kind in WORKERS}
    for repetition in range(options.repeat):
        order = list(WORKERS)
        random.shuffle(order)  # no kind always runs first (or last) on a noisy machine
        for kind in order:
            progress(f"drain: {NAMES[kind]}, {count} jobs (repetition {repetition + 1}/{options.repeat})")
            runs[kind].append(drain(WORKERS[kind], count))

    def rate(kind: str) -> float:
        return median([run.jobs_per_second for run in runs[kind]])

    def commands_per_job(kind: str) -> float:
        return median([(run.commands - overhead[kind]) / count for run in runs[kind]])

    crashes: dict[str, Drained] = {}
    for kind in WORKERS:
        progress(f"drain: {NAMES[kind]}, {count} jobs, 1 in {CRASH_EVERY} crashing")
        crashes[kind] = drain(WORKERS[kind], count, crash_every=CRASH_EVERY, timeout=120)
    healthy = count - count // CRASH_EVERY

    offload = rate("offload")
    return [
        Row("drain", "jobs/s, one worker process", offload, rate("forking"), NAMES["forking"], ">= 4x", at_least(4.0)),
        Row("drain", "jobs/s, one worker process", offload, rate("simple"), NAMES["simple"]),
        Row("drain", "Redis commands per job", commands_per_job("offload"), commands_per_job("forking"), "forking"),
        Row("drain", "Redis commands per job", commands_per_job("offload"), commands_per_job("simple"), "SimpleWorker"),
        Row(
            "drain",
            f"healthy jobs finished of {healthy}, 1 in {CRASH_EVERY} segfaults",
            crashes["offload"].finished,
            crashes["simple"].finished,
            NAMES["simple"],
            digits=0,
            compare=False,
        ),
        Row(
            "drain",
            f"jobs/s, 1 in {CRASH_EVERY} segfaults",
            crashes["offload"].jobs_per_second,
            crashes["forking"].jobs_per_second,
            NAMES["forking"],
        ),
    ]
