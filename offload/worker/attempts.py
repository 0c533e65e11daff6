"""Attempt records: each run of a job leaves ``{started_at, ended_at, outcome, worker, error}`` in
its meta, for the job page. The start is written with RQ's own "started" write
(:class:`OffloadJob`), the end with RQ's end-of-execution write (:class:`AttemptRecords`), and a
crash or a kill ends the running attempt with its reason (:meth:`AttemptRecords._end_attempt`)."""

from __future__ import annotations

import sys
import traceback
from datetime import UTC, datetime
from typing import Any

from rq.job import Job
from rq.timeouts import JobTimeoutException
from rq.utils import now, utcformat

from offload.jobs import error_line
from offload.legacy import CurrentPathsJob
from offload.worker.base import WorkerBase

STOPPED_ON_REQUEST = "stopped on request"
"""What a stopped job's last attempt says (the Stop button, or ``rq``'s stop-job command)."""


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def describe_failure(exc: BaseException | None, timeout: float | None) -> str:
    """Return the one line a user sees for a failed attempt."""
    if isinstance(exc, JobTimeoutException):
        return timed_out(timeout)
    if exc is None:
        return "failed"
    return error_line(traceback.format_exception_only(type(exc), exc)[-1])


def timed_out(timeout: float | None) -> str:
    return f"timed out after {int(timeout or 0)} s"


class OffloadJob(CurrentPathsJob):
    """RQ's job, which records the start of each attempt in the write that marks it started (and reads
    paths stored by earlier releases as they are now: offload/legacy.py)."""

    def prepare_for_execution(self, worker_name: str, pipeline) -> None:
        super().prepare_for_execution(worker_name, pipeline)
        attempts = self.meta.setdefault("attempts", [])
        # A retried start (Redis dropped the reply: outages.py) writes the same attempt again.
        started = getattr(self, "_offload_attempt", None)
        if started is None or not attempts or attempts[-1] is not started:
            started = {"started_at": now_iso(), "ended_at": None, "outcome": None, "worker": worker_name}
            attempts.append(started)
            self._offload_attempt = started
        pipeline.hset(self.key, "meta", self.serializer.dumps(self.meta))


class AttemptRecords(WorkerBase):
    """Worker mixin: ends each attempt in the write RQ makes when the task returns or raises."""

    def handle_execution_ended(self, job, queue, heartbeat_ttl) -> None:
        # Runs right after the task returns or raises, inside perform_job's except block on failure.
        attempts = job.meta.get("attempts") or [{"started_at": None}]
        attempt = attempts[-1]
        attempt["ended_at"] = now_iso()
        if job._status == "failed":
            attempt["outcome"] = "failed"
            attempt["error"] = describe_failure(sys.exc_info()[1], job.timeout)
        else:
            attempt["outcome"] = "finished"
        job.meta["attempts"] = attempts
        # What RQ's version does (end time, job heartbeat), with the meta in the same write.
        job.ended_at = job.last_heartbeat = now()
        mapping = {"last_heartbeat": utcformat(job.last_heartbeat), "meta": job.serializer.dumps(job.meta)}
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
        """End the job's running attempt with ``outcome`` and ``error``; return the meta (not yet saved)."""
        meta = job.get_meta(refresh=True)
        attempts = meta.get("attempts") or []
        if attempts and attempts[-1].get("outcome") is None:
            attempts[-1].update(ended_at=now_iso(), outcome=outcome, error=error)
        return meta
