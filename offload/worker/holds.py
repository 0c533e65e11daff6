"""Paused queues and quiet workers (offload.holds): the worker leaves them alone.

Before each dequeue the worker reads the holds (one round trip) and listens only on the
queues it may take from; while any hold is on, it waits at most ``hold_poll_interval``
seconds at a time, so a resumed queue or a woken worker takes jobs again within that time.
A job that the worker waited for (the hold may have begun meanwhile) is checked again once
it comes, and put back at the front of its queue, untouched, if its queue is now paused or
the worker quiet. A quiet worker with nothing to listen on stays registered (idle,
heartbeating, maintaining) until it is woken or stopped.
"""

from __future__ import annotations

import math
import time

from rq.job import Job
from rq.queue import Queue
from rq.worker import WorkerStatus

from offload.holds import Holds, forget_worker, read_holds
from offload.worker.base import WorkerBase


class QueueHolds(WorkerBase):
    """Worker mixin: skip paused queues; take nothing while quiet."""

    hold_poll_interval: int = 2
    """Seconds between two reads of the holds while one is on."""
    hold_recheck_after: float = 0.05
    """A job that came off its queue this soon after the holds were read is taken as read then; one
    that took longer (the worker waited for it) is checked again: a hold may have begun meanwhile.
    So a busy worker reads the holds once per job, not twice."""

    queue_depths: dict[str, int] | None = None
    """Each listened queue's length at the last read of the holds (the dashboard's depth chart,
    written with the end of the next job: offload.metrics.queue_job_record)."""

    def _read_holds(self) -> Holds:
        queues = {queue.name: queue.key for queue in self.queues}
        holds = self._until_redis_answers("reading paused queues", read_holds, self.connection, self.name, queues)
        self.queue_depths = holds.depths
        return holds

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None):
        listened = list(self._ordered_queues)
        idle_since = time.monotonic()
        while True:
            idle_left = None
            if max_idle_time is not None:
                idle_left = max(0, math.ceil(max_idle_time - (time.monotonic() - idle_since)))
                if idle_left == 0:
                    return None
            holds = self._read_holds()
            taking = [queue for queue in listened if holds.takes_from(queue.name)]
            if not taking:
                if timeout is None:  # burst: nothing it may take now means done
                    # An on-demand worker asks again while its queue holds jobs: not in a busy loop.
                    self._wait_on_hold(self.hold_poll_interval)
                    return None
                self._wait_on_hold(min(timeout, self.hold_poll_interval, idle_left or self.hold_poll_interval))
                continue
            limit = idle_left
            if holds.any and timeout is not None:
                # RQ's loop waits for a job until max_idle_time; this makes it come back to read the holds.
                limit = min(self.hold_poll_interval, idle_left) if idle_left is not None else self.hold_poll_interval
            self._ordered_queues = taking
            asked_at = time.monotonic()
            try:
                result = super().dequeue_job_and_maintain_ttl(timeout, limit)
            finally:
                self._ordered_queues = listened
            if result is not None:  # RQ's reorder (round robin, random) applied to the whole list
                self.reorder_queues(reference_queue=result[1])
                listened = list(self._ordered_queues)
            if result is None:
                if timeout is None and holds.any:
                    self._wait_on_hold(self.hold_poll_interval)  # as above: a held burst run does not spin
                if timeout is None or not holds.any:
                    return None
                continue
            job, queue = result
            if time.monotonic() - asked_at < self.hold_recheck_after or self._read_holds().takes_from(queue.name):
                return result
            self._put_back(job, queue)

    def _wait_on_hold(self, seconds: float) -> None:
        """Stay registered and idle while there is nothing this worker may take."""
        self.set_state(WorkerStatus.IDLE)
        self.procline("Held: every queue paused or this worker quiet")
        self.heartbeat()
        if self.should_run_maintenance_tasks:
            self.run_maintenance_tasks()
        time.sleep(seconds)  # a stop signal interrupts it (RQ raises StopRequested while idle)

    def _put_back(self, job: Job, queue: Queue) -> None:
        """Return a job taken as a hold began to the front of its queue, as it was."""
        with self.connection.pipeline() as pipe:
            pipe.lrem(queue.intermediate_queue_key, 1, job.id)
            pipe.lpush(queue.key, job.id)
            pipe.execute()
        self.log.info("Worker %s: put job %s back on %s (paused queue or quiet worker)", self.name, job.id, queue.name)

    def register_death(self) -> None:
        super().register_death()
        forget_worker(self.connection, self.name)
