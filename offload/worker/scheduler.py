"""The scheduler process: sleeps until the next job is due, instead of polling every second.

RQ's scheduler (``rq worker --with-scheduler``) polls Redis every second: a heartbeat, a
lock refresh per queue (a script) and a scan per queue, ~17 commands a second counting the
ones its scripts run, ~61,000 an hour from a deployment doing nothing (and Upstash bills per
command). :class:`SleepingScheduler` reads when the earliest scheduled job is due, and when
the next period of a periodic job (periodic.py) starts, and sleeps until then, at most
``MAX_SLEEP`` seconds. Every job Offload schedules goes through ``queues.OffloadQueue`` (the
web's queues in ``jobs.py``, the worker's for retries), which publishes on ``WAKE_CHANNEL`` in
the same round trip, so the scheduler wakes at once and recomputes its sleep. A job scheduled
some other way (a plain ``rq.Queue``) still runs, at most ``MAX_SLEEP`` seconds late.

Locks stay RQ's: one scheduler per queue however many workers run one.
"""

from __future__ import annotations

import signal
import time
from multiprocessing import Process
from types import FrameType
from typing import Any

import redis.exceptions
from redis.client import PubSub
from rq import Queue

from offload import ondemand, periodic
from offload.queues import WAKE_CHANNEL

STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}

MAX_SLEEP = 60
"""Longest the scheduler sleeps between reads (its locks live ``MAX_SLEEP + 60`` s)."""


class _Wake(Exception):
    """Raised by the stop signal to end a sleep at once."""


class SleepingScheduler(periodic.OffloadScheduler):
    """Offload's scheduler (RQ's, plus periodic jobs), sleeping until a job is due or a queue wakes it."""

    def __init__(
        self, *args: Any, max_sleep: int = MAX_SLEEP, ondemand_backend: ondemand.Backend | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, interval=max_sleep, **kwargs)
        self.ondemand_backend = ondemand_backend
        self._sleeping = False
        self._last_round = 0.0

    def request_stop(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        self._stop_requested = True
        if self._sleeping:
            raise _Wake

    def enqueue_scheduled_jobs(self) -> None:
        self._last_round = time.time()
        super().enqueue_scheduled_jobs()
        self.start_ondemand_workers()

    def start_ondemand_workers(self) -> None:
        """Start a worker for each on-demand queue of ours that jobs just moved to (none listens there)."""
        if self.ondemand_backend is None:
            return
        for name in self.config["OFFLOAD_ONDEMAND_QUEUES"]:
            if name not in self.acquired_locks or not self.connection.llen(Queue(name, connection=self.connection).key):
                continue
            try:
                ondemand.ensure_worker(
                    self.connection, self.ondemand_backend, name, self.config["OFFLOAD_ONDEMAND_MAX_WORKERS"]
                )
            except ondemand.OnDemandError as exc:
                # The jobs stay queued; the next round (or the next submit) tries again.
                self.log.error("Scheduler: no on-demand worker could be started for queue %s: %s", name, exc)

    def seconds_until_due(self) -> float | None:
        """Return how long until a job in our queues is due (<= 0: now), or None if none ever is."""
        if not self._scheduled_job_registries and self._acquired_locks:
            self.prepare_registries()
        with self.connection.pipeline(transaction=False) as pipeline:
            for registry in self._scheduled_job_registries:
                pipeline.zrange(registry.key, 0, 0, withscores=True)
            firsts = pipeline.execute()
        now = time.time()
        waits = [entries[0][1] - now for entries in firsts if entries]
        for job in periodic.schedule(self.config, self.tasks):
            task = self.tasks.get(job.task)
            if task is None or task.queue not in self._acquired_locks:
                continue
            if job.period(now) != job.period(self._last_round):
                waits.append(0.0)  # a new period began since the last round
            else:
                waits.append((job.period(now) + 1) * job.every + job.offset - now)
        return min(waits) if waits else None

    def start(self) -> Process:
        # Until the new process has its handlers (work()), a stop signal would kill it without
        # stop(): its locks held until they expire. Held back until then; the fork inherits the mask.
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            return super().start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    def work(self) -> None:
        try:
            self._install_signal_handlers()
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # one that came meanwhile lands now
            self._work()
        except _Wake:
            pass
        finally:
            self.stop()  # whatever ended the loop: its locks released, its death registered

    def _work(self) -> None:
        pubsub = self.connection.pubsub(ignore_subscribe_messages=True)
        backoff, born = 1.0, False
        try:
            while not self._stop_requested:
                try:
                    if not born:  # inside the loop: a Redis outage at start-up is waited out too
                        self.register_birth()
                        born = True
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

    def _sleep(self, pubsub: PubSub | None, seconds: float) -> None:
        """Sleep up to ``seconds``, less if a wake message or the stop signal comes."""
        try:
            self._sleeping = True  # inside the try: a stop signal right after it still ends here
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
