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


class ExecutionAlreadyEnded(Exception):
    """A repeated end-of-execution write found the execution already ended: the earlier try committed."""


class LeaseLost(Exception):
    """An end-of-execution write found the job's lease over, or too close to its end: another worker
    may take (or have taken) the job for abandoned, so nothing of this run is written (lease.py)."""


class RedisOutages(WorkerBase):
    """Worker mixin: waits Redis out at every step; retried steps are written once."""

    _stop_signalled: bool = False
    _ending_execution: str | None = None

    def _until_redis_answers(self, what: str, action: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """Return ``action(...)``, trying again every second while Redis is unreachable."""
        began = time.monotonic()
        delay = RETRY_EVERY / 2
        report_after = 4.0  # seconds into the outage of the next "still unreachable" line
        failed = 0
        while True:
            try:
                result = action(*args, **kwargs)
            except REDIS_ERRORS as exc:
                if self._stop_signalled and not self.horse_pid and not self.is_horse:
                    raise StopRequested() from exc
                failed += 1
                waited = time.monotonic() - began
                if failed == 1:
                    self.log.warning(
                        "Worker %s: Redis unreachable while %s (%s); retrying every %.0f s",
                        self.name,
                        what,
                        exc,
                        RETRY_EVERY,
                    )
                elif waited >= report_after:
                    self.log.warning(
                        "Worker %s: Redis still unreachable after %.0f s while %s (%s); retrying every %.0f s",
                        self.name,
                        waited,
                        what,
                        exc,
                        RETRY_EVERY,
                    )
                    report_after = waited + min(waited, _REPORT_AFTER_MAX)
                time.sleep(delay)
                delay = RETRY_EVERY
                continue
            if failed:
                self.log.info(
                    "Worker %s: Redis answered again after %.1f s (%d tries) while %s",
                    self.name,
                    time.monotonic() - began,
                    failed + 1,
                    what,
                )
            return result

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
