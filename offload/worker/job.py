"""``OffloadJob``: the job class Offload's workers run. RQ's ``Job``, reading paths stored by
earlier releases as they are now (offload/legacy.py), whose retry after an interval is written
whole in the failure's transaction."""

from __future__ import annotations

from datetime import timedelta

from redis.client import Pipeline
from rq.queue import Queue
from rq.utils import now

from offload.legacy import CurrentPathsJob


class OffloadJob(CurrentPathsJob):
    """RQ's job as Offload's workers run it."""

    def retry(self, queue: Queue, pipeline: Pipeline) -> None:
        interval = self.get_retry_interval()
        if not interval:
            return super().retry(queue, pipeline)
        # RQ's, less its set_status: that wrote "scheduled" at once, on a round trip of its own,
        # and until the failure's transaction committed a reader saw a scheduled job still running
        # (in the started registry, its retry not yet counted). schedule_job writes the status
        # with the rest of the job, in that transaction.
        assert self.retries_left
        self.retries_left = self.retries_left - 1
        when = now() + timedelta(seconds=interval)
        queue.schedule_job(self, when, pipeline=pipeline)
        self.log.info("Job %s: scheduled for retry at %s, %s remaining", self.id, when, self.retries_left)
        return None
