"""Retry hints: a task's exception decides its retries (``offload.retries``): a permanent error is
never retried, a transient one says when. An attempt that will be retried is a one-line warning;
only the final failure is an error with its traceback."""

from __future__ import annotations

import sys

from rq.job_lifecycle import call_exception_handlers

from offload import retries
from offload.worker.attempts import describe_failure
from offload.worker.base import WorkerBase


class RetryHints(WorkerBase):
    """Worker mixin: applies the hints of the exception a job raised before RQ decides on a retry."""

    def handle_exception(self, job, *exc_info) -> None:
        # RQ logs every failed attempt as an ERROR with its traceback, before it decides on a retry
        # (Worker._finalize_failure): in a soak most of those were attempts that later succeeded.
        exc = exc_info[1] if len(exc_info) > 1 else None
        if job.should_retry and not isinstance(exc, retries.PermanentError):
            self.log.warning(
                "Worker %s: job %s failed, will retry (%s left): %s",
                self.name,
                job.id,
                job.retries_left,
                describe_failure(exc, job.timeout),
            )
            call_exception_handlers(self._exc_handlers, job, *exc_info)  # what RQ's version also does
            return
        super().handle_exception(job, *exc_info)

    def handle_job_failure(self, job, queue, started_job_registry=None, exc_string="", execution=None):
        # In the job process this runs inside perform_job's except block, before RQ decides on a retry.
        retries.apply_retry_hints(job, sys.exc_info()[1])
        super().handle_job_failure(job, queue, started_job_registry, exc_string, execution)
