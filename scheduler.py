"""A scheduler that sleeps until a job is due, and the queue that wakes it.

RQ's scheduler (``rq worker --with-scheduler``) polls Redis every second: a heartbeat, a
lock refresh per queue and a scan per queue, ~8 commands a second, ~29,000 an hour from a
worker doing nothing (and Upstash bills per command). Here the scheduler reads when the
earliest scheduled job is due and sleeps until then, at most ``MAX_SLEEP`` seconds. Every
job Offload schedules goes through ``queues.OffloadQueue`` (the web's queues in ``jobs.py``,
the worker's for retries), which publishes on ``WAKE_CHANNEL`` in the same round trip, so
the scheduler wakes at once and recomputes its sleep. A job scheduled some other way (a
plain ``rq.Queue``) still runs, at most ``MAX_SLEEP`` seconds late.

Locks stay RQ's: one scheduler per queue however many workers run one.
"""

from __future__ import annotations

import time
from typing import Any

import redis.exceptions
from rq.defaults import DEFAULT_LOGGING_DATE_FORMAT, DEFAULT_LOGGING_FORMAT
from rq.scheduler import RQScheduler

WAKE_CHANNEL = "offload:scheduler:wake"
"""Pub/sub channel a queue publishes on when it schedules a job."""

MAX_SLEEP = 60
"""Longest the scheduler sleeps between reads (its locks live ``MAX_SLEEP + 60`` s)."""


class _Wake(Exception):
    """Raised by the stop signal to end a sleep at once."""


class OffloadScheduler(RQScheduler):
    """RQ's scheduler, sleeping until the next job is due or a queue wakes it."""

    def __init__(self, *args: Any, max_sleep: int = MAX_SLEEP, **kwargs: Any) -> None:
        super().__init__(*args, interval=max_sleep, **kwargs)
        self._sleeping = False

    def request_stop(self, signum=None, frame=None) -> None:  # type: ignore[no-untyped-def]
        self._stop_requested = True
        if self._sleeping:
            raise _Wake

    def seconds_until_due(self) -> float | None:
        """Return how long until the earliest job in our queues is due (<= 0: now), or None."""
        if not self._scheduled_job_registries and self._acquired_locks:
            self.prepare_registries()
        with self.connection.pipeline(transaction=False) as pipeline:
            for registry in self._scheduled_job_registries:
                pipeline.zrange(registry.key, 0, 0, withscores=True)
            firsts = pipeline.execute()
        scores = [entries[0][1] for entries in firsts if entries]
        return min(scores) - time.time() if scores else None

    def work(self) -> None:
        self._install_signal_handlers()
        self.register_birth()
        pubsub = self.connection.pubsub(ignore_subscribe_messages=True)
        backoff = 1.0
        try:
            while not self._stop_requested:
                try:
                    if not pubsub.subscribed:
                        pubsub.subscribe(WAKE_CHANNEL)  # before reading, so no wake is missed
                    if self.should_reacquire_locks:
                        self.acquire_locks()
                    self.heartbeat()
                    due_in = self.seconds_until_due()
                    if due_in is not None and due_in <= 0:
                        self.enqueue_scheduled_jobs()
                        due_in = self.seconds_until_due()
                        # Still due: a job could not be moved; retry in a second, as RQ would.
                        due_in = 1.0 if due_in is not None and due_in <= 0 else due_in
                    self._sleep(pubsub, self.interval if due_in is None else min(due_in, self.interval))
                    backoff = 1.0
                except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                    self.log.warning("Scheduler: Redis unavailable (%s), retrying in %.0f s", exc, backoff)
                    pubsub.reset()
                    self._sleep(None, backoff)
                    backoff = min(backoff * 2, 30)
        finally:
            pubsub.close()
        self.stop()

    def _sleep(self, pubsub, seconds: float) -> None:  # type: ignore[no-untyped-def]
        """Sleep up to ``seconds``, less if a wake message or the stop signal comes."""
        self._sleeping = True
        try:
            if self._stop_requested:
                return
            if pubsub is None:
                time.sleep(seconds)
            else:
                pubsub.get_message(timeout=max(seconds, 0.0))
        except _Wake:
            pass
        finally:
            self._sleeping = False


def start_scheduler(
    worker,  # type: ignore[no-untyped-def]
    burst: bool = False,
    logging_level: str | None = "INFO",
    date_format: str = DEFAULT_LOGGING_DATE_FORMAT,
    log_format: str = DEFAULT_LOGGING_FORMAT,
) -> None:
    """RQ's ``BaseWorker._start_scheduler``, with :class:`OffloadScheduler`."""
    worker.scheduler = OffloadScheduler(
        worker.queues,
        connection=worker.connection,
        logging_level=logging_level if logging_level is not None else worker.log.level,
        date_format=date_format,
        log_format=log_format,
        serializer=worker.serializer,
    )
    worker.scheduler.acquire_locks()
    if worker.scheduler.acquired_locks:
        if burst:
            try:
                worker.scheduler.register_birth()
                worker.scheduler.enqueue_scheduled_jobs()
            finally:
                worker.scheduler.release_locks()
                worker.scheduler.register_death()
        else:
            worker.scheduler.start()
