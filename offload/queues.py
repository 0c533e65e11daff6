"""The queue class the web and the workers share: RQ's ``Queue``, with fewer Redis writes.

- One round trip per enqueue: RQ's ``enqueue_job`` sends the queue's registration and the
  job in two transactions; for a plain job (no dependencies, rate limit or uniqueness)
  both go in one.
- Three writes per job instead of six: RQ sends the job's status on its own and then again
  inside the job's hash, and gives every job's ``dependents`` and ``dependencies`` keys an
  expiry, which for a job it has just made up an id for cannot exist yet. This is what
  makes 10,000 jobs in one request cost about what a bare ``enqueue_many`` costs.
- Scheduling a job (``enqueue_at``/``enqueue_in``, a retry with a delay) wakes the
  scheduler in the same round trip, so it can sleep until the next job is due instead of
  polling every second (see scheduler.py).

RQ is pinned (requirements.txt); tests/test_queues.py checks that a job stored here is the
job RQ stores.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from redis import Redis
from redis.client import Pipeline
from rq import Queue
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from offload import settings

WAKE_CHANNEL = "offload:scheduler:wake"
"""Pub/sub channel a queue publishes on when it schedules a job (scheduler.py listens)."""


class OffloadQueue(Queue):
    """RQ's queue, with fewer writes per job, which wakes the scheduler when it schedules."""

    def create_job(self, *args: Any, **kwargs: Any) -> Job:
        job = super().create_job(*args, **kwargs)
        # No id yet: Job.id makes up a new one, so no other key can refer to this job.
        job._offload_new = job._id is None  # type: ignore[attr-defined]  # a mark only _persist_job reads
        return job

    def enqueue_job(
        self, job: Job, pipeline: Pipeline | None = None, at_front: bool = False, unique: bool = False
    ) -> Job:
        if pipeline is not None or unique or job.has_rate_limit or job._dependency_ids or not self._is_async:
            return super().enqueue_job(job, pipeline=pipeline, at_front=at_front, unique=unique)
        with self.connection.pipeline() as batch:
            job = super().enqueue_job(job, pipeline=batch, at_front=at_front)
            batch.execute()
        return job

    def _persist_job(self, job: Job, pipeline: Pipeline, status: JobStatus = JobStatus.QUEUED) -> None:
        job._status = status  # save() writes it with the rest of the hash
        job.save(pipeline=pipeline)
        new = getattr(job, "_offload_new", False) and not job._dependency_ids
        job._offload_new = False  # type: ignore[attr-defined]  # see create_job
        if new and job.ttl is not None and job.ttl > 0:
            pipeline.expire(job.key, job.ttl)
        else:
            job.cleanup(ttl=job.ttl, pipeline=pipeline)

    def schedule_job(self, job: Job, datetime: datetime, pipeline: Pipeline | None = None, unique: bool = False) -> Job:
        job = super().schedule_job(job, datetime, pipeline=pipeline, unique=unique)
        # A unique job is written by a script at once, whatever pipeline was given.
        connection = pipeline if pipeline is not None and not unique else self.connection
        connection.publish(WAKE_CHANNEL, self.name)
        return job


def make_queues(redis: Redis, config: Mapping[str, Any]) -> dict[str, Queue]:
    """Return the configured queues, all with RQ's JSON serializer (synchronous with ``RUN_JOBS_INLINE``)."""
    # OffloadQueue: one round trip per enqueue, and it wakes the scheduler (queues.py).
    inline = config[settings.key("RUN_JOBS_INLINE")]
    return {
        name: OffloadQueue(name, connection=redis, serializer=JSONSerializer, is_async=not inline)
        for name in settings.all_queue_names(config)  # the on-demand ones too: ondemand.py
    }
