"""Attempt records: each run of a job that ends without finishing it (failed, timed out, crashed,
killed, stopped) is appended to the job's meta as ``{started_at, ended_at, outcome, worker, error}``,
for the job page: with RQ's end-of-execution write (:class:`AttemptRecords`), or, for a crash or
a kill, by the worker that saw it (:meth:`AttemptRecords._end_attempt`). The run under way and
the run that finished the job are the job's own fields, which RQ writes anyway: a job that
finishes first time costs no record (``offload.jobs.attempts`` reads both as one list).
"""

from __future__ import annotations

import sys
import traceback
from datetime import UTC, datetime
from typing import Any

from rq.job import Job
from rq.timeouts import JobTimeoutException
from rq.utils import as_text, now, str_to_date, utcformat

from offload.jobs import attempt_time, error_line
from offload.worker.base import WorkerBase

STOPPED_ON_REQUEST = "stopped on request"
"""What a stopped job's last attempt says (the Stop button, or ``rq``'s stop-job command)."""


def now_iso() -> str:
    return attempt_time(datetime.now(UTC)) or ""


def describe_failure(exc: BaseException | None, timeout: float | None) -> str:
    """Return the one line a user sees for a failed attempt."""
    if isinstance(exc, JobTimeoutException):
        return timed_out(timeout)
    if exc is None:
        return "failed"
    return error_line(traceback.format_exception_only(type(exc), exc)[-1])


def timed_out(timeout: float | None) -> str:
    return f"timed out after {int(timeout or 0)} s"


class AttemptRecords(WorkerBase):
    """Worker mixin: ends each attempt in the write RQ makes when the task returns or raises."""

    def handle_execution_ended(self, job, queue, heartbeat_ttl) -> None:
        # Runs right after the task returns or raises, inside perform_job's except block on failure.
        # What RQ's version does (end time, job heartbeat), plus a failed run's record in the same write.
        job.ended_at = job.last_heartbeat = now()
        # RQ's perform_job takes the start time again after the start was written, and stores it
        # only with the job's end (a retry's save, the success transaction). Write it with the
        # failed run's record: until RQ's end write, readers would otherwise see the record and a
        # run under way that started 2 ms earlier, as two attempts (offload.jobs.attempts).
        mapping = {"last_heartbeat": utcformat(job.last_heartbeat)}
        if job.started_at is not None:
            mapping["started_at"] = utcformat(job.started_at)
        if job._status == "failed":
            error = describe_failure(sys.exc_info()[1], job.timeout)
            job.meta["attempts"] = self._ended_runs(job.meta, job.started_at, job.worker_name, "failed", error)
            mapping["meta"] = job.serializer.dumps(job.meta)
        if self.hold_end_write(job, mapping):
            return  # sent with the end-of-execution write, in the same round trip (roundtrips.py)
        self._until_redis_answers(f"recording the end of job {job.id}", job.connection.hset, job.key, mapping=mapping)

    def handle_job_failure(self, job, queue, started_job_registry=None, exc_string="", execution=None):
        # A stopped job: RQ fails it without an end time and without touching its meta. Record
        # both, or its attempt would read "running" for ever (on the page and in the API).
        if self._stopped_job_id is not None and self._stopped_job_id == job.id:
            job.ended_at = now()
            self._until_redis_answers(f"recording the stop of job {job.id}", self._record_stop, job)
        super().handle_job_failure(job, queue, started_job_registry, exc_string, execution)

    def _record_stop(self, job: Job) -> None:
        meta = self._end_attempt(job, "stopped", STOPPED_ON_REQUEST)
        assert job.ended_at is not None
        job.connection.hset(job.key, mapping={"ended_at": utcformat(job.ended_at), "meta": job.serializer.dumps(meta)})

    def _end_attempt(self, job: Job, outcome: str, error: str) -> dict[str, Any]:
        """Record the job's run under way as ended with ``outcome`` and ``error``; return the meta
        (not yet saved). Reads the run's start and worker from Redis: a crash is seen by the worker,
        whose copy of the job may predate them."""
        raw_meta, raw_started, worker = job.connection.hmget(job.key, "meta", "started_at", "worker_name")
        meta = job.serializer.loads(raw_meta) if isinstance(raw_meta, bytes) else {}  # RQ's connections answer bytes
        started = str_to_date(raw_started) if raw_started else None
        meta["attempts"] = self._ended_runs(meta, started, as_text(worker) if worker else None, outcome, error)
        job.meta = meta
        return meta

    @staticmethod
    def _ended_runs(meta: dict[str, Any], started, worker: str | None, outcome: str, error: str) -> list[Any]:
        """The meta's run records with the run that started at ``started`` ended as ``outcome``."""
        runs = list(meta.get("attempts") or [])
        start = attempt_time(started)
        if runs and (runs[-1].get("outcome") is None or runs[-1].get("started_at") == start):
            # Already recorded (a retried write), or an earlier release's record of the run under way.
            runs[-1] = {**runs[-1], "ended_at": now_iso(), "outcome": outcome, "error": error}
        else:
            run = {"started_at": start, "ended_at": now_iso(), "outcome": outcome, "worker": worker, "error": error}
            runs.append(run)
        return runs
