"""Settings and worker class for the stock ``rq worker`` command.

Run a worker exactly as production does::

    rq worker -c worker -w worker.OffloadWorker --with-scheduler

``-c worker`` makes RQ read ``REDIS_URL``, ``QUEUES`` and ``DICT_CONFIG`` below, which come
from the same environment as the web app (``settings.load``). ``-w worker.OffloadWorker``
adds what plain RQ lacks: JSON serialization whatever the command line says, the Flask app
built once per worker process (before any fork) with its context pushed around every
job, a record of each attempt in the job's meta for the job page, heavy libraries and
models preloaded before the first fork (``tasks.preload``), retry hints from a task's
exception (``retries.py``: a permanent error is never retried; a transient one says when),
and fault handling: a dead worker's jobs found within a minute and re-run, Redis outages
waited out instead of quitting, and jobs that are not JSON refused (SECURITY.md).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import redis.exceptions
from flask import Flask
from rq import Queue, Worker, worker_registration
from rq.defaults import (
    DEFAULT_JOB_MONITORING_INTERVAL,
    DEFAULT_LOGGING_DATE_FORMAT,
    DEFAULT_LOGGING_FORMAT,
    DEFAULT_MAINTENANCE_TASK_INTERVAL,
)
from rq.exceptions import NoSuchJobError, StopRequested
from rq.job import JobStatus
from rq.registry import clean_registries
from rq.serializers import JSONSerializer
from rq.timeouts import JobTimeoutException
from rq.utils import now
from rq.worker import WorkerStatus

import joblog
import retries
import settings
import tasks
from dev import redact
from metrics import JobMetricsMixin
from periodic import OffloadScheduler

_settings = settings.load()

# --- read by `rq worker -c worker` -------------------------------------------------
REDIS_URL = _settings["REDIS_URL"]
QUEUES = _settings["QUEUES"]
DICT_CONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "filters": {"redis_unreachable": {"()": "worker.RedisUnreachableFilter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["redis_unreachable"]}},
    "root": {"handlers": ["console"], "level": "INFO"},
    # fontTools logs a line per table of every font it subsets into a PDF.
    "loggers": {"fontTools": {"level": "WARNING"}},
}

REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
"""What a lost or restarting Redis raises; the worker waits these out instead of quitting."""

_T = TypeVar("_T")


class RedisUnreachableFilter(logging.Filter):
    """Turn ``rq worker``'s start-up connection error into one line that names Redis.

    The CLI logs a failed first connection as the bare exception ("Error 111 connecting to
    127.0.0.1:6379. Connection refused.", or a traceback for a timeout) and exits 1. This
    keeps the exit code and says what is wrong and where, without the password.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, redis.exceptions.RedisError):
            record.msg = (
                f"Redis at {redact(REDIS_URL)} is unreachable ({record.msg}); "
                "the worker exits 1 (is Redis running, and is REDIS_URL right?)"
            )
            record.args = None
            record.exc_info = record.exc_text = None
        return True


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


class PatientScheduler(OffloadScheduler):
    """The scheduler ``--with-scheduler`` runs (periodic jobs too), waiting out Redis outages:
    RQ's dies with a traceback, and the worker can only restart it once its lock has expired
    (61 s later), so scheduled jobs and retries would wait."""

    def work(self) -> None:
        self._install_signal_handlers()
        delay, born = 0.5, False
        while not self._stop_requested:
            try:
                if not born:
                    self.register_birth()
                    born = True
                if self.should_reacquire_locks:
                    self.acquire_locks()
                self.heartbeat()
                self.enqueue_scheduled_jobs()
                delay = 0.5
                time.sleep(self.interval)
            except REDIS_ERRORS as exc:
                self.log.warning("Scheduler %s: Redis unreachable (%s); retrying in %.1f s", self.name, exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 30.0)
        self.stop()


def _die_with_parent(parent_pid: int) -> None:
    """Have Linux SIGKILL this process when its parent dies (``prctl(PR_SET_PDEATHSIG)``)."""
    if not sys.platform.startswith("linux"):
        return
    pr_set_pdeathsig = 1
    if ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(1)


