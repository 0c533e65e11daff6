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


def report_pid() -> int:
    """Return the id of the process the job ran in."""
    import os

    return os.getpid()


def segfault() -> None:
    """Die the way a buggy C extension does: SIGSEGV."""
    import os
    import signal

    os.kill(os.getpid(), signal.SIGSEGV)


def exit_abruptly() -> None:
    """Leave the process at once, skipping every cleanup, as os._exit does."""
    import os

    os._exit(3)


def hold_memory(megabytes: int) -> int:
    """Touch ``megabytes`` of memory (raising the process's peak RSS), then return its pid."""
    import os

    block = bytearray(megabytes * 1024 * 1024)
    block[::4096] = b"x" * len(range(0, len(block), 4096))
    return os.getpid()
