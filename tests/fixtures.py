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


def sleep_for(seconds: float) -> str:
    """Sleep ``seconds`` (a job that outlives a short timeout), then return "woke up"."""
    import time

    time.sleep(seconds)
    return "woke up"
