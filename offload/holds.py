"""Holds on what workers take: paused queues and quiet workers, kept in Redis.

An operator pauses a queue (its jobs stay, no worker takes them) or quiets a worker (it
finishes the job it runs and takes no more, but stays up and registered; unlike RQ's
shutdown command, which ends the process). Both are Redis sets:

- ``offload:paused-queues``: names of the paused queues;
- ``offload:quiet-workers``: names of the quiet workers (a worker's name is unique while it
  lives; the entry of one that has gone is removed by :func:`forget_worker` when it exits).

A worker reads the holds (:func:`read_holds`, :func:`queues_to_take`) once per dequeue cycle:
one round trip, two commands, and an ``LLEN`` per queue for the dashboard's depth chart. It
listens only on the queues it may take from (offload/worker/holds.py), and reads them again
when a job it waited for comes, so a job that arrives after a hold began is put back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

from redis import Redis

PAUSED_KEY = "offload:paused-queues"
QUIET_KEY = "offload:quiet-workers"


class Holds(NamedTuple):
    """What one worker must leave alone now (and how long the queues it asked about were)."""

    paused: frozenset[str]
    quiet: bool
    depths: dict[str, int]

    def takes_from(self, queue: str) -> bool:
        """Return True if the worker may take a job from ``queue``."""
        return not self.quiet and queue not in self.paused

    @property
    def any(self) -> bool:
        return self.quiet or bool(self.paused)


def read_holds(redis: Redis, worker_name: str, queues: Mapping[str, str] | None = None) -> Holds:
    """Return the paused queues, whether ``worker_name`` is quiet and the length of each of
    ``queues`` (name to Redis key), in one round trip."""
    queues = queues or {}
    with redis.pipeline(transaction=False) as pipe:
        pipe.smembers(PAUSED_KEY)
        pipe.sismember(QUIET_KEY, worker_name)
        for key in queues.values():
            pipe.llen(key)
        paused, quiet, *lengths = pipe.execute()
    depths = dict(zip(queues, lengths, strict=True))
    return Holds(frozenset(name.decode() for name in paused), bool(quiet), depths)


def queues_to_take(redis: Redis, worker_name: str, queues: Sequence[str]) -> list[str]:
    """Return those of ``queues`` (in order) that ``worker_name`` may take jobs from now."""
    holds = read_holds(redis, worker_name)
    return [name for name in queues if holds.takes_from(name)]


def paused_queues(redis: Redis) -> set[str]:
    """Return the names of the paused queues."""
    return {name.decode() for name in redis.smembers(PAUSED_KEY)}


def quiet_workers(redis: Redis) -> set[str]:
    """Return the names of the quiet workers."""
    return {name.decode() for name in redis.smembers(QUIET_KEY)}


def pause_queue(redis: Redis, name: str) -> bool:
    """Pause queue ``name``; return False if it already was."""
    return bool(redis.sadd(PAUSED_KEY, name))


def resume_queue(redis: Redis, name: str) -> bool:
    """Resume queue ``name``; return False if it was not paused."""
    return bool(redis.srem(PAUSED_KEY, name))


def quiet_worker(redis: Redis, name: str) -> bool:
    """Quiet worker ``name``: it finishes its job and takes no more. False if it already was."""
    return bool(redis.sadd(QUIET_KEY, name))


def wake_worker(redis: Redis, name: str) -> bool:
    """Let a quiet worker ``name`` take jobs again; False if it was not quiet."""
    return bool(redis.srem(QUIET_KEY, name))


def forget_worker(redis: Redis, name: str) -> None:
    """Drop ``name``'s quiet mark (when the worker ends: the next one with that name starts awake)."""
    redis.srem(QUIET_KEY, name)
