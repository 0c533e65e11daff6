"""The app's side: after a job lands on an on-demand queue, have a worker started for it, off the
request's thread, with the backend the settings name."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from flask import current_app
from redis import Redis
from redis.exceptions import RedisError

from offload.ondemand.drain import Backend, OnDemandError, ensure_worker
from offload.ondemand.fly import SET_BY_FLY, FlyBackend
from offload.ondemand.local import LocalBackend
from offload.settings import APP_ENV, to_environ
from offload.state import get_redis

log = logging.getLogger("offload.ondemand")

EXTENSION_KEY = "offload_ondemand"


def host_app_path() -> str:
    """The host app an on-demand worker loads: ``OFFLOAD_APP`` if set, else ``FLASK_APP``, else the
    current app's import name, which ``flask --app`` resolves."""
    return os.environ.get(APP_ENV) or os.environ.get("FLASK_APP") or current_app.import_name


def worker_settings(config: Mapping[str, Any]) -> dict[str, str]:
    """The settings an on-demand worker is started with, as environment variables, wherever it runs:
    those of the process that starts it (the web, the scheduler, a worker handing work on), so that
    it runs as that process's app and workers do, and hands work on the same way.

    Every Offload setting of ``config`` (``offload.settings.to_environ``) except the secrets and what
    Fly sets on every Machine itself (``SET_BY_FLY``), plus ``OFFLOAD_APP``. On Fly they go over the
    ``config.env`` of the Machine that starts it (fly.py): settings a host app sets in code, or an
    earlier on-demand Machine got from its own starter, win over fly.toml's ``[env]`` there."""
    return {**to_environ(config, leave_out=SET_BY_FLY), APP_ENV: host_app_path()}


def worker_env(config: Mapping[str, Any]) -> dict[str, str]:
    """The environment a local on-demand worker gets on top of this process's: :func:`worker_settings`
    and its Redis."""
    return {**worker_settings(config), "REDIS_URL": config["OFFLOAD_REDIS_URL"]}


def make_backend(config: Mapping[str, Any]) -> Backend:
    """The backend ``ONDEMAND_BACKEND`` names, configured from settings."""
    if config["OFFLOAD_ONDEMAND_BACKEND"] == "fly":
        return FlyBackend(
            api_url=config["OFFLOAD_FLY_API_URL"],
            token=config["OFFLOAD_FLY_API_TOKEN"],
            app_name=config["OFFLOAD_FLY_APP_NAME"],
            image=config["OFFLOAD_FLY_IMAGE_REF"],
            region=config["OFFLOAD_FLY_REGION"],
            cpus=config["OFFLOAD_ONDEMAND_VM_CPUS"],
            memory_mb=config["OFFLOAD_ONDEMAND_VM_MEMORY_MB"],
            # REDIS_URL, FLY_API_TOKEN and the other secrets come from the app's Fly secrets, which
            # every Machine of the app gets; never from its config, which anyone reading the
            # Machine (fly machine status) sees.
            env=worker_settings(config),
            machine_id=config["OFFLOAD_FLY_MACHINE_ID"],  # whose config.env (fly.toml's [env]) to hand on
        )
    return LocalBackend({**os.environ, **worker_env(config)})


class Starter:
    """Starts on-demand workers off the request's thread: a submit never waits for the queue's
    lock or for the Machines API (up to ``LOCK_WAIT`` plus the Fly backend's budget, ~35 s).

    One thread per web process does the starting. Submits to a queue while a start for it is
    waiting coalesce into that one; a submit that arrives while a start runs asks for another
    after it, so the last job is always looked at."""

    def __init__(self, redis: Redis, backend: Backend, max_workers: int) -> None:
        self.redis, self.backend, self.max_workers = redis, backend, max_workers
        self._waiting: dict[str, str] = {}  # queue -> id of the job that asked
        self._guard = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="offload-ondemand")

    def request(self, queue: str, job_id: str) -> Future[None] | None:
        """Ask for a worker for ``queue`` (job ``job_id`` waits there); return the pending start, if new."""
        with self._guard:
            if queue in self._waiting:
                return None
            self._waiting[queue] = job_id
        return self._executor.submit(self._start, queue)

    def _start(self, queue: str) -> None:
        with self._guard:
            job_id = self._waiting.pop(queue)
        try:
            ensure_worker(self.redis, self.backend, queue, self.max_workers)
        except (OnDemandError, RedisError) as exc:
            # The job is safely queued; the next submit to the queue tries again.
            log.error("job %s waits on queue %s: no on-demand worker could be started: %s", job_id, queue, exc)
        except Exception:
            log.exception("job %s waits on queue %s: starting an on-demand worker failed", job_id, queue)


def job_enqueued(queue: str, job_id: str) -> Future[None] | None:
    """After a job lands on ``queue``: have an on-demand worker started for it, without waiting."""
    config = current_app.config
    if queue not in config["OFFLOAD_ONDEMAND_QUEUES"]:
        return None
    starter = current_app.extensions.get(EXTENSION_KEY)
    if starter is None:
        try:
            backend = make_backend(config)
        except OnDemandError as exc:
            log.error("job %s waits on queue %s: no on-demand worker could be started: %s", job_id, queue, exc)
            return None
        starter = Starter(get_redis(), backend, config["OFFLOAD_ONDEMAND_MAX_WORKERS"])
        starter = current_app.extensions.setdefault(EXTENSION_KEY, starter)  # one per app, whichever thread won
    return starter.request(queue, job_id)
