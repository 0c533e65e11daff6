"""A job's lease: a worker that cannot renew a job's heartbeat before it expires gives the job up.

A running job's entry in the StartedJobRegistry expires at its last heartbeat plus the heartbeat
TTL (crash_reruns.py); once it has, any worker's maintenance takes the job for abandoned and runs
it again. A worker cut off from Redis (an outage, a partition) longer than that used to keep
running the job, and once Redis answered again both runs went on at once. Now the worker treats
the TTL as a lease: when the next heartbeat could come too late (Redis unreachable since the
last one), it kills the job process before the lease runs out and leaves the job alone: no
crash record, no failure written; its expired entry makes it an abandoned job, re-run elsewhere
by maintenance (with a crash re-run), never two at once.
"""

from __future__ import annotations

import time

from rq.utils import now

from offload.worker.outages import REDIS_ERRORS


class JobLease:
    """Worker mixin: heartbeats that wait out Redis, and the job given up when its lease would lapse."""

    _lease_expires_at: float = 0.0
    _lease_lost_job_id: str | None = None

    def prepare_execution(self, job):  # type: ignore[no-untyped-def]
        self._lease_lost_job_id = None
        self._lease_expires_at = time.time() + self.get_heartbeat_ttl(job)  # type: ignore[attr-defined]
        return super().prepare_execution(job)  # type: ignore[misc]

    def maintain_heartbeats(self, job, execution) -> None:  # type: ignore[no-untyped-def]
        sent_at = time.time()
        working_time = (now() - job.started_at).total_seconds() if job.started_at else 0.0
        ttl = self.get_heartbeat_ttl(job, working_time=working_time)  # type: ignore[attr-defined]
        lapsed = sent_at >= self._lease_expires_at
        try:
            super().maintain_heartbeats(job, execution)  # type: ignore[misc]
            # A lapsed lease renewed only if nobody has taken the job for abandoned meanwhile.
            if lapsed and self.connection.zscore(job.started_job_registry.key, execution.composite_key) is None:  # type: ignore[attr-defined]
                self._give_up(job, "its heartbeat lapsed and another worker took it for abandoned")
                return
        except REDIS_ERRORS as exc:
            # Keep watching the job process; the next heartbeat is one interval away, unless that is too late.
            self.log.warning(  # type: ignore[attr-defined]
                "Worker %s: no heartbeat for job %s, Redis unreachable (%s)",
                self.name,  # type: ignore[attr-defined]
                job.id,
                exc,
            )
            if time.time() + self.job_monitoring_interval >= self._lease_expires_at:  # type: ignore[attr-defined]
                self._give_up(job, "Redis was unreachable for longer than its heartbeat TTL")
            return
        self._lease_expires_at = sent_at + ttl

    def _give_up(self, job, why: str) -> None:  # type: ignore[no-untyped-def]
        self.log.error(  # type: ignore[attr-defined]
            "Worker %s: stopping job %s: %s; it will run again as an abandoned job",
            self.name,  # type: ignore[attr-defined]
            job.id,
            why,
        )
        self._lease_lost_job_id = job.id
        self.kill_horse()  # type: ignore[attr-defined]

    def handle_work_horse_killed(self, job, retpid, ret_val, rusage) -> None:  # type: ignore[no-untyped-def]
        if self._lease_lost_job_id == job.id:
            return  # not ours any more: maintenance settles it
        super().handle_work_horse_killed(job, retpid, ret_val, rusage)  # type: ignore[misc]

    def handle_job_failure(self, job, queue, started_job_registry=None, exc_string="", execution=None):  # type: ignore[no-untyped-def]
        if self._lease_lost_job_id is not None and self._lease_lost_job_id == job.id:
            self._lease_lost_job_id = None
            return
        super().handle_job_failure(job, queue, started_job_registry, exc_string, execution)  # type: ignore[misc]
