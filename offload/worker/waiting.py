"""The wait for a job while every queue is empty: RQ's blocking dequeue (``BLPOP`` on the queues
in order), with the worker's heartbeat and maintenance between waits.

RQ's own loop backs off when Redis is gone, 1, 2, 4 ... s up to a minute, saying ERROR at every
try: an idle worker took nothing for up to a minute after Redis came back. Here each step waits
Redis out every second and says so as every other step of the worker does (outages.py).
"""

from __future__ import annotations

import math
import time

from rq.exceptions import DequeueTimeout
from rq.job import Job
from rq.logutils import blue, green
from rq.queue import Queue

from offload.worker.base import WorkerBase


class JobWait(WorkerBase):
    """Worker mixin: the blocking wait for a job that the take script falls back to (roundtrips.py)."""

    def _wait_for_job(self, timeout: int | None, max_idle_time: int | None) -> tuple[Job, Queue] | None:
        """Wait for a job ``timeout`` s at a time (None: one look, for a burst) until one comes, or
        return None once ``max_idle_time`` s have passed; as RQ's ``dequeue_job_and_maintain_ttl``."""
        self.procline("Listening on " + ",".join(self.queue_names()))
        idle_since = time.monotonic()
        while True:
            self.heartbeat()
            if self.should_run_maintenance_tasks:
                self._until_redis_answers("running maintenance", self.run_maintenance_tasks)
            wait = timeout
            if max_idle_time is not None:
                idle_left = math.ceil(max_idle_time - (time.monotonic() - idle_since))
                if idle_left <= 0:
                    self.heartbeat()
                    return None
                if timeout is not None:
                    wait = min(timeout, idle_left)
            try:
                result = self._until_redis_answers(
                    "waiting for a job",
                    self.queue_class.dequeue_any,
                    self._ordered_queues,
                    wait,
                    connection=self.connection,
                    job_class=self.job_class,
                    serializer=self.serializer,
                    death_penalty_class=self.death_penalty_class,
                )
            except DequeueTimeout:
                continue
            if result is not None:
                job, queue = result
                self.reorder_queues(reference_queue=queue)
                job.redis_server_version = self.get_redis_server_version()
                self._log_taken(job, queue)
            self.heartbeat()
            return result

    def _log_taken(self, job: Job, queue: Queue) -> None:
        """Say which job was taken from which queue, as RQ's dequeue does."""
        if self.log_job_description:
            self.log.info("Worker %s: %s: %s (%s)", self.name, green(queue.name), blue(job.description), job.id)
        else:
            self.log.info("Worker %s: %s: %s", self.name, green(queue.name), job.id)
