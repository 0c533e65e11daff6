"""A job's lease: a worker that cannot renew a job's heartbeat in time gives the job up.

A running job's entry in the StartedJobRegistry expires at its last heartbeat plus the heartbeat
TTL (crash_reruns.py); once it has, any worker's maintenance takes the job for abandoned and runs
it again. A worker cut off from Redis (an outage, a partition) for longer than that used to keep
running the job, and both runs went on at once. Now the TTL is a lease: a watchdog thread kills
the job process just before the lease, as last renewed, runs out (a heartbeat
can block in redis-py's retries for far longer than that, so the main thread cannot be relied on
to notice), and the worker then leaves the job alone: no crash record, no failure written. Its
expired entry makes it an abandoned job, re-run by maintenance (a crash re-run), never two at once.

An outage is waited out as long as the lease allows, and no longer:

- a heartbeat Redis did not take is sent again every second (a thread of its own, until one
  lands or the watchdog's deadline passes), not at the next monitoring interval (10 s), so the
  lease is renewed as soon as Redis answers again;
- a job process whose work is done and that is writing the job's end in one script (roundtrips.py)
  is not killed at the deadline: that script checks the lease itself, atomically, in Redis (the
  execution's TTL, with the same margin, and its registry entry) and writes nothing once the lease
  is over or nearly so. The end write, retried every second (outages.py), lands as soon as Redis
  answers; a job whose lease ran out meanwhile is left to maintenance, as a killed one would be.

A tester's restart of Redis for 20 s once had a finished job killed 3 s after Redis came back, and
run again: its end write was then retried 8 s apart, and the heartbeat came every 10 s.
"""

from __future__ import annotations

import math
import threading
import time

from rq.utils import now

from offload.worker.base import WorkerBase
from offload.worker.outages import REDIS_ERRORS
from offload.worker.parenting import SharedFlag


def lease_end(sent_at: float, ttl: int) -> float:
    """When a heartbeat sent at ``sent_at`` lets the job's registry entry expire: RQ scores it
    ``current_timestamp() + ttl``, in whole seconds, so up to a second before ``sent_at + ttl``."""
    return math.floor(sent_at) + ttl


RENEW_EVERY = 1.0
"""Seconds between tries of a heartbeat that Redis did not take, until one lands or the job is given up."""


