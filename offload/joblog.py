"""A job's own log: what its task logged while it ran, kept in Redis next to the job.

The worker wraps each job in :func:`capture`, which adds a logging handler to the root
logger of the work horse (one job per process) and appends the records of the task's own
code (:func:`own_loggers`) to a Redis list: the last ``MAX_LINES`` lines of at most
``MAX_LINE_CHARS`` characters each. When the job ends the list takes the job's own expiry, so
it lives exactly as long as the job; the job page reads it with :func:`read`. Exceptions show
as their last line only: full tracebacks are for operators.

The job's log is shown to whoever may read the job (anyone, for a public task), so it keeps
only the loggers the task's code owns, never what the libraries under it say: httpx logs every
request with its full URL (``HTTP Request: POST http://10.0.0.5:8091/anything?...``), which
named ``call_api``'s internal THIRD_PARTY_URL to anonymous submitters. A list of libraries to
drop (httpx, httpcore, urllib3, smtplib...) would leak again with the next library or a new
logger name; keeping only the task's own loggers fails closed. Every record, the libraries'
included, still goes to the worker's own log (the operator's).
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager

from redis import Redis
from redis.exceptions import RedisError
from rq.job import Job

MAX_LINES = 200
"""Lines kept per job; older lines are dropped first."""

MAX_LINE_CHARS = 500
"""Longest line kept; longer ones are cut."""

RUNNING_TTL = 7 * 24 * 3600
"""Seconds the log lives while its job runs (then it takes the job's expiry)."""


WORKLOAD_LOGGERS = "offload.workloads"
"""Offload's workloads (``offload/workloads/``), which the reference app's tasks call: their
records are the task's own work (``crunch_numbers``' sieve says what it found)."""


def own_loggers(job: Job) -> tuple[str, ...]:
    """The loggers whose records are ``job``'s task's own: the top-level package of its function
    (``tasks`` for ``tasks.call_api``, ``myapp`` for ``myapp.jobs.send``) and Offload's workloads.

    A task's helpers in its own package log there (``logging.getLogger(__name__)``); a library is
    another top-level package, and RQ's own lines (``rq.worker``) are about the worker. The root
    logger is not the task's: libraries log there too. A function of Offload's own gets its
    workloads only, not the worker's lines (``offload.worker``) that share its package.
    """
    package = (job.func_name or "").partition(".")[0]
    return (package, WORKLOAD_LOGGERS) if package not in ("", "offload") else (WORKLOAD_LOGGERS,)


def log_key(job_id: str) -> str:
    """The Redis list holding the log of job ``job_id``."""
    return f"offload:job-log:{job_id}"


class _LineFormatter(logging.Formatter):
    """``time LEVEL logger: message``, plus an exception's last line; never a traceback."""

    converter = time.gmtime  # type: ignore[assignment]  # logging calls it with the record's time

    def format(self, record: logging.LogRecord) -> str:
        # Built here rather than by Formatter.format, which reuses a traceback another handler cached.
        moment = self.formatTime(record, "%Y-%m-%dT%H:%M:%S")
        line = f"{moment}Z {record.levelname} {record.name}: {record.getMessage()}"
        if record.exc_info and record.exc_info[1] is not None:
            line += "\n" + traceback.format_exception_only(record.exc_info[0], record.exc_info[1])[-1].strip()
        return line


class JobLogHandler(logging.Handler):
    """Appends the records of the loggers ``loggers`` (and their children) to a job's capped Redis list."""

    def __init__(self, connection: Redis, job_id: str, ttl: int, loggers: tuple[str, ...]) -> None:
        super().__init__(logging.INFO)
        self.connection = connection
        self.key = log_key(job_id)
        self.ttl = ttl
        self.loggers = loggers
        self._children = tuple(name + "." for name in loggers)
        self.setFormatter(_LineFormatter())
        self._local = threading.local()
        self.written = 0

    def filter(self, record: logging.LogRecord) -> bool:
        own = record.name in self.loggers or record.name.startswith(self._children)
        return own and super().filter(record)

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(self._local, "busy", False):  # a Redis error logged while writing: no recursion
            return
        self._local.busy = True
        try:
            line = self.format(record).strip()[:MAX_LINE_CHARS]
            pipe = self.connection.pipeline(transaction=False)
            pipe.rpush(self.key, line)
            pipe.ltrim(self.key, -MAX_LINES, -1)
            pipe.expire(self.key, self.ttl)
            pipe.execute()
            self.written += 1
        except RedisError:
            self.handleError(record)
        finally:
            self._local.busy = False


@contextmanager
def capture(job: Job, connection: Redis) -> Iterator[JobLogHandler]:
    """Record what is logged in this process while the block runs into ``job``'s log."""
    handler = JobLogHandler(connection, job.id, max(RUNNING_TTL, job.failure_ttl or 0), own_loggers(job))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        # A job that logged nothing (most) costs no round trip: a log an earlier attempt left
        # already has an expiry (RUNNING_TTL, or that attempt's job expiry).
        if handler.written:
            expire_with_job(connection, job)


def expire_with_job(connection: Redis, job: Job) -> None:
    """Give ``job``'s log the job's own remaining lifetime (none if the job has none)."""
    ttl = connection.ttl(job.key)
    if ttl > 0:
        connection.expire(log_key(job.id), ttl)
    elif ttl == -1:
        connection.persist(log_key(job.id))
    else:  # the job is already gone
        connection.delete(log_key(job.id))


def read(connection: Redis, job_id: str) -> list[str]:
    """Return the job's log lines, oldest first (empty if it logged nothing)."""
    return [line.decode("utf-8", "replace") for line in connection.lrange(log_key(job_id), 0, -1)]
