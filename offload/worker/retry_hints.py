"""Retry hints: a task's exception decides its retries (``offload.retries``): a permanent error is
never retried, a transient one says when."""

from __future__ import annotations

import sys

from offload import retries
from offload.worker.base import WorkerBase


class RetryHints(WorkerBase):
    """Worker mixin: applies the hints of the exception a job raised before RQ decides on a retry."""

    def handle_job_failure(self, job, queue, started_job_registry=None, exc_string="", execution=None):
        # In the job process this runs inside perform_job's except block, before RQ decides on a retry.
        retries.apply_retry_hints(job, sys.exc_info()[1])
        super().handle_job_failure(job, queue, started_job_registry, exc_string, execution)
