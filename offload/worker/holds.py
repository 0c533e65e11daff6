"""Paused queues and quiet workers (offload.holds): the worker leaves them alone.

The worker keeps the holds it last read and reads them again (one round trip) when a change is
published on ``holds.CHANGED_CHANNEL`` (its pub/sub thread marks them stale), when they are
older than ``hold_max_age``, or before its first dequeue: a busy worker pays no round trip per
job. Before each dequeue it listens only on the queues it may take from; while any hold is on
it waits at most ``hold_poll_interval`` seconds at a time, so a resumed queue or a woken worker
takes jobs again within that time. A job that comes after a hold began (a worker waiting on an
empty queue that is then paused) is put back at the front of its queue, untouched. A quiet
worker with nothing to listen on stays registered (idle, heartbeating, maintaining) until it is
woken or stopped. It filters the queues before roundtrips.py's take script sees them. The
round trip that reads the holds also samples the queues' depths for the dashboard.
"""

from __future__ import annotations

import math
import time

from rq.job import Job
from rq.queue import Queue
from rq.worker import WorkerStatus

from offload.holds import CHANGED_CHANNEL, Holds, add_read, forget_worker, parse_read
from offload.throughput import add_depth_samples
from offload.worker.base import WorkerBase


class QueueHolds(WorkerBase):
    """Worker mixin: skip paused queues; take nothing while quiet."""

    hold_poll_interval: int = 2
    """Seconds between two looks at the holds while one is on."""
    hold_max_age: float = 5.0
    """Seconds the holds read are trusted without a change message (a lost message costs this)."""
    _holds: Holds | None = None
    _holds_read_at: float = 0.0
    _holds_stale: bool = True

    def _current_holds(self) -> Holds:
        """The holds, read again only when changed, old, or never read."""
        if self._holds is None or self._holds_stale or time.monotonic() - self._holds_read_at > self.hold_max_age:
            self._holds_stale = False  # before the read: a change published during it marks them again
            self._holds = self._until_redis_answers("reading paused queues", self._read_holds_and_depths)
            self._holds_read_at = time.monotonic()
        return self._holds

    def _read_holds_and_depths(self) -> Holds:
        """Read the holds, and note the queues' depths for the dashboard in the same round trip."""
        with self.connection.pipeline(transaction=False) as pipe:
            add_read(pipe, self.name)
            add_depth_samples(pipe, [queue.name for queue in self.queues])
            return parse_read(pipe.execute()[:2])

    def _holds_changed(self, message: object) -> None:
        """On the pub/sub thread: a hold changed; read them again before the next dequeue."""
        self._holds_stale = True

    def subscribe(self) -> None:
        # RQ's subscribe, with the holds' channel on the same connection and thread.
        self.log.info("Worker %s: subscribing to channels %s, %s", self.name, self.pubsub_channel_name, CHANGED_CHANNEL)
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload, CHANGED_CHANNEL: self._holds_changed})
        # Reads in 1 s slices (RQ's are 60 s; a read sends no Redis command), so unsubscribe ends it soon.
        self.pubsub_thread = self.pubsub.run_in_thread(  # type: ignore[assignment]  # RQ declares it None, then sets a thread
            sleep_time=1, daemon=True, exception_handler=self._pubsub_exception_handler
        )

    def unsubscribe(self) -> None:
        # RQ's stops the thread, waits 1 s, then closes the pubsub itself: under redis-py 8.2, whose
        # stop() waits for the thread, that hung up to a 60 s read; under 8.1 its close raced the
        # thread's own. The thread closes the pubsub when its loop ends: stop it, wait for that.
        if self.pubsub_thread:
            self.log.info("Worker %s: unsubscribing from channel %s", self.name, self.pubsub_channel_name)
            self.pubsub.unsubscribe()
            self.pubsub_thread.stop()
            self.pubsub_thread.join(timeout=5)

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None):
        listened = list(self._ordered_queues)
        idle_since = time.monotonic()
        while True:
            idle_left = None
            if max_idle_time is not None:
                idle_left = max(0, math.ceil(max_idle_time - (time.monotonic() - idle_since)))
                if idle_left == 0:
                    return None
            holds = self._current_holds()
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
                # RQ's loop waits for a job until max_idle_time; this makes it come back to the holds.
                limit = min(self.hold_poll_interval, idle_left) if idle_left is not None else self.hold_poll_interval
            self._ordered_queues = taking
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
            if self.job_came_while_waiting:
                # It came while the worker waited, perhaps after a hold began: the change's message
                # may not have reached the pub/sub thread yet, so read the holds as they are now.
                self._holds_stale = True
            if self._current_holds().takes_from(queue.name):
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
