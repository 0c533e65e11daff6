"""Construction: ``rq worker``'s arguments adapted to Offload's worker.

- The host app is built first (host.py); the worker's settings are its ``OFFLOAD_*`` config.
- JSON whatever ``-S`` says (SECURITY.md): queues built with another serializer are rebuilt
  as JSON queues, keeping their connection, default timeout and the rest of their settings.
- ``--job-class`` / ``--queue-class``: RQ's defaults mean Offload's; a subclass of Offload's is
  used as given; anything else is refused with a message naming the option.
- ``rq worker`` always passes RQ's defaults for the job-monitoring and maintenance intervals;
  those mean "not chosen", so Offload's settings apply.
- No ``connection=``: RQ takes the queues' own connection (``OffloadWorker([queue])``).
- Connecting to a vanished host gives up after ``OFFLOAD_REDIS_CONNECT_TIMEOUT`` instead of the
  kernel's TCP timeout (minutes).
- The stock ``rq worker`` takes its Redis from ``--url`` / ``REDIS_URL`` and listens on
  ``default`` unless given queue names, whatever the app says: with the app named in
  ``OFFLOAD_APP``, the command's worker whose Redis is not the app's (another server, or another database)
  refuses to start, since the app's jobs would never reach it, and one that leaves some of the
  app's queues out says which in its log, unless it serves only its own queues by design
  (``names_left_out_queues = False``: on-demand workers). (``flask offload worker`` takes both from the app.)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, cast

from flask import Flask
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue
from rq.defaults import DEFAULT_JOB_MONITORING_INTERVAL, DEFAULT_MAINTENANCE_TASK_INTERVAL
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.utils import import_attribute

from offload.queues import OffloadQueue
from offload.state import get_state
from offload.worker.base import WorkerBase
from offload.worker.host import command_line_to_check, load_host_app
from offload.worker.job import OffloadJob
from offload.worker.slots import slot_count

log = logging.getLogger("offload.worker")

PUBLIC_NAMES = {OffloadJob: "offload.worker.OffloadJob", OffloadQueue: "offload.queues.OffloadQueue"}


def own_class(given: type | str | None, ours: type, rqs: type, option: str) -> type:
    """Return the job or queue class to use: ours where RQ's default (or none) was given, a
    subclass of ours as given; anything else is refused, naming the option."""
    if isinstance(given, str):
        given = cast(type, import_attribute(given))
    if given is None or given is rqs:
        return ours
    if isinstance(given, type) and issubclass(given, ours):
        return given
    name = f"{given.__module__}.{given.__qualname__}" if isinstance(given, type) else repr(given)
    raise ValueError(
        f"{option} {name} is not a subclass of {PUBLIC_NAMES.get(ours, ours.__qualname__)}, "
        "which Offload's worker needs (JSON jobs, attempt records)"
    )


def check_same_redis(worker_redis: Redis, app: Flask) -> None:
    """Refuse a worker whose Redis (``rq worker --url`` / ``REDIS_URL``) is not ``app``'s
    (``OFFLOAD_REDIS_URL``): another server, told by its run id, or another database. A server
    that does not answer yet is left to the worker's own wait for Redis."""
    app_redis = get_state(app).redis
    databases = [client.connection_pool.connection_kwargs.get("db", 0) for client in (worker_redis, app_redis)]
    try:
        servers = [client.info("server").get("run_id") for client in (worker_redis, app_redis)]
    except RedisError:
        return
    if servers[0] == servers[1] and int(databases[0]) == int(databases[1]):
        return
    raise RuntimeError(
        f"this worker's Redis ({describe(worker_redis)}, from rq worker's --url or REDIS_URL) is not the "
        f"app's ({describe(app_redis)}, OFFLOAD_REDIS_URL): the app's jobs would never reach it. Give rq "
        "worker the app's URL with --url, or start it with `flask --app ... offload worker`"
    )


def describe(redis: Redis) -> str:
    """A Redis client's server and database, without its password."""
    kwargs = redis.connection_pool.connection_kwargs
    where = kwargs.get("path") or f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"
    return f"{where}, database {kwargs.get('db', 0)}"


