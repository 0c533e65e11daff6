"""The queue class the web and the workers share: RQ's ``Queue``, tuned for Offload.

- One round trip per enqueue: RQ's ``enqueue_job`` sends the queue's registration and the
  job in two transactions; for a plain job (no dependencies, rate limit or uniqueness)
  both go in one.
- Scheduling a job (``enqueue_at``/``enqueue_in``, a retry with a delay) wakes the
  scheduler in the same round trip, so it can sleep until the next job is due instead of
  polling every second (see scheduling.py).
"""

from __future__ import annotations

from rq import Queue

from scheduling import WAKE_CHANNEL


class OffloadQueue(Queue):
    """RQ's queue with one round trip per plain enqueue, which wakes the scheduler when it schedules."""

    def enqueue_job(self, job, pipeline=None, at_front=False, unique=False):  # type: ignore[no-untyped-def]
        if pipeline is not None or unique or job.has_rate_limit or job._dependency_ids or not self._is_async:
            return super().enqueue_job(job, pipeline=pipeline, at_front=at_front, unique=unique)
        with self.connection.pipeline() as batch:
            job = super().enqueue_job(job, pipeline=batch, at_front=at_front)
            batch.execute()
        return job

    def schedule_job(self, job, datetime, pipeline=None, unique=False):  # type: ignore[no-untyped-def]
        job = super().schedule_job(job, datetime, pipeline=pipeline, unique=unique)
        # A unique job is written by a script at once, whatever pipeline was given.
        connection = pipeline if pipeline is not None and not unique else self.connection
        connection.publish(WAKE_CHANNEL, self.name)
        return job
