"""Who drains an on-demand queue: the workers recorded per queue, changed only under the queue's
lock, by the submitter (:func:`ensure_worker`) and by a worker that finds its queues empty
(:func:`leave_if_drained`)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from typing import Protocol

from redis import Redis
from redis.exceptions import LockError
from redis.lock import Lock
from rq import Queue

log = logging.getLogger("offload.ondemand")

WORKER_ID_ENV = "OFFLOAD_ONDEMAND_WORKER"
"""Environment variable that tells an on-demand worker its id (its key in the workers hash)."""

LOCK_TIMEOUT = 60
"""Seconds a decision may hold a queue's lock before Redis frees it (its holder died)."""
LOCK_WAIT = 20
"""Seconds a submitter waits for a queue's lock; starting a Machine takes a second or two."""


class OnDemandError(RuntimeError):
    """An on-demand worker could not be started; the message says why."""


def burst_command(queue: str) -> list[str]:
    """The command an on-demand worker runs: the stock worker, in burst mode, on ``queue`` only.

    Its settings module is the package's (``offload.worker.rqconfig``), which the reference app's
    ``worker.py`` re-exports: the regular workers' Redis and log format (time and level on each
    line), read from the environment, without a settings module of the host app's. The worker
    loads the host app ``OFFLOAD_APP`` names (:func:`offload.ondemand.worker_env`)."""
    return [
        "rq",
        "worker",
        "-c",
        "offload.worker.rqconfig",
        "-w",
        "offload.worker.ondemand.OnDemandWorker",
        "--burst",
        queue,
    ]


def workers_key(queue: str) -> str:
    return f"offload:ondemand:{queue}:workers"


def lock_key(queue: str) -> str:
    return f"offload:ondemand:{queue}:lock"


class Backend(Protocol):
    """Starts on-demand workers and tells which are still alive."""

    def start(self, queue: str, worker_id: str) -> str:
        """Start a burst worker for ``queue`` that knows itself as ``worker_id``; return its handle."""
        ...

    def alive(self, queue: str, handles: dict[str, str]) -> set[str]:
        """Of ``handles`` (worker id -> handle), return the ids whose worker is starting or running."""
        ...


def ensure_worker(redis: Redis, backend: Backend, queue: str, max_workers: int) -> str | None:
    """Start a worker for ``queue`` unless the ones draining it already cover its queued jobs.

    Returns the new worker's id, or None when none was needed. Call it after enqueueing.
    """
    try:
        with redis.lock(lock_key(queue), timeout=LOCK_TIMEOUT, blocking_timeout=LOCK_WAIT):
            handles = {k.decode(): v.decode() for k, v in redis.hgetall(workers_key(queue)).items()}
            if handles:
                gone = set(handles) - backend.alive(queue, handles)
                if gone:
                    log.warning("on-demand workers %s of queue %s died without leaving; forgotten", gone, queue)
                    redis.hdel(workers_key(queue), *gone)
                    handles = {k: v for k, v in handles.items() if k not in gone}
            waiting = redis.llen(Queue(queue, connection=redis).key)
            if len(handles) >= min(max_workers, waiting):
                return None
            worker_id = uuid.uuid4().hex
            handle = backend.start(queue, worker_id)
            redis.hset(workers_key(queue), worker_id, handle)
            log.info(
                "started on-demand worker %s (%s) for queue %s, %d job(s) waiting", worker_id, handle, queue, waiting
            )
            return worker_id
    except LockError as exc:
        raise OnDemandError(f"could not take the on-demand lock of queue {queue!r}: {exc}") from exc


def leave_if_drained(redis: Redis, queue_names: Iterable[str], worker_id: str) -> bool:
    """Forget ``worker_id`` and return True if its queues are empty; else False (it goes on)."""
    names = list(queue_names)
    locks: list[Lock] = []
    for name in names:
        lock = redis.lock(lock_key(name), timeout=LOCK_TIMEOUT, blocking_timeout=LOCK_WAIT)
        if not lock.acquire():
            for held in reversed(locks):
                held.release()
            raise LockError(f"could not take the on-demand lock of queue {name!r}")
        locks.append(lock)
    try:
        if any(redis.llen(Queue(name, connection=redis).key) for name in names):
            return False
        for name in names:
            redis.hdel(workers_key(name), worker_id)
        return True
    finally:
        for lock in reversed(locks):
            lock.release()