def json_queue(queue: str | Queue, queue_class: type[Queue], job_class: type[Job]) -> str | Queue:
    """Return ``queue`` as a JSON queue of ``queue_class``, keeping its connection and settings."""
    if isinstance(queue, str):
        return queue
    if isinstance(queue, queue_class) and queue.serializer is JSONSerializer and issubclass(queue.job_class, job_class):
        return queue
    rebuilt_class = type(queue) if isinstance(queue, queue_class) else queue_class
    return rebuilt_class(
        queue.name,
        connection=queue.connection,
        job_class=job_class,
        serializer=JSONSerializer,
        default_timeout=queue._default_timeout,  # RQ has no public reader of it
        is_async=queue.is_async,
        death_penalty_class=queue.death_penalty_class,
    )


class Construction(WorkerBase):
    """Worker mixin: ``__init__``, adapting RQ's arguments (see the module's docstring)."""

    names_left_out_queues: bool = True
    """Whether the stock ``rq worker`` command's worker names the app's queues (``OFFLOAD_QUEUES``) it
    leaves out, in its log. False for a worker class that listens only to queues of its own on
    purpose (``OnDemandWorker``: one on-demand queue), for which that advice would be wrong."""

    def __init__(
        self,
        queues: Sequence[str | Queue] | str | Queue,
        *args: Any,
        job_process_max_jobs: int | None = None,
        job_process_max_memory_mb: int | None = None,
        **kwargs: Any,
    ) -> None:
        # What a slot's worker is built from (slots.py), as given.
        self._init_arguments = (
            (queues, *args),
            {
                **kwargs,
                "job_process_max_jobs": job_process_max_jobs,
                "job_process_max_memory_mb": job_process_max_memory_mb,
            },
        )
        # The host app: its context wraps every job, its config is the worker's (host.py).
        self.flask_app: Flask = load_host_app()
        config = self.flask_app.config
        kwargs["job_class"] = own_class(kwargs.get("job_class"), OffloadJob, Job, "--job-class")
        kwargs["queue_class"] = own_class(kwargs.get("queue_class"), OffloadQueue, Queue, "--queue-class")
        kwargs["serializer"] = JSONSerializer
        if isinstance(queues, str | Queue):
            queues = [queues]
        queues = [json_queue(queue, kwargs["queue_class"], kwargs["job_class"]) for queue in queues]
        if kwargs.get("job_monitoring_interval", DEFAULT_JOB_MONITORING_INTERVAL) == DEFAULT_JOB_MONITORING_INTERVAL:
            kwargs["job_monitoring_interval"] = config["OFFLOAD_WORKER_HEARTBEAT_INTERVAL"]
        if kwargs.get("maintenance_interval", DEFAULT_MAINTENANCE_TASK_INTERVAL) == DEFAULT_MAINTENANCE_TASK_INTERVAL:
            kwargs["maintenance_interval"] = config["OFFLOAD_WORKER_MAINTENANCE_INTERVAL"]
        super().__init__(cast("Sequence[Queue]", queues), *args, **kwargs)  # RQ takes names and queues mixed
        pool_kwargs = self.connection.connection_pool.connection_kwargs
        if pool_kwargs.get("socket_connect_timeout") is None:
            pool_kwargs["socket_connect_timeout"] = config["OFFLOAD_REDIS_CONNECT_TIMEOUT"]
        if command_line_to_check():
            check_same_redis(self.connection, self.flask_app)
            left_out = [name for name in config["OFFLOAD_QUEUES"] if name not in self.queue_names()]
            if left_out and self.names_left_out_queues:
                log.warning(
                    "This worker leaves out the app's queue(s) %s (OFFLOAD_QUEUES): name them after "
                    "`rq worker`, or start it with `flask offload worker`, which listens on all of them",
                    ", ".join(left_out),
                )
        self.full_maintenance_interval: int = config["OFFLOAD_WORKER_FULL_MAINTENANCE_INTERVAL"]
        self.crash_reruns: int = config["OFFLOAD_CRASH_RERUNS"]
        self.slots = slot_count(config["OFFLOAD_WORKER_SLOTS"])
        if job_process_max_jobs is None:
            job_process_max_jobs = config["OFFLOAD_JOB_PROCESS_MAX_JOBS"]
        if job_process_max_memory_mb is None:
            job_process_max_memory_mb = config["OFFLOAD_JOB_PROCESS_MAX_MEMORY_MB"]
        self.job_process_max_jobs = job_process_max_jobs
        self.job_process_max_memory_mb = job_process_max_memory_mb
