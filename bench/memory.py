"""Memory: resident memory of a web worker and of an idle worker, after some work.

``gunicorn app:app`` (production settings) answers a few hundred requests, and Offload's
worker (with its scheduler) runs a few dozen jobs; then each process's RSS, and its PSS
(its share of the pages it shares with its parent after fork), is read. The baseline is
stock ``rq worker --with-scheduler`` after the same jobs, for scale only: Offload's worker
preloads the ML model and the heavy libraries of its tasks before it forks (``tasks.preload``),
so its job process (and its scheduler) share those pages with it.
"""

from __future__ import annotations

import httpx
import psutil

import dev
from bench import stack
from bench.options import Options, progress
from bench.report import Row

MB = 1024 * 1024
JOBS = 50
REQUESTS = 300


def _memory(process: psutil.Process) -> tuple[float, float]:
    """RSS and PSS of ``process`` in MB (PSS is RSS where the OS cannot tell it)."""
    info = process.memory_full_info()
    return info.rss / MB, getattr(info, "pss", info.rss) / MB


def _worker_memory(processes: stack.Stack, pid: int) -> dict[str, tuple[float, float]]:
    """RSS and PSS of the worker, its scheduler and (Offload's) job process, by role."""
    schedulers = {int(processes.redis.hget(key, "pid") or 0) for key in processes.redis.scan_iter("rq:scheduler:*")}
    worker = psutil.Process(pid)
    figures = {"worker": _memory(worker)}
    for child in worker.children():
        figures["scheduler" if child.pid in schedulers else "job process"] = _memory(child)
    return figures


def _run_jobs(processes: stack.Stack, count: int) -> None:
    queue = stack.queue(processes.redis)
    for _ in range(count):
        queue.enqueue(stack.NOOP, result_ttl=600)
    dev.wait_for(lambda: queue.finished_job_registry.count >= count, timeout=30, what="jobs to finish")


def run(options: Options) -> list[Row]:
    progress(f"memory: {REQUESTS} requests and {JOBS} jobs, then RSS/PSS of each process")
    with stack.stack() as offload, stack.stack() as stock:
        base_url = offload.start_web(app="app:app")
        offload_worker = offload.start_worker(stack.PRODUCTION_WORKER, name="offload")
        stock_worker = stock.start_worker(stack.STOCK_SCHEDULER_WORKER, name="stock")
        _run_jobs(offload, JOBS)
        _run_jobs(stock, JOBS)
        with httpx.Client(base_url=base_url, timeout=10) as http:
            for index in range(REQUESTS):
                if index % 3 == 0:
                    http.post("/api/jobs", json={"task": "crunch_numbers", "params": {"limit": 1000}})
                else:
                    http.get("/api/tasks" if index % 3 == 1 else "/")
        assert offload.web is not None
        web = max((_memory(child) for child in psutil.Process(offload.web.pid).children()), key=lambda f: f[0])
        ours = _worker_memory(offload, offload_worker.pid)
        theirs = _worker_memory(stock, stock_worker.pid)

    rows = [
        Row("memory", "RSS MB, gunicorn worker (app:app)", web[0]),
        Row("memory", "PSS MB, gunicorn worker (app:app)", web[1]),
    ]
    for role in ("worker", "scheduler", "job process"):
        for index, kind in ((0, "RSS"), (1, "PSS")):
            baseline = theirs[role][index] if role in theirs else None
            rows.append(
                Row(
                    "memory",
                    f"{kind} MB, idle worker: {role}",
                    ours[role][index],
                    baseline,
                    "rq worker --with-scheduler (no preload)" if baseline is not None else "",
                    compare=False,  # Offload's workers preload the model and libraries (tasks.preload)
                )
            )
    return rows
