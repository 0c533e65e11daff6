"""Slots: I/O-bound jobs through one worker with 1 and with 8 slots (WORKER_SLOTS).

Each job waits 100 ms on a local HTTP server (as ``call_api`` waits on a third party). The
worker runs as deployed, with ``--burst``, on a fresh Redis server holding the jobs; throughput
comes from the jobs' own timestamps (first start to last end). Then a worker with 8 slots that
has run some jobs is measured: the PSS of each extra slot (its worker and its job process, both
forked after the preload, so they share its pages).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psutil
from rq import Worker

import dev
from bench import stack
from bench.options import Options, progress
from bench.report import Row, at_least, median

WAIT = 0.1
"""Seconds the HTTP server takes to answer each job."""
SLOTS = 8
JOBS_PER_SLOT = 25
MB = 1024 * 1024


class _SlowHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        time.sleep(WAIT)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def slow_server() -> Iterator[str]:
    """A local HTTP server answering every GET after WAIT seconds; yield its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlowHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()


def _enqueue(processes: stack.Stack, url: str, count: int) -> list[str]:
    queue = stack.queue(processes.redis)
    jobs = queue.enqueue_many(
        [
            queue.prepare_data("bench.jobs.fetch", (url,), result_ttl=3600, failure_ttl=3600, ttl=3600)
            for _ in range(count)
        ]
    )
    return [job.id for job in jobs]


def throughput(slots: int, url: str) -> float:
    """Jobs per second of one worker with ``slots`` slots draining WAIT-long I/O jobs."""
    count = JOBS_PER_SLOT * slots
    with stack.stack() as processes:
        ids = _enqueue(processes, url, count)
        worker = processes.spawn("worker", f"{stack.PRODUCTION_WORKER} --burst", WORKER_SLOTS=str(slots))
        worker.wait(300)
        queue = stack.queue(processes.redis)
        jobs = [job for job in queue.job_class.fetch_many(ids, queue.connection, queue.serializer) if job]
        finished = [job for job in jobs if job.get_status(refresh=False) == "finished"]
        if len(finished) < count:
            progress(f"slots: only {len(finished)} of {count} jobs finished with {slots} slot(s)")
        if len(finished) < 2:
            return 0.0
        span = (max(job.ended_at for job in finished) - min(job.started_at for job in finished)).total_seconds()
        return len(finished) / span


def pss_per_extra_slot(url: str) -> tuple[float, float]:
    """PSS (MB) of slot 1 (worker + job process) and the mean PSS of each other slot, after some jobs."""
    with stack.stack() as processes:
        worker = processes.spawn("worker", stack.PRODUCTION_WORKER, WORKER_SLOTS=str(SLOTS))
        dev.wait_for(lambda: len(Worker.all(connection=processes.redis)) == SLOTS, timeout=30, what=f"{SLOTS} slots")
        ids = _enqueue(processes, url, SLOTS * 4)
        queue = stack.queue(processes.redis)
        dev.wait_for(lambda: queue.finished_job_registry.count >= len(ids), timeout=120, what="the jobs to finish")
        pids = {w.pid for w in Worker.all(connection=processes.redis)}
        redis = processes.redis
        schedulers = {int(redis.hget(key, "pid") or 0) for key in redis.scan_iter("rq:scheduler:*")}
        main = psutil.Process(worker.pid)
        per_slot: dict[int, float] = {}
        for process in [main, *main.children(recursive=True)]:
            owner = process.pid if process.pid in pids else process.ppid()
            if owner not in pids or process.pid in schedulers:
                continue
            per_slot[owner] = per_slot.get(owner, 0.0) + process.memory_full_info().pss / MB
        first = per_slot.pop(worker.pid)
        return first, median(list(per_slot.values())) if per_slot else 0.0


def run(options: Options) -> list[Row]:
    rates: dict[int, list[float]] = {1: [], SLOTS: []}
    with slow_server() as url:
        for repetition in range(options.repeat):
            for slots in rates:
                progress(
                    f"slots: {slots} slot(s), {JOBS_PER_SLOT * slots} jobs waiting {WAIT * 1000:.0f} ms on HTTP "
                    f"(repetition {repetition + 1}/{options.repeat})"
                )
                rates[slots].append(throughput(slots, url))
        progress(f"slots: PSS of a worker with {SLOTS} slots")
        first, extra = pss_per_extra_slot(url)
    return [
        Row(
            "slots",
            f"jobs/s, 100 ms HTTP wait, one worker with {SLOTS} slots",
            median(rates[SLOTS]),
            median(rates[1]),
            "the same worker, 1 slot",
            f">= {SLOTS - 1}x",
            at_least(SLOTS - 1),
        ),
        Row(
            "slots",
            "PSS MB per extra slot (its worker + job process)",
            extra,
            first,
            "slot 1 (worker + job process)",
            compare=False,
        ),
    ]
