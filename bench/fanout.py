"""Fan-out: 10,000 jobs enqueued by one request, against a bare ``enqueue_many``.

The figure is the time the submitting request takes, seen by its client. The baseline is
``Queue.enqueue_many`` of the same number of no-op jobs from a client process, on the same
Redis server, in the same run.

Each entry of ``FANOUTS`` is one way the app fans out: the newsletter (``POST
/api/newsletters`` with 10,000 recipients: each address validated, the batch stored, one job
per recipient in one RQ group), and the generic bulk submit of bench/webapp.py (each params
validated with the task's model, then ``enqueue_many``), which shows what the queue itself
costs. A new fan-out is one function here that sends the request and returns how many jobs
it enqueued.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from rq import Queue

from bench import stack
from bench.options import Options, progress
from bench.report import Row, at_most, median
from offload.web.auth import LOGIN_KEY_PREFIX


@dataclass(frozen=True)
class Fanout:
    """One way the app enqueues many jobs in one request."""

    name: str
    submit: Callable[[httpx.Client, int], int]
    """Send the one request that enqueues ``count`` jobs; return how many it enqueued."""


def generic_bulk_submit(http: httpx.Client, count: int) -> int:
    response = http.post("/bench/fanout", json={"task": "noop", "params": [{}] * count})
    response.raise_for_status()
    return response.json()["enqueued"]


def newsletter_submit(http: httpx.Client, count: int) -> int:
    recipients = [f"reader{number}@example.com" for number in range(count)]
    body = {"subject": "Benchmark", "body": "Hello,\nthis is a benchmark.", "recipients": recipients}
    response = http.post("/api/newsletters", json=body)
    response.raise_for_status()
    return response.json()["total"]


FANOUTS = [
    Fanout("POST /api/newsletters, the newsletter", newsletter_submit),
    Fanout("POST /bench/fanout, generic bulk submit", generic_bulk_submit),
]


def queued(processes: stack.Stack) -> int:
    """Jobs waiting in every queue."""
    return sum(processes.redis.llen(key) for key in processes.redis.scan_iter("rq:queue:*"))


def flush_jobs(processes: stack.Stack) -> None:
    """Delete every key but the operator's login (web/auth.py keeps it in Redis): a clean slate."""
    keep = set(processes.redis.scan_iter(f"{LOGIN_KEY_PREFIX}*"))
    doomed = [key for key in processes.redis.scan_iter(count=10_000) if key not in keep]
    for start in range(0, len(doomed), 10_000):
        processes.redis.delete(*doomed[start : start + 10_000])


def bare_enqueue_many(processes: stack.Stack, count: int) -> float:
    """Seconds ``Queue.enqueue_many`` takes for ``count`` no-op jobs, job preparation included."""
    started = time.perf_counter()
    stack.queue(processes.redis).enqueue_many([Queue.prepare_data(stack.NOOP) for _ in range(count)])
    return time.perf_counter() - started


def run(options: Options) -> list[Row]:
    count = options.fanout_jobs
    rows = []
    with stack.stack() as processes, httpx.Client(timeout=120) as http:
        http.base_url = processes.start_web()
        processes.log_in(http)  # the newsletter is for signed-in users (web/access.py)
        for fanout in FANOUTS:
            fanout.submit(http, 100)  # warm up the web processes
            requests: list[float] = []
            bare: list[float] = []
            for repetition in range(max(options.repeat, 3)):
                progress(f"fan-out: {fanout.name}, {count} jobs (repetition {repetition + 1})")
                flush_jobs(processes)
                started = time.perf_counter()
                enqueued = fanout.submit(http, count)
                requests.append(time.perf_counter() - started)
                if enqueued != count or queued(processes) != count:
                    raise RuntimeError(f"fan-out: {fanout.name} enqueued {enqueued}, expected {count}")
                flush_jobs(processes)
                bare.append(bare_enqueue_many(processes, count))
            rows.append(
                Row(
                    "fan-out",
                    f"s in the request, {count:,} jobs: {fanout.name}",
                    median(requests),
                    median(bare),
                    "bare enqueue_many",
                    "<= 1.5x",
                    at_most(1.5),
                    digits=3,
                )
            )
    return rows
