"""The on-demand worker (``offload.ondemand``): a burst worker that leaves only when its queues
are empty under the queue's lock, and hands queued work on if it stops for any other reason."""

from __future__ import annotations

import logging
import os

from redis.exceptions import LockError, RedisError
from rq import Queue
from rq.job import Job

from offload.ondemand import (
    LOCK_TIMEOUT,
    LOCK_WAIT,
    WORKER_ID_ENV,
    OnDemandError,
    ensure_worker,
    leave_if_drained,
    lock_key,
    make_backend,
    workers_key,
)
from offload.worker.worker import OffloadWorker

log = logging.getLogger("offload.ondemand")


class OnDemandWorker(OffloadWorker):
    """``OffloadWorker`` for burst runs: leaves only when its queues are empty under the lock,
    and hands queued work on to a new worker if it stops for any other reason."""

    names_left_out_queues = False  # it serves its on-demand queue only, on purpose

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[Job, Queue] | None:
        while True:
            result = super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
            if result is not None or timeout is not None or not os.environ.get(WORKER_ID_ENV):
                return result
            # Burst mode found the queues empty: leave, unless a job arrived since.
            if leave_if_drained(self.connection, self.queue_names(), os.environ[WORKER_ID_ENV]):
                return None

    def teardown(self) -> None:
        super().teardown()
        worker_id = os.environ.get(WORKER_ID_ENV)
        if not worker_id or self.is_horse:
            return
        try:
            if leave_if_drained(self.connection, self.queue_names(), worker_id):
                return
            # Stopped with work left (a signal, an error): start another worker for it.
            config = self.flask_app.config
            backend = make_backend(config)
            for name in self.queue_names():
                with self.connection.lock(lock_key(name), timeout=LOCK_TIMEOUT, blocking_timeout=LOCK_WAIT):
                    self.connection.hdel(workers_key(name), worker_id)
                ensure_worker(self.connection, backend, name, config["OFFLOAD_ONDEMAND_MAX_WORKERS"])
        except (RedisError, OnDemandError, LockError) as exc:
            log.error("on-demand worker %s left jobs queued and could not hand them on: %s", worker_id, exc)
