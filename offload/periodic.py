"""Periodic jobs: declared in :func:`schedule`, enqueued once per period however many workers run.

Why not ``rq cron``: in RQ 3.0.0 it is a separate process with no lock (two of them enqueue
every job twice) and it builds its queues without a serializer, so its jobs are pickled
(``rq/cron.py``: ``Queue(self.queue_name, connection=connection)``; ``CronScheduler`` calls
``resolve_serializer()`` with no argument).

Here the scheduler every worker already runs (``rq worker --with-scheduler``) does it.
RQ gives each queue's scheduling to the one scheduler holding that queue's lock
(``rq:scheduler-lock:<queue>``); :class:`OffloadScheduler` adds, to each of its one-second
rounds, the periodic jobs of the queues whose locks it holds. Two things make a duplicate
impossible even when a lock changes hands mid-period:

- a guard key per job and period, ``offload:periodic:<task>:<n>``, taken with SET NX and kept
  for two periods: only the scheduler that sets it enqueues period ``n``;
- a job id per period, ``periodic-<task>-<n>``, enqueued with ``unique=True``.

Period ``n`` of a job that runs ``every`` seconds from ``offset`` starts at
``n * every + offset`` (UTC epoch seconds). A scheduler that starts mid-period enqueues that
period's job at once if no one did; periods during which no scheduler ran are skipped, not
caught up.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue
from rq.exceptions import DuplicateJobError
from rq.scheduler import RQScheduler
from rq.serializers import JSONSerializer

from offload.registry import TaskRegistry

log = logging.getLogger("offload.periodic")

GUARD_PREFIX = "offload:periodic:"


@dataclass(frozen=True)
class Periodic:
    """A registered task that runs every ``every`` seconds, starting ``offset`` seconds into each period."""

    task: str
    every: int
    offset: int = 0

    def period(self, now: float) -> int:
        """The number of the period ``now`` falls in."""
        return int((now - self.offset) // self.every)

    def job_id(self, period: int) -> str:
        return f"periodic-{self.task}-{period}"

    def guard_key(self, period: int) -> str:
        return f"{GUARD_PREFIX}{self.task}:{period}"


def schedule(config: Mapping[str, Any], tasks: TaskRegistry) -> tuple[Periodic, ...]:
    """Every periodic job of ``tasks``, in one place. The periods come from settings (see the README);
    an app that registers no task of that name has no such periodic job."""
    every = (
        # Nightly, at CLEANUP_OFFSET seconds past midnight UTC (03:00 by default).
        Periodic("cleanup_expired", every=config["OFFLOAD_CLEANUP_EVERY"], offset=config["OFFLOAD_CLEANUP_OFFSET"]),
        Periodic("hourly_digest", every=config["OFFLOAD_DIGEST_EVERY"]),
    )
    return tuple(periodic for periodic in every if periodic.task in tasks)


def enqueue_due(
    redis: Redis, config: Mapping[str, Any], tasks: TaskRegistry, queues: set[str], now: float | None = None
) -> list[str]:
    """Enqueue the current period's job of each periodic task on ``queues`` unless someone did; return their ids."""
    now = time.time() if now is None else now
    enqueued = []
    for periodic in schedule(config, tasks):
        task = tasks.get(periodic.task)
        assert task is not None  # schedule() lists registered tasks only
        if task.queue not in queues:
            continue  # another scheduler holds that queue's lock
        period = periodic.period(now)
        if not redis.set(periodic.guard_key(period), int(now), nx=True, ex=2 * periodic.every):
            continue
        try:
            job = Queue(task.queue, connection=redis, serializer=JSONSerializer).enqueue_call(
                task.path,
                kwargs={},
                job_id=periodic.job_id(period),
                unique=True,
                timeout=task.timeout,
                result_ttl=task.result_ttl if task.result_ttl is not None else config["OFFLOAD_RESULT_TTL"],
                failure_ttl=config["OFFLOAD_FAILURE_TTL"],
                ttl=max(periodic.every, 60),  # still waiting a period later: dropped, the next one comes
                retry=task.retry,
                description=task.title,
                meta={"task": task.name, "progress": 0, "periodic": period},
            )
        except DuplicateJobError:
            continue
        except BaseException:
            redis.delete(periodic.guard_key(period))  # let the next round try again
            raise
        log.info("Enqueued periodic job %s on %s", job.id, task.queue)
        enqueued.append(job.id)
    return enqueued


class OffloadScheduler(RQScheduler):
    """RQ's scheduler, which also enqueues the periodic jobs of the queues whose locks it holds."""

    def __init__(self, *args: Any, config: Mapping[str, Any], tasks: TaskRegistry, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config = dict(config)
        self.tasks = tasks
        self._done: dict[str, int] = {}  # task -> last period seen handled, to spare Redis a SET a second

    def enqueue_scheduled_jobs(self) -> None:
        super().enqueue_scheduled_jobs()
        if not self.acquired_locks:
            return
        now = time.time()
        due = {p.task for p in schedule(self.config, self.tasks) if self._done.get(p.task) != p.period(now)}
        if not due:
            return
        try:
            enqueue_due(self.connection, self.config, self.tasks, set(self.acquired_locks), now)
        except RedisError as exc:
            # A Redis hiccup must not kill the scheduler process; the next round tries again.
            # Anything else is a bug or a misconfiguration, and ends the scheduler loudly.
            self.log.warning("Could not enqueue periodic jobs, Redis unavailable (%s); retrying next round", exc)
            return
        for periodic in schedule(self.config, self.tasks):
            task = self.tasks.get(periodic.task)
            if task is not None and task.queue in self.acquired_locks:
                self._done[periodic.task] = periodic.period(now)
