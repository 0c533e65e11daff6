"""The scheduler process: sleeps until the next job is due, instead of polling every second.

RQ's scheduler (``rq worker --with-scheduler``) polls Redis every second: a heartbeat, a
lock refresh per queue (a script) and a scan per queue, ~17 commands a second counting the
ones its scripts run, ~61,000 an hour from a deployment doing nothing (and Upstash bills per
command). :class:`SleepingScheduler` reads when the earliest scheduled job is due, and when
the next period of a periodic job (periodic.py) starts, and sleeps until then, at most
``MAX_SLEEP`` seconds. Every job Offload schedules goes through ``queues.OffloadQueue`` (the
web's queues in ``jobs.py``, the worker's for retries), which publishes on ``WAKE_CHANNEL`` in
the same round trip, so the scheduler wakes at once and recomputes its sleep.

A job scheduled some other way (a plain ``rq.Queue.enqueue_at`` from another service,
rq-dashboard, a shell) publishes nothing, so the scheduler also asks Redis to tell it when
any scheduled registry changes: server-assisted client tracking (``CLIENT TRACKING ON
REDIRECT <listener> BCAST PREFIX rq:scheduled:``, Redis >= 6 and Valkey), whose invalidation
messages reach the same pub/sub connection as the wake-ups, and cost nothing while nothing
changes. Keyspace notifications would need ``CONFIG SET``, which managed Redis often
refuses. Where the server refuses tracking too, the scheduler says so once and re-reads the
earliest scheduled time every ``POLL_WITHOUT_TRACKING`` seconds while it sleeps (one round
trip), so such jobs still start on time.

Locks stay RQ's: one scheduler per queue however many workers run one. The scheduler process
dies with its worker (``PR_SET_PDEATHSIG``), as the job process does: a worker killed (the OOM
killer, a stop signal before it could handle one) leaves no scheduler holding its queues' locks
on its own, which the next worker's scheduler would wait out.
"""

from __future__ import annotations

import multiprocessing
import signal
import time
from multiprocessing import Process
from types import FrameType
from typing import Any, cast

import redis.exceptions
from redis import Redis
from redis.client import PubSub
from redis.connection import AbstractConnection
from rq import Queue
from rq.registry import ScheduledJobRegistry

from offload import ondemand, periodic
from offload.queues import WAKE_CHANNEL
from offload.worker.outages import REDIS_ERRORS, RETRY_EVERY, OutageReport
from offload.worker.parenting import die_with_parent

STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}

MAX_SLEEP = 60
"""Longest the scheduler sleeps between reads (its locks live ``MAX_SLEEP + 60`` s)."""

POLL_WITHOUT_TRACKING = 1.0
"""Seconds between reads of the earliest scheduled time while asleep, on a Redis that refuses tracking."""

INVALIDATE_CHANNEL = "__redis__:invalidate"
"""Where Redis sends a redirected tracking client's invalidation messages."""

