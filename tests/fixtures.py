"""Job functions only the tests use; workers import them as ``tests.fixtures.<name>``."""

from __future__ import annotations

import os

from rq import Queue, get_current_job
from rq.job import Job

from offload.jobs import attempts as job_attempts
from offload.worker import OffloadJob


def fail_with(message: str) -> None:
    """Fail at once with ``message``."""
    raise RuntimeError(message)


def count_attempts_then_fail(message: str) -> None:
    """Fail every time; the attempts the worker records tell when each ran."""
    job = get_current_job()
    raise RuntimeError(f"{message} (attempt {len(job_attempts(job))})")


def wait_in_failure_callback(job: Job, connection, *exc_info) -> None:
    """An ``on_failure`` callback that holds the job between its failed run's record and RQ's
    failure write: it says so on ``<job id>:failing`` and waits for ``<job id>:go-on``."""
    connection.rpush(f"{job.id}:failing", 1)
    connection.blpop([f"{job.id}:go-on"], timeout=30)


def burn_cpu(seconds: float) -> str:
    """Busy-loop for ``seconds`` of wall time (real work, not sleep), then return "done"."""
    import time

    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        n += 1
    return "done"


def run_until_released(key: str, limit: float = 120) -> str:
    """Keep working until the test sets Redis ``key`` (a job whose end the test decides); a
    ``key`` no test sets makes a job that runs until it is stopped, timed out or ``limit``."""
    import dev

    job = get_current_job()
    dev.wait_for(lambda: job.connection.exists(key), timeout=limit, what=f"{key} to be set")
    return "released"


def hang_on_first_attempt() -> str:
    """Never end on the first attempt (only a kill stops it); return "done" on a retry."""
    import threading

    job = get_current_job()
    if len(job_attempts(job)) <= 1:
        threading.Event().wait()  # set by nobody: only a signal ends the first attempt
    return f"done on attempt {len(job_attempts(job))}"


def block_until_released(key: str, timeout: int = 60, label: str = "") -> str:
    """Wait (without using CPU) until a test pushes to ``key``; keeps a worker busy meanwhile."""
    job = get_current_job()
    released = job.connection.blpop([key], timeout=timeout)
    return "released" if released else "timed out"


def log_lines(count: int, text: str = "line") -> str:
    """Log ``count`` numbered lines through a module logger, as a task would, then fail if text says so."""
    import logging

    log = logging.getLogger("tests.fixtures")
    for number in range(count):
        log.info("%s %d", text, number)
    try:
        raise ValueError(f"{text} handled")
    except ValueError:
        log.exception("caught one")
    if text == "fail":
        raise RuntimeError("failing after logging")
    return "logged"


def step_progress(key: str, steps: int) -> int:
    """Move progress one step each time a test pushes to ``key``, logging each step; return ``steps``."""
    import logging

    from offload import report_progress

    job = get_current_job()
    for step in range(1, steps + 1):
        if not job.connection.blpop([key], timeout=60):
            raise TimeoutError(f"step {step} was never released")
        logging.getLogger("tests.fixtures").info("step %d of %d", step, steps)
        report_progress(step / steps)
    return steps


def echo(value: object) -> object:
    """Return ``value`` unchanged (as the job's result)."""
    return value


def environment_variable(name: str) -> str | None:
    """The job process's value of the environment variable ``name`` (None when it has none)."""
    return os.environ.get(name)


def log_and_fail(message: str) -> None:
    """Log ``message``, then fail with it."""
    import logging

    logging.getLogger("tests.fixtures").warning("about to fail: %s", message)
    raise RuntimeError(message)


def record_run(ledger: str, seconds: float = 0.0) -> str:
    """Count this run in ``<ledger>:runs``, note who runs it since when, work ``seconds``, then
    count a completion in ``<ledger>:done`` (see tests.faults.Ledger)."""
    import json
    import os
    import time

    from redis.backoff import ConstantBackoff
    from redis.exceptions import ConnectionError, TimeoutError
    from redis.retry import Retry

    job = get_current_job()
    redis = job.connection
    # The ledger waits out a Redis outage (up to a minute): it measures the queue, not itself.
    outage = Retry(ConstantBackoff(0.2), retries=300, supported_errors=(ConnectionError, TimeoutError))

    def write(command, *args):
        return outage.call_with_retry(lambda: command(*args), lambda error: None)

    # Each run writes fields named after itself, not counters: a write retried after Redis went
    # away with the reply unsent (it may have run it) then counts once, not twice.
    run = f"{job.id}/{os.urandom(8).hex()}"
    write(redis.hset, f"{ledger}:runs", run, 1)
    if seconds:
        running = {"pid": os.getpid(), "worker_pid": os.getppid(), "since": time.time()}
        write(redis.hset, f"{ledger}:running", job.id, json.dumps(running))
        burn_cpu(seconds)
    write(redis.hset, f"{ledger}:done", run, 1)
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


def ignore_timeout(key: str, limit: float) -> str:
    """Hang past the job's timeout until the test sets ``key`` (or ``limit``): SIGALRM (RQ's
    timeout) is blocked, as in a long C call."""
    import signal

    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    run_until_released(key, limit)
    return "never timed out"


class OwnJob(OffloadJob):
    """A job class of the app's own, built on Offload's: ``--job-class`` accepts it."""


class PlainJob(Job):
    """A job class built on RQ's alone: ``--job-class`` refuses it."""


class PlainQueue(Queue):
    """A queue class built on RQ's alone: ``--queue-class`` refuses it."""
