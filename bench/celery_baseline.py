"""Celery 5 as the drain baseline: ``--pool=solo`` (one process, jobs run in it), Redis broker
and Redis result backend, the same no-op job, on a fresh Redis server like each RQ kind.

Celery lives in a virtualenv of its own, ``.bench-venv/celery``, made on first use from the
pinned ``bench/requirements-celery.txt`` (remade when that file changes); the app never
depends on it. Celery has no ``--max-jobs``: the worker is stopped (SIGTERM, warm) once the
last task's result is stored; tasks run in queue order, so that one is last. Throughput
comes from the results' ``date_done`` (first to last, N - 1 intervals); the Redis cost
from the server's counters, minus what the worker sends to start and stop on an empty
queue, minus the bench's own polling.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import dev
from bench import stack
from bench.options import progress

VENV = stack.ROOT / ".bench-venv" / "celery"
REQUIREMENTS = stack.ROOT / "bench" / "requirements-celery.txt"
NAME = "Celery 5 --pool=solo"
WORKER = "{celery} -A bench.celery_app worker --pool=solo --concurrency=1 --loglevel=WARNING --hostname=bench@%h"


def ensure_venv() -> Path:
    """Return the Celery virtualenv's bin directory, creating it (or reinstalling) when needed."""
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    stamp = VENV / ".bench-requirements"
    python = VENV / "bin" / "python"
    if not python.exists() or not stamp.exists() or stamp.read_text() != digest:
        progress(f"drain: installing the Celery baseline into {VENV.relative_to(stack.ROOT)} (first run)")
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        pip = [str(python), "-m", "pip", "--disable-pip-version-check", "install", "--quiet"]
        subprocess.run([*pip, "-r", str(REQUIREMENTS)], check=True)
        stamp.write_text(digest)
    return VENV / "bin"


def _start(processes: stack.Stack, ready: Path) -> subprocess.Popen:
    """Start the Celery worker; return once it says it is ready (or has exited)."""
    bin_dir = ensure_venv()
    env = {"PATH": f"{bin_dir}:{processes.env['PATH']}", "BENCH_CELERY_READY_FILE": str(ready)}
    return processes.spawn("celery", WORKER.replace("{celery}", str(bin_dir / "celery")), **env)


def start_stop_cost() -> stack.RedisCost:
    """What the Celery worker costs Redis to start, find nothing to do, and stop."""
    with stack.stack() as processes:
        ready = processes.logs / "celery-ready"
        before = stack.redis_cost(processes.redis)
        worker = _start(processes, ready)
        dev.wait_for(lambda: worker.poll() is not None or ready.exists(), timeout=60, what="Celery to start")
        processes.check_alive(worker, "celery")
        stack.stop(worker)
        return stack.redis_cost(processes.redis) - before


def drain(count: int, timeout: float = 300):  # type: ignore[no-untyped-def]
    """Queue ``count`` no-op tasks on a fresh Redis server and run them with one Celery worker."""
    from bench.drain import Drained

    with stack.stack() as processes:
        bin_dir = ensure_venv()
        enqueued = subprocess.run(
            [str(bin_dir / "python"), "-m", "bench.celery_app", "enqueue", str(count)],
            cwd=stack.ROOT,
            env=processes.env,
            check=True,
            capture_output=True,
            text=True,
        )
        last_key = f"celery-task-meta-{enqueued.stdout.strip()}"
        ready = processes.logs / "celery-ready"
        before = stack.redis_cost(processes.redis)
        worker = _start(processes, ready)
        polls = 0

        def last_done() -> bool:
            nonlocal polls
            polls += 1
            return worker.poll() is not None or bool(processes.redis.exists(last_key))

        try:
            dev.wait_for(last_done, timeout=timeout, what=f"Celery to run {count} tasks")
        except TimeoutError:
            progress(f"drain: {NAME} did not finish {count} tasks in {timeout} s; stopped")
        processes.check_alive(worker, "celery")
        stack.stop(worker)
        # The polls (one EXISTS round trip each) were the bench's, not the worker's.
        cost = stack.redis_cost(processes.redis) - before
        cost = dataclasses.replace(cost, commands=cost.commands - polls, round_trips=cost.round_trips - polls)
        done = _finish_times(processes)
        span = (max(done) - min(done)).total_seconds() if len(done) > 1 else 0.0
        return Drained(
            jobs_per_second=(len(done) - 1) / span if span else 0.0,
            commands=cost.commands,
            finished=len(done),
            cost=cost,
        )


def _finish_times(processes: stack.Stack) -> list[datetime]:
    """When each successful task's result was stored (``date_done`` of its result)."""
    keys = list(processes.redis.scan_iter("celery-task-meta-*", count=1000))
    times = []
    for raw in processes.redis.mget(keys) if keys else []:
        meta = json.loads(raw)
        if meta["status"] == "SUCCESS":
            times.append(datetime.fromisoformat(meta["date_done"]))
    return times