class OffloadWorker(JobMetricsMixin, Worker):
    """RQ's forking worker, with JSON jobs, the Flask app context, attempt records and each job's log,
    and the fault handling plain RQ lacks (the methods under "faults" below)."""

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
        # Without it, connecting to a vanished host waits for the kernel's TCP timeout (minutes).
        pool_kwargs = self.connection.connection_pool.connection_kwargs
        if pool_kwargs.get("socket_connect_timeout") is None:
            pool_kwargs["socket_connect_timeout"] = _settings["REDIS_CONNECT_TIMEOUT"]
        self._flask_app: Flask | None = None
        self._stop_signalled = False

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
        # RQ 3.0.0's own method, with a scheduler that also enqueues the periodic jobs (periodic.py)
        # and waits out Redis outages (PatientScheduler).
        self.scheduler = PatientScheduler(
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
        self._until_redis_answers(f"recording the start of job {job.id}", job.save_meta)
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
        what = f"recording the end of job {job.id}"
        self._until_redis_answers(what, job.save_meta)
        self._until_redis_answers(what, super().handle_execution_ended, job, queue, heartbeat_ttl)

    def handle_job_failure(self, job, queue, started_job_registry=None, exc_string="", execution=None):  # type: ignore[no-untyped-def]
        # In the work horse this runs inside perform_job's except block, before RQ decides on a retry.
        retries.apply_retry_hints(job, sys.exc_info()[1])
        super().handle_job_failure(job, queue, started_job_registry, exc_string, execution)

    # ------------------------------------------------------------------ faults
    #
    # A dead worker: its work horse dies with it (no job runs twice at once), its jobs are
    # found within a minute (heartbeat TTL and maintenance interval from settings, instead of
    # RQ's 60 s grace and 10 min), and every job gets CRASH_RERUNS more runs after a crash.
    # A lost Redis: every step waits for it with backoff instead of quitting (RQ quits, and
    # exits 0: rq #1933), and pubsub resubscribes on reconnect (redis-py's on_connect).

    def _until_redis_answers(self, what: str, action: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """Return ``action(...)``, retrying with backoff (one log line a try) while Redis is unreachable."""
        delay = 0.5
        while True:
            try:
                return action(*args, **kwargs)
            except REDIS_ERRORS as exc:
                if self._stop_signalled and not self.horse_pid and not self.is_horse:
                    raise StopRequested() from exc
                self.log.warning(
                    "Worker %s: Redis unreachable while %s (%s); retrying in %.1f s", self.name, what, exc, delay
                )
                time.sleep(delay)
                delay = min(delay * 2, 30.0)

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

    def setup_work_horse_signals(self) -> None:
        super().setup_work_horse_signals()
        # A horse outliving its worker would run on while maintenance re-runs its job elsewhere.
        _die_with_parent(self.pid or os.getppid())

    def clean_registries(self) -> None:
        # RQ's, with the crash re-runs granted first, under the same per-queue lock.
        for queue in self.queues:
            if queue.acquire_maintenance_lock():
                try:
                    self._settle_abandoned_jobs(queue)
                    self.log.info("Worker %s: cleaning registries for queue: %s", self.name, queue.name)
                    clean_registries(queue, self._exc_handlers)
                    worker_registration.clean_worker_registry(queue)
                    queue.intermediate_queue.cleanup(self, queue)
                finally:
                    queue.release_maintenance_lock()
        self.last_cleaned_at = now()

    def _settle_abandoned_jobs(self, queue: Queue) -> None:
        """Record the crash on each job whose worker stopped heartbeating; RQ's cleanup then retries or fails it."""
        for job_id in queue.started_job_registry.get_expired_job_ids():
            try:
                job = self.job_class.fetch(job_id, connection=self.connection, serializer=self.serializer)
            except NoSuchJobError:
                continue
            if job.get_status(refresh=False) != JobStatus.STARTED:
                continue
            self.log.warning("Worker %s: job %s was abandoned (its worker stopped heartbeating)", self.name, job.id)
            self._record_crash(job, "AbandonedJobError: its worker died or lost Redis while it ran")

    def handle_work_horse_killed(self, job, retpid, ret_val, rusage) -> None:  # type: ignore[no-untyped-def]
        if ret_val and os.WIFSIGNALED(ret_val):
            reason = f"its work horse was killed by {signal.Signals(os.WTERMSIG(ret_val)).name}"
        else:
            reason = f"its work horse exited unexpectedly (wait status {ret_val})"
        self._until_redis_answers(f"recording the crash of job {job.id}", self._record_crash, job, reason)
        super().handle_work_horse_killed(job, retpid, ret_val, rusage)

    def _record_crash(self, job, reason: str) -> None:  # type: ignore[no-untyped-def]
        """End the job's running attempt as crashed and, within CRASH_RERUNS, give the job one more run."""
        meta = job.get_meta(refresh=True)
        attempts = meta.get("attempts") or []
        if attempts and attempts[-1].get("outcome") is None:
            attempts[-1].update(ended_at=_now(), outcome="crashed", error=reason)
        granted = meta.get("crash_reruns", 0)
        if not job.retries_left and granted < _settings["CRASH_RERUNS"]:
            meta["crash_reruns"] = granted + 1
            job.retries_left, job.retry_intervals = 1, [0]
            self.connection.hset(job.key, mapping={"retries_left": 1, "retry_intervals": "[0]"})
        job.save_meta()

    def check_for_suspension(self, burst: bool) -> None:
        self._until_redis_answers("checking for suspension", super().check_for_suspension, burst)

    def run_maintenance_tasks(self) -> None:
        self._until_redis_answers("running maintenance", super().run_maintenance_tasks)

    def heartbeat(self, timeout: int | None = None, pipeline=None) -> None:  # type: ignore[no-untyped-def]
        if pipeline is not None:
            return super().heartbeat(timeout, pipeline)
        return self._until_redis_answers("sending a heartbeat", super().heartbeat, timeout)

    def set_state(self, state: str, pipeline=None) -> None:  # type: ignore[no-untyped-def]
        if pipeline is not None:
            return super().set_state(state, pipeline)
        return self._until_redis_answers(f"setting state {state}", super().set_state, state)

    def prepare_execution(self, job):  # type: ignore[no-untyped-def]
        def attempt():  # type: ignore[no-untyped-def]
            self.executions.clear()  # one job at a time: drop what a failed try left behind
            return Worker.prepare_execution(self, job)

        return self._until_redis_answers(f"starting job {job.id}", attempt)

    def prepare_job_execution(self, job, remove_from_intermediate_queue: bool = False) -> None:  # type: ignore[no-untyped-def]
        self._until_redis_answers(
            f"starting job {job.id}", super().prepare_job_execution, job, remove_from_intermediate_queue
        )

    def handle_job_success(self, job, queue, started_job_registry, execution) -> None:  # type: ignore[no-untyped-def]
        self._until_redis_answers(
            f"recording the success of job {job.id}",
            super().handle_job_success,
            job,
            queue,
            started_job_registry,
            execution,
        )

    def maintain_heartbeats(self, job, execution) -> None:  # type: ignore[no-untyped-def]
        try:
            super().maintain_heartbeats(job, execution)
        except REDIS_ERRORS as exc:
            # Keep watching the work horse; the next heartbeat is one interval away.
            self.log.warning("Worker %s: no heartbeat for job %s, Redis unreachable (%s)", self.name, job.id, exc)

    def execute_job(self, job, queue) -> None:  # type: ignore[no-untyped-def]
        from jobs import unreadable  # here: jobs imports ondemand, which imports this module

        refusal = unreadable(job)
        if refusal:
            # Pickled or forged: never decoded another way, never run; it fails with the reason.
            self.log.error("Worker %s: refused job %s: %s", self.name, job.id, refusal)
            queue.intermediate_queue.remove(job.id)
            self.handle_job_failure(job, queue, exc_string=f"Refused: {refusal} (Offload only runs JSON jobs)")
            return
        try:
            super().execute_job(job, queue)
        except REDIS_ERRORS as exc:
            # Only the bookkeeping after the horse ended gets here. A job that could not record
            # its end stays "started" until its heartbeat expires; maintenance then re-runs it.
            self.log.warning("Worker %s: Redis unreachable as job %s ended (%s)", self.name, job.id, exc)
            self._horse_pid = 0
            self.executions.clear()
            self.set_state(WorkerStatus.IDLE)

    def request_stop(self, signum, frame) -> None:  # type: ignore[no-untyped-def]
        self._stop_signalled = True
        try:
            super().request_stop(signum, frame)
        except REDIS_ERRORS:
            # RQ asks Redis whether we are busy; we know: stop after the job, or now.
            if not self.horse_pid:
                raise StopRequested() from None
            self._stop_requested = True

    def work(self, burst: bool = False, **kwargs: Any) -> bool:  # type: ignore[override]
        worked = super().work(burst, **kwargs)
        if not (burst or kwargs.get("max_jobs") or kwargs.get("max_idle_time") or self._stop_signalled):
            # RQ's loop quits on errors it does not handle and `rq worker` then exits 0, which
            # a supervisor reads as "done" (rq #1933). Exit 1 so the worker gets restarted.
            self.log.error("Worker %s: the work loop ended unexpectedly; exiting 1", self.name)
            sys.exit(1)
        return worked
