"""Job functions only the tests use; workers import them as ``tests.fixtures.<name>``."""

from __future__ import annotations

from rq import get_current_job


def fail_with(message: str) -> None:
    """Fail at once with ``message``."""
    raise RuntimeError(message)


def count_attempts_then_fail(message: str) -> None:
    """Fail every time; the attempts the worker records tell when each ran."""
    job = get_current_job()
    raise RuntimeError(f"{message} (attempt {len(job.meta.get('attempts', []))})")


def burn_cpu(seconds: float) -> str:
    """Busy-loop for ``seconds`` of wall time (real work, not sleep), then return "done"."""
    import time

    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        n += 1
    return "done"


def record_run(ledger: str, seconds: float = 0.0) -> str:
    """Count this run in ``<ledger>:runs``, note who runs it since when, work ``seconds``, then
    count a completion in ``<ledger>:done`` (see tests.faults.Ledger)."""
    import json
    import os
    import time

    from redis.exceptions import ConnectionError, TimeoutError

    job = get_current_job()
    redis = job.connection

    def write(command, *args):  # the ledger waits out a Redis outage: it measures the queue, not itself
        deadline = time.monotonic() + 60
        while True:
            try:
                return command(*args)
            except (ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    write(redis.hincrby, f"{ledger}:runs", job.id, 1)
    if seconds:
        running = {"pid": os.getpid(), "worker_pid": os.getppid(), "since": time.time()}
        write(redis.hset, f"{ledger}:running", job.id, json.dumps(running))
        burn_cpu(seconds)
    write(redis.hincrby, f"{ledger}:done", job.id, 1)
    return "done"
