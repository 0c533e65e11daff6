"""BullMQ (Node) as a drain baseline: one worker, concurrency 1, the same no-op job, on a fresh
Redis server like every other kind.

BullMQ lives in ``.bench-venv/bullmq``, installed on first use with ``npm ci`` from the pinned
``bench/bullmq/package-lock.json`` (again when that changes); the app never depends on it.
``bench/bullmq/bench.mjs`` queues the jobs (``enqueue N``) and runs the worker until N jobs
completed (``work N``). The rate comes from the jobs' own ``processedOn`` / ``finishedOn``
(ms); the Redis cost from the server's counters, minus what the worker costs to start and
stop on an empty queue. Skipped, with a message, where ``node`` and ``npm`` are missing.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

from bench import stack
from bench.options import progress

SOURCE = stack.ROOT / "bench" / "bullmq"
HOME = stack.ROOT / ".bench-venv" / "bullmq"
NAME = "BullMQ, concurrency 1 (Node)"


def available() -> bool:
    """True where node and npm are installed (the bench runs without BullMQ otherwise)."""
    return bool(shutil.which("node") and shutil.which("npm"))


def ensure_installed() -> Path:
    """Return the directory holding bench.mjs and its node_modules, installing them when needed."""
    lock = (SOURCE / "package-lock.json").read_bytes()
    digest = hashlib.sha256(lock + (SOURCE / "package.json").read_bytes()).hexdigest()
    stamp = HOME / ".bench-lock"
    HOME.mkdir(parents=True, exist_ok=True)
    if not stamp.exists() or stamp.read_text() != digest:
        progress(f"drain: installing the BullMQ baseline into {HOME.relative_to(stack.ROOT)} (first run)")
        for name in ("package.json", "package-lock.json"):
            shutil.copy(SOURCE / name, HOME / name)
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=HOME, check=True)
        stamp.write_text(digest)
    shutil.copy(SOURCE / "bench.mjs", HOME / "bench.mjs")  # beside its node_modules
    return HOME


def _node(processes: stack.Stack, *args: str, **env: str) -> subprocess.Popen:
    home = ensure_installed()
    return processes.spawn("bullmq", " ".join(["node", str(home / "bench.mjs"), *args]), **env)


def start_stop_cost() -> stack.RedisCost:
    """What the BullMQ worker costs Redis to start, find nothing to do, and stop."""
    with stack.stack() as processes:
        ensure_installed()
        before = stack.redis_cost(processes.redis)
        _node(processes, "work", "0").wait(60)
        return stack.redis_cost(processes.redis) - before


def drain(count: int, timeout: float = 300):  # type: ignore[no-untyped-def]
    """Queue ``count`` no-op jobs on a fresh Redis server and run them with one BullMQ worker."""
    from bench.drain import Drained

    with stack.stack() as processes:
        if _node(processes, "enqueue", str(count)).wait(120) != 0:
            processes.check_alive(processes.processes[-1], "bullmq")
        before = stack.redis_cost(processes.redis)
        worker = _node(processes, "work", str(count))
        try:
            worker.wait(timeout)
        except subprocess.TimeoutExpired:
            progress(f"drain: {NAME} did not finish {count} jobs in {timeout} s; stopped")
        cost = stack.redis_cost(processes.redis) - before
        times = _job_times(processes, count)
        span = (max(end for _, end in times) - min(start for start, _ in times)) / 1000 if times else 0.0
        return Drained(
            jobs_per_second=len(times) / span if span else 0.0, commands=cost.commands, finished=len(times), cost=cost
        )


def _job_times(processes: stack.Stack, count: int) -> list[tuple[int, int]]:
    """(processedOn, finishedOn) in ms of every completed job (ids 1..count, BullMQ's own)."""
    with processes.redis.pipeline(transaction=False) as pipe:
        for job_id in range(1, count + 1):
            pipe.hmget(f"bull:bench:{job_id}", "processedOn", "finishedOn")
        answers = pipe.execute()
    return [(int(start), int(end)) for start, end in answers if start and end]
