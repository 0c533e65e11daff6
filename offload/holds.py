"""Holds on what workers take: paused queues and quiet workers, kept in Redis.

An operator pauses a queue (its jobs stay, no worker takes them) or quiets a worker (it
finishes the job it runs and takes no more, but stays up and registered; unlike RQ's
shutdown command, which ends the process). Both are Redis sets:

- ``offload:paused-queues``: names of the paused queues;
- ``offload:quiet-workers``: names of the quiet workers (a worker's name is unique while it
  lives; the entry of one that has gone is removed by :func:`forget_worker` when it exits).

A worker keeps the holds it read and reads them again (:func:`read_holds`: one round trip, two
commands) only when they change: every change is published on :data:`CHANGED_CHANNEL`, which
the worker listens to on RQ's own pub/sub thread, and in any case every few seconds (for a
message lost while its pub/sub connection was down). A busy worker so pays no round trip per
job for them (offload/worker/holds.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from redis import Redis
from redis.client import Pipeline

PAUSED_KEY = "offload:paused-queues"
QUIET_KEY = "offload:quiet-workers"
CHANGED_CHANNEL = "offload:holds-changed"
"""Pub/sub channel told of every change of the holds (the message is the hold's name)."""


class Holds(NamedTuple):
    """What one worker must leave alone now."""

    paused: frozenset[str]
    quiet: bool

    def takes_from(self, queue: str) -> bool:
        """Return True if the worker may take a job from ``queue``."""
        return not self.quiet and queue not in self.paused

    @property
    def any(self) -> bool:
        return self.quiet or bool(self.paused)


def add_read(pipe: Pipeline, worker_name: str) -> None:
    """Add to ``pipe`` the two commands that read the holds of ``worker_name`` (:func:`parse_read`)."""
    pipe.smembers(PAUSED_KEY)
    pipe.sismember(QUIET_KEY, worker_name)


def parse_read(replies: Sequence[Any]) -> Holds:
    """Return the holds from the replies to :func:`add_read`'s two commands."""
    paused, quiet = replies
    return Holds(frozenset(name.decode() for name in paused), bool(quiet))


def read_holds(redis: Redis, worker_name: str) -> Holds:
    """Return the paused queues and whether ``worker_name`` is quiet (one round trip)."""
    with redis.pipeline(transaction=False) as pipe:
        add_read(pipe, worker_name)
        return parse_read(pipe.execute())


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


def _change(redis: Redis, command: str, key: str, name: str) -> bool:
    """Run SADD or SREM of ``name`` on ``key`` and tell the workers, in one round trip."""
    with redis.pipeline() as pipe:
        pipe.execute_command(command, key, name)
        pipe.publish(CHANGED_CHANNEL, name)
        changed, _ = pipe.execute()
    return bool(changed)


def pause_queue(redis: Redis, name: str) -> bool:
    """Pause queue ``name``; return False if it already was."""
    return _change(redis, "SADD", PAUSED_KEY, name)


def resume_queue(redis: Redis, name: str) -> bool:
    """Resume queue ``name``; return False if it was not paused."""
    return _change(redis, "SREM", PAUSED_KEY, name)


def quiet_worker(redis: Redis, name: str) -> bool:
    """Quiet worker ``name``: it finishes its job and takes no more. False if it already was."""
    return _change(redis, "SADD", QUIET_KEY, name)


def wake_worker(redis: Redis, name: str) -> bool:
    """Let a quiet worker ``name`` take jobs again; False if it was not quiet."""
    return _change(redis, "SREM", QUIET_KEY, name)


def forget_worker(redis: Redis, name: str) -> None:
    """Drop ``name``'s quiet mark (when the worker ends: the next one with that name starts awake)."""
    redis.srem(QUIET_KEY, name)
