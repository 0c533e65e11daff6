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


def run_until_released(key: str, limit: float = 120) -> str:
    """Keep working until the test sets Redis ``key`` (a job whose end the test decides)."""
    import time

    job = get_current_job()
    deadline = time.monotonic() + limit
    while not job.connection.exists(key):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{key} was never set")
        time.sleep(0.05)
    return "released"


def hang_on_first_attempt() -> str:
    """Never end on the first attempt (only a kill stops it); return "done" on a retry."""
    import time

    job = get_current_job()
    while len(job.meta.get("attempts", [])) <= 1:
        time.sleep(0.1)
    return f"done on attempt {len(job.meta['attempts'])}"