class JobLease(WorkerBase):
    """Worker mixin: heartbeats that wait out Redis, and the job given up before its lease lapses."""

    _lease_expires_at: float = 0.0
    _lease_lost_job_id: str | None = None
    _lease_job_id: str | None = None
    _lease_watchdog: threading.Thread | None = None
    _lease_renewer: threading.Thread | None = None
    _lease_ended: threading.Event | None = None
    _ending_flag: SharedFlag | None = None  # in the job process: its JobProcess.ending (jobprocess.py)

    def _mark_ending(self, on: bool) -> None:
        """In the job process: say the job's work is done and its end write, which checks the lease
        itself (roundtrips.py), is under way; or no longer."""
        if self._ending_flag is not None:
            self._ending_flag.set(on)

    def _job_is_ending(self) -> bool:
        """In the worker: True while the job process writes the job's end in a write that checks the lease."""
        process = self._job_process
        return process is not None and process.ending.is_set()

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
            if self._lease_ended is not None:
                self._lease_ended.set()
            for thread in (self._lease_watchdog, self._lease_renewer):
                if thread is not None:
                    thread.join()
            self._lease_watchdog = self._lease_renewer = self._lease_ended = None

    def maintain_heartbeats(self, job, execution) -> None:
        if self._lease_watchdog is None:  # started after the fork, never before it
            self._lease_ended = threading.Event()
            self._lease_watchdog = threading.Thread(
                target=self._watch_lease, args=(job, self._lease_ended), name="offload-lease", daemon=True
            )
            self._lease_watchdog.start()
        if self._lease_lost_job_id == job.id:
            return  # given up: a heartbeat now would only delay its re-run
        if self._lease_renewer is not None and self._lease_renewer.is_alive():
            return  # a heartbeat Redis did not take is being sent again, every second
        try:
            self._renew_lease(job, execution)
        except REDIS_ERRORS as exc:
            # Keep watching the job process; the watchdog gives the job up if this lasts.
            self.log.warning(
                "Worker %s: no heartbeat for job %s, Redis unreachable (%s); trying again every %.0f s",
                self.name,
                job.id,
                exc,
                RENEW_EVERY,
            )
            assert self._lease_ended is not None
            self._lease_renewer = threading.Thread(
                target=self._renew_until_taken,
                args=(job, execution, self._lease_ended),
                name="offload-lease-renewal",
                daemon=True,
            )
            self._lease_renewer.start()

    def _renew_lease(self, job, execution) -> None:
        """Send the job's heartbeat (RQ's), renewing its lease; raise what Redis raises if it does not answer."""
        sent_at = time.time()
        working_time = (now() - job.started_at).total_seconds() if job.started_at else 0.0
        ttl = self.get_heartbeat_ttl(job, working_time=working_time)
        lapsed = sent_at >= self._lease_expires_at
        super().maintain_heartbeats(job, execution)
        # A lapsed lease is renewed only if nobody has taken the job for abandoned meanwhile.
        registry_key = job.started_job_registry.key
        if lapsed and self.connection.zscore(registry_key, execution.composite_key) is None:
            self._give_up(job, "its heartbeat lapsed and another worker took it for abandoned")
            return
        self._lease_expires_at = lease_end(sent_at, ttl)

    def _renew_until_taken(self, job, execution, ended: threading.Event) -> None:
        """Send the job's heartbeat every second until Redis takes one, the job ends, or the
        watchdog's deadline passes (from then on, nothing more is written for the job)."""
        began = time.monotonic()
        while not ended.wait(RENEW_EVERY):
            if self._lease_job_id != job.id or self._lease_lost_job_id == job.id:
                return
            if time.time() >= self._lease_expires_at - self._lease_margin():
                return
            try:
                self._renew_lease(job, execution)
            except REDIS_ERRORS:
                continue
            self.log.info(
                "Worker %s: Redis took the heartbeat of job %s again, after %.1f s",
                self.name,
                job.id,
                time.monotonic() - began,
            )
            return

    def _watch_lease(self, job, ended: threading.Event) -> None:
        """Kill the job process if its lease is about to run out unrenewed; return when the job ends."""
        while self._lease_job_id == job.id and not ended.is_set():
            left = self._lease_expires_at - self._lease_margin() - time.time()
            if left > 0:
                ended.wait(left)
                continue
            if not self.horse_pid or self._lease_lost_job_id == job.id:
                return
            if self._job_is_ending():
                # Its work is done; its end write checks the lease in Redis and writes nothing
                # once it is over (roundtrips.py): killing it would only throw the result away.
                self._lease_lost_job_id = job.id  # no more heartbeats: the lease is the end write's to judge
                self.log.warning(
                    "Worker %s: Redis did not take the heartbeat of job %s for longer than the heartbeat TTL "
                    "allows; its work is done, and its result is recorded if Redis answers while the job's "
                    "lease still holds there, or else the job runs again as an abandoned job",
                    self.name,
                    job.id,
                )
                return
            self._give_up(job, "Redis did not take its heartbeat for longer than the heartbeat TTL allows")
            return

    def _lease_margin(self) -> float:
        """How long before the lease runs out the job is given up: half a heartbeat interval (5 s
        with the shipped settings, of a 31 s lease), room for clocks that disagree a little and for
        a watchdog thread that a busy machine wakes late; well inside the slack a heartbeat has
        (the TTL is at least two intervals more than the time between heartbeats). The end write
        that checks the lease itself (scripts.COMMIT_IF_NO_DEPENDENTS) keeps the same margin."""
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
