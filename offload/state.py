"""What ``Offload.init_app`` keeps per app in ``app.extensions["offload"]``, and how the rest of
the package reads it from ``current_app`` (the shape of Flask's ``examples/celery``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, current_app
from redis import Redis
from rq import Queue

from offload.registry import Task, TaskRegistry

EXTENSION_KEY = "offload"


@dataclass
class State:
    """One app's Offload: its Redis client, its queues, its tasks and its worker hooks."""

    redis: Redis
    queues: dict[str, Queue]
    tasks: TaskRegistry
    worker_startup: list[Callable[[], Any]] = field(default_factory=list)


def get_state(app: Flask | None = None) -> State:
    """Return the Offload state of ``app`` (default: the current app)."""
    target = app if app is not None else current_app
    try:
        return target.extensions[EXTENSION_KEY]
    except KeyError:
        raise RuntimeError("Offload is not set up on this app: call Offload(app) or offload.init_app(app)") from None


def get_redis() -> Redis:
    """Return the current app's Redis client."""
    return get_state().redis


def get_queue(name: str) -> Queue:
    """Return the current app's queue called ``name``."""
    return get_state().queues[name]


def get_tasks() -> TaskRegistry:
    """Return the current app's task registry."""
    return get_state().tasks


def get_task(name: str) -> Task | None:
    """Return the current app's task registered under ``name``, or None."""
    return get_state().tasks.get(name)
