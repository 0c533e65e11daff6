"""Capacity: jobs/s of one worker (Offload's, as deployed) by kind of task, and what each job
costs Redis; the figures docs/capacity.md builds on.

Each kind gets a fresh Redis server with N jobs queued, then the production worker command
with ``--max-jobs N`` (its default job slots); the rate comes from the jobs' own timestamps,
and for the no-op, Redis CPU and round trips per job from INFO (``used_cpu_user +
used_cpu_sys``, ``total_reads_processed``), minus what the same command costs to start and
stop on an empty queue: the marginal cost of a job. For slower jobs Redis's own clock-driven
work (its timers, the worker's blocking pops) spreads over fewer jobs and blurs the figure,
so it is shown for the no-op only; a job's Redis work does not depend on what it computes.
The kinds stand for the reference app's tasks:

- ``no-op``: the queue's own cost, the ceiling of any task;
- ``cpu 20 ms``: a CPU-bound task (``crunch_numbers``, ``generate_report``, inference);
- ``wait 100 ms``: an I/O-bound task waiting on a slow third party (``call_api``);
- ``mail``: one newsletter mail through Offload's mailer to a local SMTP server (aiosmtpd).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from rq import Queue

from bench import stack
from bench.drain import finished_jobs, start_stop_cost
from bench.options import Options, progress
from bench.report import Row, median


@dataclass(frozen=True)
class Kind:
    name: str
    function: str
    kwargs: dict
    jobs: int


KINDS = [
    Kind("no-op", "bench.jobs.noop", {}, 400),
    Kind("cpu 20 ms", "bench.jobs.spin", {"milliseconds": 20}, 100),
    Kind("wait 100 ms", "bench.jobs.wait", {"milliseconds": 100}, 40),
    Kind("mail", "bench.jobs.mail", {"to": "reader@example.org"}, 200),
]


@dataclass
class Measured:
    jobs_per_second: float
    cost: stack.RedisCost
    finished: int


@contextmanager
def _smtp_server() -> Iterator[str]:
    """A local aiosmtpd server that accepts every mail; yields its smtp:// URL."""
    from aiosmtpd.controller import Controller

    import dev

    class Accept:
        async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
            return "250 OK"

    port = dev.free_port()
    controller = Controller(Accept(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield f"smtp://127.0.0.1:{port}"
    finally:
        controller.stop()


def measure(kind: Kind, smtp_url: str, count: int) -> Measured:
    """Drain ``count`` jobs of ``kind`` with one production worker on a fresh Redis server."""
    kwargs = {**kind.kwargs, "smtp_url": smtp_url} if kind.name == "mail" else kind.kwargs
    with stack.stack() as processes:
        queue = stack.queue(processes.redis)
        queue.enqueue_many(
            [
                Queue.prepare_data(kind.function, kwargs=kwargs, result_ttl=3600, failure_ttl=3600, ttl=3600)
                for _ in range(count)
            ]
        )
        before = stack.redis_cost(processes.redis)
        worker = processes.start_worker(f"{stack.PRODUCTION_WORKER} --max-jobs {count}", wait=False)
        worker.wait(600)
        cost = stack.redis_cost(processes.redis) - before
        finished, span = finished_jobs(queue)
        if len(finished) < count:
            progress(f"capacity: only {len(finished)} of {count} {kind.name} jobs finished")
        return Measured(len(finished) / span if span else 0.0, cost, len(finished))


def run(options: Options) -> list[Row]:
    overhead = start_stop_cost(stack.PRODUCTION_WORKER)
    rows = []
    with _smtp_server() as smtp_url:
        for kind in KINDS:
            count = max(10, kind.jobs * options.drain_jobs // 400)
            runs = []
            for repetition in range(options.repeat):
                progress(f"capacity: {count} {kind.name} jobs (repetition {repetition + 1}/{options.repeat})")
                runs.append(measure(kind, smtp_url, count))
            rate = median([run.jobs_per_second for run in runs])
            rows.append(Row("capacity", f"jobs/s, one worker, {kind.name}", rate))
            if kind.name == "no-op":
                costs = [run.cost.per(count, overhead) for run in runs]
                cpu = median([cost.cpu_seconds for cost in costs]) * 1e6
                trips = median([cost.round_trips for cost in costs])
                rows.append(Row("capacity", "Redis CPU µs per job, no-op", cpu, digits=0))
                rows.append(Row("capacity", "Redis round trips per job, no-op", trips, digits=2))
                rows.append(
                    Row("capacity", "no-op jobs/s one Redis core carries (1 s / CPU per job)", 1e6 / cpu, digits=0)
                )
    return rows
