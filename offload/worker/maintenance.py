"""Maintenance, cheap and frequent: a dead worker's jobs found within a minute.

RQ's pass cleans every registry of every queue (~30 commands from each worker each time: the
lock is released after every pass) and tries for the scheduler's locks (a script per queue).
Only one part of it has to be that fast: failing or retrying the jobs of a worker that died,
i.e. started-registry entries whose heartbeat expired. Each pass (every
WORKER_MAINTENANCE_INTERVAL) asks for those (one round trip, a command per queue) and cleans only
a queue that has some, with the crash re-runs granted first (crash_reruns.py); the rest of RQ's
maintenance runs every FULL_MAINTENANCE_INTERVAL (RQ's own default), and the scheduler's locks
are tried only when one of them is free (scheduler_host.py).
"""

from __future__ import annotations

import time

from rq import worker_registration
from rq.registry import clean_registries
from rq.utils import as_text, current_timestamp, now

from offload.queues import WAKE_CHANNEL
from offload.worker.base import WorkerBase
from offload.worker.scripts import TAKERS_KEY, put_back_orphans


class Maintenance(WorkerBase):
    """Worker mixin: frequent abandoned-job checks, RQ's full cleanup less often."""

    full_maintenance_interval: int = 600
    _fully_cleaned_at: float | None = None

    @property
    def dequeue_timeout(self) -> int:
        # RQ blocks up to 405 s waiting for a job, and runs maintenance only between waits.
        return max(1, min(self.worker_ttl - 15, self.maintenance_interval))

    def run_maintenance_tasks(self) -> None:
        self._until_redis_answers("running maintenance", self._maintain)

    def _maintain(self) -> None:
        if self.last_cleaned_at:
            self._restart_scheduler_if_stopped()
        moment = time.monotonic()
        if self._fully_cleaned_at is None or moment - self._fully_cleaned_at >= self.full_maintenance_interval:
            self.clean_registries()
            self.clean_group_registries()
            self._fully_cleaned_at = moment
        else:
            self.clean_abandoned_jobs()
            self.last_cleaned_at = now()

    def register_birth(self) -> None:
        super().register_birth()
        self.connection.sadd(TAKERS_KEY, self.name)

    def register_death(self) -> None:
        super().register_death()
        self._put_back_orphans([self.name])  # a take whose reply was lost as the worker stopped

    def _put_back_orphans(self, names: list[str]) -> None:
        """Put back the jobs that workers of ``names`` that are gone took but never started."""
        worker_prefix, job_prefix = self.redis_worker_namespace_prefix, self.job_class.redis_job_namespace_prefix
        put_back = put_back_orphans(self.connection, names, worker_prefix, job_prefix)
        if put_back:
            self.log.warning(
                "Worker %s: put back job(s) %s, taken by workers that are gone before the jobs started",
                self.name,
                ", ".join(put_back),
            )

    def clean_registries(self) -> None:
        # Jobs that dead workers took but never started, back in their queues (before RQ's
        # intermediate-queue check fails them); then RQ's, with the crash re-runs granted first,
        # under the same per-queue lock.
        self._put_back_orphans([as_text(name) for name in self.connection.smembers(TAKERS_KEY)])
        for queue in self.queues:
            if queue.acquire_maintenance_lock():
                try:
                    self._settle_abandoned_jobs(queue)
                    self.log.info("Worker %s: cleaning registries for queue: %s", self.name, queue.name)
                    clean_registries(queue, self._exc_handlers)
                    worker_registration.clean_worker_registry(queue)
                    queue.intermediate_queue.cleanup(self, queue)
                finally:
                    queue.release_maintenance_lock()
        self.last_cleaned_at = now()

    def clean_abandoned_jobs(self) -> None:
        """Fail or retry the jobs of workers that died, in the queues that have any."""
        queues = self.queues
        registries = [queue.started_job_registry for queue in queues]
        cutoff = current_timestamp()
        with self.connection.pipeline(transaction=False) as pipeline:
            for registry in registries:
                pipeline.zrangebyscore(registry.key, 0, cutoff, start=0, num=1)
            expired = pipeline.execute()
        for queue, registry, found in zip(queues, registries, expired, strict=True):
            if found and queue.acquire_maintenance_lock():
                try:
                    self._settle_abandoned_jobs(queue)
                    registry.cleanup(exception_handlers=self._exc_handlers)
                finally:
                    queue.release_maintenance_lock()
                # A retry with a delay went through RQ's plain Queue: wake the scheduler for it.
                self.connection.publish(WAKE_CHANNEL, queue.name)
