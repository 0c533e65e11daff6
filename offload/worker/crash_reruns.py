"""Crash re-runs: a job whose work horse died, or whose worker died (found by its expired
heartbeat), gets CRASH_RERUNS more runs, with the crash recorded in its attempts.

A dead worker's jobs are found within a minute: the heartbeat TTL here and the maintenance
interval from settings, instead of RQ's 60 s grace and 10 min (maintenance.py). A deliberate kill
of the job process is not a crash: RQ's kill-horse command, or the hard kill of a job that
outlived its timeout by 60 s, fails the job with that reason (RQ's ``Retry`` still applies, as
for any failure), and no crash re-run is granted.
"""

from __future__ import annotations

import os
import signal

from rq.exceptions import NoSuchJobError
from rq.job import JobStatus
from rq.queue import Queue
from rq.utils import now
from rq.worker import SHUTDOWN_SIGNAL

from offload.worker.attempts import timed_out
from offload.worker.base import WorkerBase


class CrashReruns(WorkerBase):
    """Worker mixin: heartbeat TTL, crash records and re-runs, deliberate kills told apart."""

    crash_reruns: int = 1
    _killed_job_id: str | None = None
    _current_job_id: str | None = None

    def get_heartbeat_ttl(self, job, working_time: float = 0.0) -> int:
        # RQ adds a fixed 60 s; two missed heartbeats are evidence enough that the worker died.
        # One second more: RQ scores the registry entry in whole seconds (now truncated + TTL),
        # so without it an entry could expire up to a second early (the lease relies on it: lease.py).
        interval = self.job_monitoring_interval
        if job.timeout and job.timeout > 0:
            return int(max(0, min(job.timeout - working_time, interval))) + 2 * interval + 1
        return 3 * interval + 1

    def kill_horse(self, sig: signal.Signals = SHUTDOWN_SIGNAL) -> None:
        # Every caller kills on purpose: a kill-horse or stop command, the hard timeout, a cold shutdown.
        if self.horse_pid:
            self._killed_job_id = self._current_job_id
        super().kill_horse(sig)

    def handle_work_horse_killed(self, job, retpid, ret_val, rusage) -> None:
        if self._killed_job_id is not None and self._killed_job_id == job.id:
            self._killed_job_id = None
            working = (now() - job.started_at).total_seconds() if job.started_at else 0.0
            if job.timeout and job.timeout > 0 and working >= job.timeout + 60:
                reason = timed_out(job.timeout)  # RQ's hard kill at timeout + 60 s
            else:
                reason = "killed on request (kill-horse command)"
            self._until_redis_answers(f"recording the kill of job {job.id}", self._record_kill, job, reason)
        else:
            if ret_val and os.WIFSIGNALED(ret_val):
                reason = f"its work horse was killed by {signal.Signals(os.WTERMSIG(ret_val)).name}"
            else:
                reason = f"its work horse exited unexpectedly (wait status {ret_val})"
            self._until_redis_answers(f"recording the crash of job {job.id}", self._record_crash, job, reason)
        super().handle_work_horse_killed(job, retpid, ret_val, rusage)

    def _record_kill(self, job, reason: str) -> None:
        self._end_attempt(job, "failed", reason)
        job.save_meta()

    def _record_crash(self, job, reason: str) -> None:
        """End the job's running attempt as crashed and, within CRASH_RERUNS, give the job one more run."""
        meta = self._end_attempt(job, "crashed", reason)
        granted = meta.get("crash_reruns", 0)
        if not job.retries_left and granted < self.crash_reruns:
            meta["crash_reruns"] = granted + 1
            job.retries_left, job.retry_intervals = 1, [0]
            self.connection.hset(job.key, mapping={"retries_left": 1, "retry_intervals": "[0]"})
        job.save_meta()

    def _settle_abandoned_jobs(self, queue: Queue) -> None:
        """Record the crash on each job whose worker stopped heartbeating; RQ's cleanup then retries or fails it."""
        for job_id in queue.started_job_registry.get_expired_job_ids():
            try:
                job = self.job_class.fetch(job_id, connection=self.connection, serializer=self.serializer)
            except NoSuchJobError:
                continue
            if job.get_status(refresh=False) != JobStatus.STARTED:
                continue
            self.log.warning(
                "Worker %s: job %s was abandoned (its worker stopped heartbeating)",
                self.name,
                job.id,
            )
            self._record_crash(job, "AbandonedJobError: its worker died or lost Redis while it ran")
