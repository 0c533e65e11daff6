"""Drain: N no-op jobs through one worker process of each kind, from a full queue.

Each run gets a fresh Redis server holding N queued no-op jobs; the worker is started
(not in burst mode, as deployed) with ``--max-jobs N`` and exits when done. Throughput
comes from the jobs' own timestamps (first start to last end), so start-up is left out;
Redis commands, round trips (read events) and CPU per job come from the server's INFO
counters, minus what the same command costs to start and stop on an empty queue (measured
once per kind). Celery 5 (``--pool=solo``, Redis broker and result backend) runs the same
no-op job in the same run as the baseline (bench/celery_baseline.py).

A second pass mixes in jobs that crash (SIGSEGV): every other job must still finish.
"""

from __future__ import annotations

import random
import subprocess
from dataclasses import astuple, dataclass

from rq import Queue

from bench import bullmq_baseline, celery_baseline, stack
from bench.options import Options, progress
from bench.report import Row, at_least, at_most, median

WORKERS = {
    "offload": stack.PRODUCTION_WORKER,
    "forking": stack.STOCK_FORKING_WORKER,
    "simple": stack.STOCK_SIMPLE_WORKER,
}
NAMES = {
    "offload": "Offload worker",
    "forking": "rq worker (forking)",
    "simple": "rq worker SimpleWorker",
    "celery": celery_baseline.NAME,
}
if bullmq_baseline.available():
    NAMES["bullmq"] = bullmq_baseline.NAME
BASELINES = {"celery": celery_baseline, "bullmq": bullmq_baseline}
"""The baselines that are not ``rq worker`` commands: each has its own drain and start/stop cost."""
CRASH_EVERY = 50


@dataclass
class Drained:
    jobs_per_second: float
    commands: int
    finished: int
    cost: stack.RedisCost


def drain(command: str, count: int, crash_every: int | None = None, timeout: float = 300) -> Drained:
    """Run ``command --max-jobs count`` over ``count`` queued jobs on a fresh Redis server."""
    with stack.stack() as processes:
        queue = stack.queue(processes.redis)
        jobs = stack.noop_jobs(count)
        if crash_every:
            for index in range(crash_every - 1, count, crash_every):
                jobs[index] = Queue.prepare_data("bench.jobs.crash", result_ttl=3600, failure_ttl=3600)
        queue.enqueue_many(jobs)
        before = stack.redis_cost(processes.redis)
        worker = processes.start_worker(f"{command} --max-jobs {count}", wait=False)
        try:
            worker.wait(timeout)
        except subprocess.TimeoutExpired:
            progress(f"drain: {command!r} did not finish {count} jobs in {timeout} s; stopped")
        cost = stack.redis_cost(processes.redis) - before
        finished, span = finished_jobs(queue)
        return Drained(
            jobs_per_second=len(finished) / span if span else 0.0,
            commands=cost.commands,
            finished=len(finished),
            cost=cost,
        )


def finished_jobs(queue: Queue) -> tuple[list, float]:
    """Return ``queue``'s finished jobs and the seconds from the first start to the last end."""
    ids = queue.finished_job_registry.get_job_ids()
    finished = [job for job in queue.job_class.fetch_many(ids, queue.connection, queue.serializer) if job]
    span = 0.0
    if len(finished) > 1:
        span = (max(job.ended_at for job in finished) - min(job.started_at for job in finished)).total_seconds()
    return finished, span


def start_stop_cost(command: str) -> stack.RedisCost:
    """What ``command`` costs Redis to start, find nothing to do, and stop."""
    with stack.stack() as processes:
        before = stack.redis_cost(processes.redis)
        # Stock rq sometimes takes a minute to exit: its unsubscribe waits out the pub/sub thread's
        # 60 s read (redis-py 8.2; offload/worker/holds.py reads in 1 s slices instead).
        processes.start_worker(f"{command} --burst", wait=False).wait(120)
        return stack.redis_cost(processes.redis) - before


def run(options: Options) -> list[Row]:
    count = options.drain_jobs
    overhead = {kind: start_stop_cost(command) for kind, command in WORKERS.items()}
    for kind, baseline in BASELINES.items():
        if kind in NAMES:
            overhead[kind] = baseline.start_stop_cost()
    runs: dict[str, list[Drained]] = {kind: [] for kind in NAMES}
    for repetition in range(options.repeat):
        order = list(NAMES)
        random.shuffle(order)  # no kind always runs first (or last) on a noisy machine
        for kind in order:
            progress(f"drain: {NAMES[kind]}, {count} jobs (repetition {repetition + 1}/{options.repeat})")
            runs[kind].append(BASELINES[kind].drain(count) if kind in BASELINES else drain(WORKERS[kind], count))

    def rate(kind: str) -> float:
        return median([run.jobs_per_second for run in runs[kind]])

    def per_job(kind: str) -> stack.RedisCost:
        """Each of RedisCost's figures per job, the median of the runs (each median on its own)."""
        costs = [run.cost.per(count, overhead[kind]) for run in runs[kind]]
        return stack.RedisCost(*(median(list(values)) for values in zip(*map(astuple, costs), strict=True)))  # type: ignore[arg-type]

    crashes: dict[str, Drained] = {}
    for kind in WORKERS:
        progress(f"drain: {NAMES[kind]}, {count} jobs, 1 in {CRASH_EVERY} crashing")
        crashes[kind] = drain(WORKERS[kind], count, crash_every=CRASH_EVERY, timeout=120)
    healthy = count - count // CRASH_EVERY

    offload = rate("offload")
    cost = {kind: per_job(kind) for kind in NAMES}
    rows = [
        Row("drain", "jobs/s, one worker process", offload, rate("forking"), NAMES["forking"], ">= 4x", at_least(4.0)),
        Row("drain", "jobs/s, one worker process", offload, rate("simple"), NAMES["simple"], ">= 1.2x", at_least(1.2)),
        Row("drain", "jobs/s, one worker process", offload, rate("celery"), NAMES["celery"], ">= 2x", at_least(2.0)),
    ]
    others = [kind for kind in NAMES if kind != "offload"]
    if "bullmq" in NAMES:
        rows.append(Row("drain", "jobs/s, one worker process", offload, rate("bullmq"), NAMES["bullmq"]))
    for kind in others:
        rows.append(Row("drain", "Redis commands per job", cost["offload"].commands, cost[kind].commands, NAMES[kind]))
    for kind in others:
        target = ("<= 3 (abs.)", lambda _: cost["offload"].round_trips <= 3) if kind == "celery" else ("", None)
        rows.append(
            Row(
                "drain",
                "Redis round trips per job",
                cost["offload"].round_trips,
                cost[kind].round_trips,
                NAMES[kind],
                *target,
            )
        )
    for kind in others:
        target = ("<= 0.5x", at_most(0.5)) if kind == "celery" else ("", None)
        us = {name: cost[name].cpu_seconds * 1e6 for name in (kind, "offload")}
        rows.append(Row("drain", "Redis CPU µs per job", us["offload"], us[kind], NAMES[kind], *target, digits=0))
    for kind in others:
        # What the data written costs on its own: the floor under "Redis CPU" for any way of sending it.
        us = {name: cost[name].command_seconds * 1e6 for name in (kind, "offload")}
        measure = "Redis µs per job in the commands alone"
        rows.append(Row("drain", measure, us["offload"], us[kind], NAMES[kind], digits=0))
    return [
        *rows,
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
