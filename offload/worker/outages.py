"""Redis outages, waited out: every step of the worker retries with backoff while Redis is
unreachable, instead of quitting (RQ quits, and ``rq worker`` then exits 0: rq #1933), and a
retried step is safe to repeat:

- a job's start (``prepare_execution``) first removes what an earlier try may have written, so
  no orphaned execution is later taken for an abandoned job;
- a run's record is written once (attempts.AttemptRecords: a retried write replaces it);
- the transaction that ends an execution (RQ's success, failure or retry write, which count,
  store a result, schedule a repeat) commits once: repeated after Redis dropped its reply, by
  RQ's WatchError loop or by ours, it first checks whether the execution's record is gone, i.e.
  whether the earlier try committed, and if so stops (:class:`ExecutionAlreadyEnded`).

A step is tried again every second (:data:`RETRY_EVERY`) however long the outage lasts, so it
goes through as soon as Redis answers: a job whose work ended during an outage has its end
written before its lease runs out (lease.py), where growing gaps (8 s, 16 s) once missed it.
Each step says so once when Redis stops answering, again as the outage goes on (after 4, 8,
16 ... s, then every minute), and once when it got through.

An outage longer than a job's heartbeat TTL is lease.py's concern.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis.exceptions
from rq.defaults import DEFAULT_LOGGING_DATE_FORMAT, DEFAULT_LOGGING_FORMAT
from rq.exceptions import StopRequested
from rq.utils import as_text
from rq.worker.base import DequeueStrategy

from offload.worker.base import WorkerBase

REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
"""What a lost or restarting Redis raises; the worker waits these out instead of quitting."""

_T = TypeVar("_T")


RETRY_EVERY = 1.0
"""Seconds between tries of a step while Redis does not answer (the first comes after half that)."""

_REPORT_AFTER_MAX = 60.0
"""Longest time between two lines saying Redis is still unreachable, for one step."""


_PUBSUB_OUTAGE_OVER = 30.0
"""Seconds without a failure after which the command channel's thread's next one starts a new
outage (a failed read comes back within a connect timeout, and the thread retries every second)."""


class ExecutionAlreadyEnded(Exception):
    """A repeated end-of-execution write found the execution already ended: the earlier try committed."""


class LeaseLost(Exception):
    """An end-of-execution write found the job's lease over, or too close to its end: another worker
    may take (or have taken) the job for abandoned, so nothing of this run is written (lease.py)."""


class OutageReport:
    """What one step says of one Redis outage, tried again every :data:`RETRY_EVERY` seconds: once
    when Redis stops answering, again as the outage goes on (after 4, 8, 16 ... s, then every
    minute), and once when it answers again. ``who`` starts each line, ``what`` follows "Redis"."""

    def __init__(self, log: logging.Logger, who: str, what: str = "") -> None:
        self.log, self.who, self.what = log, who, what
        self.failures = 0
        self.began = self.report_after = 0.0  # set by the first failure

    def failed(self, exc: BaseException) -> None:
        """A try failed on ``exc``: say so if it is the first, or if it is time to say it again."""
        now = time.monotonic()
        if not self.failures:
            self.began, self.report_after = now, 4.0  # seconds in: the next "still unreachable" line
            self.log.warning(
                "%s: Redis unreachable%s (%s); retrying every %.0f s", self.who, self.what, exc, RETRY_EVERY
            )
        elif now - self.began >= self.report_after:
            waited = now - self.began
            self.log.warning(
                "%s: Redis still unreachable after %.0f s%s (%s); retrying every %.0f s",
                self.who,
                waited,
                self.what,
                exc,
                RETRY_EVERY,
            )
            self.report_after = waited + min(waited, _REPORT_AFTER_MAX)
        self.failures += 1

    def answered(self) -> None:
        """A try got through: say so if the ones before it failed, and forget the outage."""
        if self.failures:
            self.log.info(
                "%s: Redis answered again after %.1f s (%d tries)%s",
                self.who,
                time.monotonic() - self.began,
                self.failures + 1,
                self.what,
            )
            self.failures = 0


class RedisOutages(WorkerBase):
    """Worker mixin: waits Redis out at every step; retried steps are written once."""

    _stop_signalled: bool = False
    _ending_execution: str | None = None
    _pubsub_outage: OutageReport | None = None
    _pubsub_failed_at: float = 0.0

    def _until_redis_answers(self, what: str, action: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """Return ``action(...)``, trying again every second while Redis is unreachable."""
        outage: OutageReport | None = None  # made on the first failure: this runs several times a job
        delay = RETRY_EVERY / 2
        while True:
            try:
                result = action(*args, **kwargs)
            except REDIS_ERRORS as exc:
                if self._stop_signalled and not self.horse_pid and not self.is_horse:
                    raise StopRequested() from exc
                outage = outage or OutageReport(self.log, f"Worker {self.name}", f" while {what}")
                outage.failed(exc)
                time.sleep(delay)
                delay = RETRY_EVERY
                continue
            if outage is not None:
                outage.answered()
            return result

    def _pubsub_exception_handler(self, exc, pubsub, pubsub_thread) -> None:
        """On the command channel's thread: RQ's says ERROR every 2 s of an outage; this waits it
        out as every other step does, and says it as they do."""
        if not isinstance(exc, REDIS_ERRORS):
            return super()._pubsub_exception_handler(exc, pubsub, pubsub_thread)
        now = time.monotonic()
        if self._pubsub_outage is None or now - self._pubsub_failed_at > _PUBSUB_OUTAGE_OVER:
            # The thread has read (1 s slices) since its last failure: that outage is over.
            self._pubsub_outage = OutageReport(self.log, f"Worker {self.name}", " on its command channel")
        self._pubsub_outage.failed(exc)
        time.sleep(RETRY_EVERY)
        self._pubsub_failed_at = time.monotonic()
        return None

    def check_for_suspension(self, burst: bool) -> None:
        self._until_redis_answers("checking for suspension", super().check_for_suspension, burst)

    def prepare_execution(self, job):
        prepare = super().prepare_execution

        def attempt():
            # One job at a time: what is here is what an earlier try may have written.
            for stale in list(self.executions.values()):
                with self.connection.pipeline() as pipeline:
                    stale.delete(job=job, pipeline=pipeline)
                    pipeline.execute()
                self.executions.pop(stale.id, None)
            return prepare(job)

        return self._until_redis_answers(f"starting job {job.id}", attempt)

    def prepare_job_execution(self, job, remove_from_intermediate_queue: bool = False) -> None:
        self._until_redis_answers(
            f"starting job {job.id}",
            super().prepare_job_execution,
            job,
            remove_from_intermediate_queue,
        )

    def handle_job_success(self, job, queue, started_job_registry, execution) -> None:
        try:
            self._until_redis_answers(
                f"recording the success of job {job.id}",
                super().handle_job_success,
                job,
                queue,
                started_job_registry,
                execution,
            )
        except ExecutionAlreadyEnded:
            self.log.warning(
                "Worker %s: the success of job %s was recorded by a try whose reply was lost",
                self.name,
                job.id,
            )
        except LeaseLost:
            self.log.error(
                "Worker %s: the success of job %s came too late to be recorded: its lease ran out while Redis "
                "was unreachable; it will run again as an abandoned job",
                self.name,
                job.id,
            )

    def cleanup_execution(self, job, pipeline, execution=None) -> None:
        # Called inside every end-of-execution transaction, once per try.
        if execution is not None:
            if self._ending_execution == execution.id and not self.connection.exists(execution.key):
                # Gone: the earlier try committed (the job ended), or the execution's lease ran out.
                status = self.connection.hget(job.key, "status")
                if status is not None and as_text(status) != "finished":
                    raise LeaseLost(execution.id)
                raise ExecutionAlreadyEnded(execution.id)
            self._ending_execution = execution.id
        super().cleanup_execution(job, pipeline, execution)

    def request_stop(self, signum, frame) -> None:
        self._stop_signalled = True
        try:
            super().request_stop(signum, frame)
        except REDIS_ERRORS:
            # RQ asks Redis whether we are busy; we know: stop after the job, or now.
            if not self.horse_pid:
                raise StopRequested() from None
            self._stop_requested = True

    def work(
        self,
        burst: bool = False,
        logging_level: str | None = None,
        date_format: str = DEFAULT_LOGGING_DATE_FORMAT,
        log_format: str = DEFAULT_LOGGING_FORMAT,
        max_jobs: int | None = None,
        max_idle_time: int | None = None,
        with_scheduler: bool = False,
        dequeue_strategy: DequeueStrategy = DequeueStrategy.DEFAULT,
    ) -> bool:
        worked = super().work(
            burst, logging_level, date_format, log_format, max_jobs, max_idle_time, with_scheduler, dequeue_strategy
        )
        if not (burst or max_jobs or max_idle_time or self._stop_signalled):
            # RQ's loop quits on errors it does not handle and `rq worker` then exits 0, which
            # a supervisor reads as "done" (rq #1933). Exit 1 so the worker gets restarted.
            self.log.error("Worker %s: the work loop ended unexpectedly; exiting 1", self.name)
            sys.exit(1)
        return worked