TRACKED_PREFIX = ScheduledJobRegistry.key_template.format("")
"""Every queue's scheduled registry key starts with this (``rq:scheduled:``)."""


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
        self._tracker: Redis | None = None
        self._tracking: bool | None = None  # None: not set up (again) yet; False: the server refuses it

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
            worker = multiprocessing.parent_process()  # the worker whose start() forked this process
            if worker is not None and worker.pid is not None:
                die_with_parent(worker.pid)
            self._install_signal_handlers()
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # one that came meanwhile lands now
            self._work()
        except _Wake:
            pass
        finally:
            self.stop()  # whatever ended the loop: its locks released, its death registered

    def _work(self) -> None:
        pubsub = self.connection.pubsub(ignore_subscribe_messages=True)
        outage, born = OutageReport(self.log, "Scheduler"), False
        try:
            while not self._stop_requested:
                try:
                    if not born:  # inside the loop: a Redis outage at start-up is waited out too
                        self.register_birth()
                        born = True
                    if not pubsub.subscribed or self._tracking is None:
                        self._listen(pubsub)  # before reading, so no wake is missed
                    if self.should_reacquire_locks:
                        self.acquire_locks()
                    self.heartbeat()
                    self._drain(pubsub)  # whatever woke us so far, the read below covers
                    due_in = self.seconds_until_due()
                    if due_in is not None and due_in <= 0:
                        self.enqueue_scheduled_jobs()
                        due_in = self.seconds_until_due()
                        # Still due: a job could not be moved; retry in a second, as RQ would.
                        due_in = 1.0 if due_in is not None and due_in <= 0 else due_in
                    outage.answered()
                    self._sleep(pubsub, self.interval if due_in is None else min(due_in, self.interval))
                except REDIS_ERRORS as exc:
                    # Every second, as the worker's steps: a job due during the outage, or just
                    # after it, starts as soon as Redis answers (growing gaps once held it 30 s).
                    outage.failed(exc)
                    self._forget_tracking(pubsub)
                    self._sleep(None, RETRY_EVERY)
        finally:
            self._forget_tracking(pubsub)

    def _listen(self, pubsub: PubSub) -> None:
        """Subscribe to wake-ups, and have Redis send there any change to a scheduled registry."""
        self._forget_tracking(pubsub)
        # The listener's id, asked on its own connection before it subscribes (a subscribed
        # RESP2 connection takes no other command).
        pubsub.execute_command("CLIENT", "ID")
        listener_id = pubsub.parse_response(block=True)
        pubsub.subscribe(WAKE_CHANNEL, INVALIDATE_CHANNEL)
        # redis-py reconnects a dropped connection by itself, and a new connection has a new
        # id and no tracking: either one reconnecting makes the next round set both up again.
        cast(AbstractConnection, pubsub.connection).register_connect_callback(self._lost_tracking)  # set above
        pool = self.connection.connection_pool
        # A connection of its own, never handed back to RQ's pool with tracking on.
        tracker = Redis(
            connection_pool=type(pool)(connection_class=pool.connection_class, **pool.connection_kwargs),
            single_connection_client=True,
        )
        self._tracker = tracker
        try:
            tracker.execute_command(
                "CLIENT", "TRACKING", "ON", "REDIRECT", listener_id, "BCAST", "PREFIX", TRACKED_PREFIX
            )
        except redis.exceptions.ResponseError as exc:  # unknown command, NOPERM, or disabled by the provider
            if self._tracking is not False:
                self.log.warning(
                    "Scheduler: this Redis refuses client tracking (%s); jobs scheduled without Offload's queues "
                    "are found by reading the earliest scheduled time every %.0f s instead",
                    exc,
                    POLL_WITHOUT_TRACKING,
                )
            self._forget_tracking(None)
            self._tracking = False
            return
        tracker.connection.register_connect_callback(self._lost_tracking)
        self._tracking = True

    def _lost_tracking(self, connection: AbstractConnection) -> None:
        if self._tracking:
            self._tracking = None

    def _forget_tracking(self, pubsub: PubSub | None) -> None:
        """Close the tracking connection and, given ``pubsub``, the listener (back to the pool, unwatched)."""
        if pubsub is not None:
            if pubsub.connection is not None:
                pubsub.connection.deregister_connect_callback(self._lost_tracking)
            pubsub.reset()
        if self._tracker is not None:
            tracker, self._tracker = self._tracker, None
            tracker.close()
            tracker.connection_pool.disconnect()
        if self._tracking:
            self._tracking = None

    @staticmethod
    def _drain(pubsub: PubSub) -> None:
        """Read the wake-ups already here without waiting (a read follows that covers them)."""
        for _ in range(1000):  # bounded: a flood of changes must not hold the round up
            if pubsub.connection is None or not pubsub.connection.can_read(timeout=0):
                return
            pubsub.get_message(timeout=0)

    def _sleep(self, pubsub: PubSub | None, seconds: float) -> None:
        """Sleep up to ``seconds``, less if a wake message, a registry change or the stop signal comes."""
        try:
            self._sleeping = True  # inside the try: a stop signal right after it still ends here
            if self._stop_requested:
                return
            if pubsub is None:
                time.sleep(seconds)
                return
            deadline = time.monotonic() + max(seconds, 0.0)
            while True:
                left = deadline - time.monotonic()
                if self._tracking is not False:
                    pubsub.get_message(timeout=max(left, 0.0))  # any message, even one redis-py keeps: a wake
                    return
                # Nothing tells this scheduler of a plain enqueue_at: look, once a second.
                if pubsub.get_message(timeout=max(min(left, POLL_WITHOUT_TRACKING), 0.0)) is not None or left <= 0:
                    return
                due_in = self.seconds_until_due()
                if due_in is not None and due_in < deadline - time.monotonic():
                    deadline = time.monotonic() + max(due_in, 0.0)
        except _Wake:
            pass
        finally:
            self._sleeping = False
