"""A job's lease: a worker that cannot renew a job's heartbeat in time gives the job up.

A running job's entry in the StartedJobRegistry expires at its last heartbeat plus the heartbeat
TTL (crash_reruns.py); once it has, any worker's maintenance takes the job for abandoned and runs
it again. A worker cut off from Redis (an outage, a partition) for longer than that used to keep
running the job, and both runs went on at once. Now the TTL is a lease: a watchdog thread kills
the job process just before the lease, as last renewed, runs out (a heartbeat
can block in redis-py's retries for far longer than that, so the main thread cannot be relied on
to notice), and the worker then leaves the job alone: no crash record, no failure written. Its
expired entry makes it an abandoned job, re-run by maintenance (a crash re-run), never two at once.
"""

from __future__ import annotations

import math
import threading
import time

from rq.utils import now

from offload.worker.base import WorkerBase
from offload.worker.outages import REDIS_ERRORS


def lease_end(sent_at: float, ttl: int) -> float:
    """When a heartbeat sent at ``sent_at`` lets the job's registry entry expire: RQ scores it
    ``current_timestamp() + ttl``, in whole seconds, so up to a second before ``sent_at + ttl``."""
    return math.floor(sent_at) + ttl


class JobLease(WorkerBase):
    """Worker mixin: heartbeats that wait out Redis, and the job given up before its lease lapses."""

    _lease_expires_at: float = 0.0
    _lease_lost_job_id: str | None = None
    _lease_job_id: str | None = None
    _lease_watchdog: threading.Thread | None = None
    _lease_ended: threading.Event | None = None

    def prepare_execution(self, job):
        self._lease_lost_job_id = None
        self._lease_expires_at = lease_end(time.time(), self.get_heartbeat_ttl(job))
        return super().prepare_execution(job)

    def execute_job(self, job, queue) -> None:
        self._lease_job_id = job.id
        try:
            super().execute_job(job, queue)
        finally:
            self._lease_job_id = None
            if self._lease_watchdog is not None:
                self._lease_ended.set()
                self._lease_watchdog.join()
                self._lease_watchdog = None

    def maintain_heartbeats(self, job, execution) -> None:
        if self._lease_watchdog is None:  # started after the fork, never before it
            self._lease_ended = threading.Event()
            self._lease_watchdog = threading.Thread(
                target=self._watch_lease, args=(job, self._lease_ended), name="offload-lease", daemon=True
            )
            self._lease_watchdog.start()
        if self._lease_lost_job_id == job.id:
            return  # given up: a heartbeat now would only delay its re-run
        sent_at = time.time()
        working_time = (now() - job.started_at).total_seconds() if job.started_at else 0.0
        ttl = self.get_heartbeat_ttl(job, working_time=working_time)
        lapsed = sent_at >= self._lease_expires_at
        try:
            super().maintain_heartbeats(job, execution)
            # A lapsed lease is renewed only if nobody has taken the job for abandoned meanwhile.
            registry_key = job.started_job_registry.key
            if lapsed and self.connection.zscore(registry_key, execution.composite_key) is None:
                self._give_up(job, "its heartbeat lapsed and another worker took it for abandoned")
                return
        except REDIS_ERRORS as exc:
            # Keep watching the job process; the watchdog gives the job up if this lasts.
            self.log.warning(
                "Worker %s: no heartbeat for job %s, Redis unreachable (%s)",
                self.name,
                job.id,
                exc,
            )
            return
        self._lease_expires_at = lease_end(sent_at, ttl)

    def _watch_lease(self, job, ended: threading.Event) -> None:
        """Kill the job process if its lease is about to run out unrenewed; return when the job ends."""
        while self._lease_job_id == job.id and not ended.is_set():
            left = self._lease_expires_at - self._lease_margin() - time.time()
            if left > 0:
                ended.wait(left)
                continue
            if self.horse_pid and self._lease_lost_job_id != job.id:
                self._give_up(job, "Redis did not take its heartbeat for longer than the heartbeat TTL allows")
            return

    def _lease_margin(self) -> float:
        """How long before the lease runs out the job is given up: half a heartbeat interval (5 s
        with the shipped settings, of a 31 s lease), room for clocks that disagree a little and for
        a watchdog thread that a busy machine wakes late; well inside the slack a heartbeat has
        (the TTL is at least two intervals more than the time between heartbeats)."""
        return self.job_monitoring_interval / 2

    def _give_up(self, job, why: str) -> None:
        self.log.error(
            "Worker %s: stopping job %s: %s; it will run again as an abandoned job",
            self.name,
            job.id,
            why,
        )
        self._lease_lost_job_id = job.id
        self.kill_horse()

    def handle_work_horse_killed(self, job, retpid, ret_val, rusage) -> None:
        if self._lease_lost_job_id == job.id:
            return  # not ours any more: maintenance settles it
        super().handle_work_horse_killed(job, retpid, ret_val, rusage)

    def handle_job_failure(self, job, queue, started_job_registry=None, exc_string="", execution=None):
        if self._lease_lost_job_id is not None and self._lease_lost_job_id == job.id:
            self._lease_lost_job_id = None
            return
        super().handle_job_failure(job, queue, started_job_registry, exc_string, execution)
