"""Settings and worker class for the stock ``rq worker`` command.

Run a worker exactly as production does::

    rq worker -c worker -w worker.OffloadWorker --with-scheduler

``-c worker`` makes RQ read ``REDIS_URL``, ``QUEUES`` and ``DICT_CONFIG`` below, which come
from the same environment as the web app (``settings.load``). ``-w worker.OffloadWorker``
adds what plain RQ lacks: JSON serialization whatever the command line says, the Flask app
built once per worker process (before any fork) with its context pushed around every
job, a record of each attempt in the job's meta for the job page, heavy libraries and
models preloaded before the first fork (``tasks.preload``), and retry hints from a task's
exception (``retries.py``: a permanent error is never retried; a transient one says when).
"""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from flask import Flask
from rq import Queue, Worker
from rq.defaults import (
    DEFAULT_JOB_MONITORING_INTERVAL,
    DEFAULT_LOGGING_DATE_FORMAT,
    DEFAULT_LOGGING_FORMAT,
    DEFAULT_MAINTENANCE_TASK_INTERVAL,
)
from rq.serializers import JSONSerializer
from rq.timeouts import JobTimeoutException

import joblog
import retries
import settings
import tasks
from metrics import JobMetricsMixin

_settings = settings.load()

# --- read by `rq worker -c worker` -------------------------------------------------
REDIS_URL = _settings["REDIS_URL"]
QUEUES = _settings["QUEUES"]
DICT_CONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": "INFO"},
    # fontTools logs a line per table of every font it subsets into a PDF.
    "loggers": {"fontTools": {"level": "WARNING"}},
}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def describe_failure(exc: BaseException | None, timeout: float | None) -> str:
    """Return the one line a user sees for a failed attempt."""
    if isinstance(exc, JobTimeoutException):
        return f"timed out after {int(timeout or 0)} s"
    if exc is None:
        return "failed"
    line = traceback.format_exception_only(type(exc), exc)[-1].strip()
    return line[:500]


class OffloadWorker(JobMetricsMixin, Worker):
    """RQ's forking worker, with JSON jobs, the Flask app context, attempt records and each job's log."""

    def __init__(self, queues: Sequence[str | Queue] | str | Queue, *args: Any, **kwargs: Any) -> None:
        # The CLI builds its queues with the serializer of its -S flag; rebuild them as JSON.
        if isinstance(queues, (str, Queue)):
            queues = [queues]
        names = [queue.name if isinstance(queue, Queue) else queue for queue in queues]
        kwargs["serializer"] = JSONSerializer
        # `rq worker` always passes RQ's defaults; those mean "not chosen", so Offload's apply.
        if kwargs.get("job_monitoring_interval", DEFAULT_JOB_MONITORING_INTERVAL) == DEFAULT_JOB_MONITORING_INTERVAL:
            kwargs["job_monitoring_interval"] = _settings["WORKER_HEARTBEAT_INTERVAL"]
        if kwargs.get("maintenance_interval", DEFAULT_MAINTENANCE_TASK_INTERVAL) == DEFAULT_MAINTENANCE_TASK_INTERVAL:
            kwargs["maintenance_interval"] = _settings["WORKER_MAINTENANCE_INTERVAL"]
        super().__init__(names, *args, **kwargs)
        self._flask_app: Flask | None = None

    @property
    def flask_app(self) -> Flask:
        """The Flask app, built once per worker process and inherited by each work horse."""
        if self._flask_app is None:
            from app import create_app

            self._flask_app = create_app()
        return self._flask_app

    def _start_scheduler(
        self,
        burst: bool = False,
        logging_level: str | None = "INFO",
        date_format: str = DEFAULT_LOGGING_DATE_FORMAT,
        log_format: str = DEFAULT_LOGGING_FORMAT,
    ) -> None:
        # RQ 3.0.0's own method, with a scheduler that also enqueues the periodic jobs (periodic.py).
        from periodic import OffloadScheduler

        self.scheduler = OffloadScheduler(
            self.queues,
            connection=self.connection,
            logging_level=logging_level if logging_level is not None else self.log.level,
            date_format=date_format,
            log_format=log_format,
            serializer=self.serializer,
            config=self.flask_app.config,
        )
        self.scheduler.acquire_locks()
        if self.scheduler.acquired_locks:
            if burst:
                try:
                    self.scheduler.register_birth()
                    self.scheduler.enqueue_scheduled_jobs()
                finally:
                    self.scheduler.release_locks()
                    self.scheduler.register_death()
            else:
                self.scheduler.start()

    def bootstrap(self, *args: Any, **kwargs: Any) -> None:
        _ = self.flask_app  # build before the first fork, so no job pays for it
        started = time.perf_counter()
        tasks.preload()  # every work horse inherits what this loads (copy-on-write)
        self.log.info("Worker %s: preloaded libraries and models in %.2f s", self.name, time.perf_counter() - started)
        super().bootstrap(*args, **kwargs)

    def perform_job(self, job, queue, execution) -> bool:  # type: ignore[no-untyped-def]
        attempts = job.meta.setdefault("attempts", [])
        attempts.append({"started_at": _now(), "ended_at": None, "outcome": None, "worker": self.name})
        job.save_meta()
        with self.flask_app.app_context(), joblog.capture(job, self.connection):
            return super().perform_job(job, queue, execution)

    def handle_execution_ended(self, job, queue, heartbeat_ttl) -> None:  # type: ignore[no-untyped-def]
        # Runs right after the task returns or raises, inside perform_job's except block on failure.
        attempts = job.meta.get("attempts") or [{"started_at": None}]
        attempt = attempts[-1]
        attempt["ended_at"] = _now()
        if job._status == "failed":
            attempt["outcome"] = "failed"
            attempt["error"] = describe_failure(sys.exc_info()[1], job.timeout)
        else:
            attempt["outcome"] = "finished"
        job.meta["attempts"] = attempts
        job.save_meta()
        super().handle_execution_ended(job, queue, heartbeat_ttl)

    def handle_job_failure(self, job, queue, started_job_registry=None, exc_string="", execution=None):  # type: ignore[no-untyped-def]
        # In the work horse this runs inside perform_job's except block, before RQ decides on a retry.
        retries.apply_retry_hints(job, sys.exc_info()[1])
        super().handle_job_failure(job, queue, started_job_registry, exc_string, execution)

    # ------------------------------------------------------------------ faults
    #
    # A dead worker's jobs are found within a minute (heartbeat TTL and maintenance interval
    # from settings, instead of RQ's 60 s grace and 10 min): what a deploy's SIGKILL after
    # kill_timeout needs (docs/deploy.md). Same code as the reliability branch's.

    @property
    def dequeue_timeout(self) -> int:
        # RQ blocks up to 405 s waiting for a job, and runs maintenance only between waits.
        return max(1, min(self.worker_ttl - 15, self.maintenance_interval))

    def get_heartbeat_ttl(self, job, working_time: float = 0.0) -> int:  # type: ignore[no-untyped-def]
        # RQ adds a fixed 60 s; two missed heartbeats are evidence enough that the worker died.
        interval = self.job_monitoring_interval
        if job.timeout and job.timeout > 0:
            return int(max(0, min(job.timeout - working_time, interval))) + 2 * interval
        return 3 * interval
