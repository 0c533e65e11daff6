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
from rq.worker.base import DequeueStrategy

from offload.worker.base import WorkerBase

REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
"""What a lost or restarting Redis raises; the worker waits these out instead of quitting."""

_T = TypeVar("_T")


class ExecutionAlreadyEnded(Exception):
    """A repeated end-of-execution write found the execution already ended: the earlier try committed."""


class RedisOutages(WorkerBase):
    """Worker mixin: waits Redis out at every step; retried steps are written once."""

    _stop_signalled: bool = False
    _ending_execution: str | None = None

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
                    "Worker %s: Redis unreachable while %s (%s); retrying in %.1f s",
                    self.name,
                    what,
                    exc,
                    delay,
                )
                time.sleep(delay)
                delay = min(delay * 2, 30.0)

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

    def cleanup_execution(self, job, pipeline, execution=None) -> None:
        # Called inside every end-of-execution transaction, once per try.
        if execution is not None:
            if self._ending_execution == execution.id and not self.connection.exists(execution.key):
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
