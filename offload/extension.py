"""The Flask extension: ``Offload(app)``, or ``Offload()`` and ``offload.init_app(app)``.

It keeps nothing app-specific on itself (Flask-SQLAlchemy's discipline): ``init_app``
builds each app's Redis client and queues and records them, with this extension's task
registry, in ``app.extensions["offload"]`` (:mod:`offload.state`), so one ``Offload`` can
serve several apps, and the worker and the pages find everything from ``current_app``.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, TypeVar, Unpack, cast, overload

from flask import Flask, current_app
from rq.job import Job

from offload import cli, jobs, redis_hygiene, settings
from offload.connection import connect
from offload.exceptions import InvalidParams, UnknownTask
from offload.queues import make_queues
from offload.registry import Task, TaskOptions, TaskRegistry, job_function
from offload.scheduling import ScheduleError, parse_when
from offload.state import EXTENSION_KEY, State, get_state

F = TypeVar("F", bound=Callable[..., Any])


class Offload:
    """Slow work out of Flask requests: register tasks, submit them, read their jobs back."""

    def __init__(self, app: Flask | None = None) -> None:
        self.tasks = TaskRegistry()
        self._worker_startup: list[Callable[[], Any]] = []
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Set Offload up on ``app``: defaults for every ``OFFLOAD_*`` setting it lacks, its Redis
        client and queues, and the ``flask offload`` commands. Refuses to run twice on one app."""
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError("Offload is already set up on this app (init_app was called twice)")
        settings.apply_defaults(app.config)
        check_tasks(self.tasks.values(), app.config)
        self.tasks.add_check(tasks_checker(app))  # and the tasks registered after this
        redis = connect(app.config)
        redis_hygiene.init_app(app, redis)  # refuses an evicting Redis when OFFLOAD_REQUIRE_SAFE_REDIS is on
        app.extensions[EXTENSION_KEY] = State(
            redis=redis,
            queues=make_queues(redis, app.config),
            tasks=self.tasks,
            worker_startup=self._worker_startup,
        )
        app.cli.add_command(cli.offload_commands)

    @overload
    def task(self, func: F, /) -> F: ...

    @overload
    def task(self, func: None = None, /, **options: Unpack[TaskOptions]) -> Callable[[F], F]: ...

    def task(self, func: Callable[..., Any] | None = None, /, **options: Unpack[TaskOptions]) -> Any:
        """Register the decorated function as a task; its annotated signature is its input form.

        ``@offload.task`` or ``@offload.task(title=..., queue=..., timeout=..., retry=Retry(...),
        result_ttl=..., concurrency_limit=..., access=..., cpu_cost=..., stored_bytes=...)``.
        ``concurrency_limit`` is a number, or the ``app.config`` key of one: at most that many
        jobs of every task naming it are queued or running at once, across all workers.
        ``access`` ("public", "user", "operator") says who may submit it and read its jobs;
        ``cpu_cost`` (seconds, or a function of the validated params) and ``stored_bytes`` are
        what a job is charged against its client's quotas; a result larger than ``stored_bytes``
        fails its job (``ResultTooLarge``). In a job the function gets its arguments as its signature
        types them (a ``datetime``, an ``Enum`` member), and a result that is not JSON fails the job
        (``ResultNotJSON``); called directly, it runs on what it is given. Misspelled or mistyped
        options are refused (TypeError).
        """

        def register(function: F) -> F:
            task = self.tasks.register(function, **options)
            # The module's name for the function is what RQ imports and runs: the job's version of it.
            return cast(F, job_function(task))

        return register(func) if func is not None else register

    def on_worker_start(self, func: F) -> F:
        """Register ``func`` to run once in each worker, before its job process forks: load
        libraries and models there, and every job finds them loaded."""
        self._worker_startup.append(func)
        return func

    def submit(self, name: str, params: Mapping[str, Any] | None = None, run_at: datetime | None = None) -> Job:
        """Validate ``params`` for task ``name``, enqueue it (or schedule it for ``run_at``, an aware
        datetime) and return the RQ job. Raises :class:`~offload.UnknownTask` or
        :class:`~offload.InvalidParams` (naming each bad field); nothing is enqueued then."""
        task = get_state().tasks.get(name)
        if task is None:
            raise UnknownTask(name)
        validated = task.validate(params or {})
        return jobs.submit_job(task, validated, run_at=scheduled_time(name, run_at))

    def fetch(self, job_id: str) -> Job | None:
        """Return the job ``job_id`` of the current app, or None if there is none (or it is not JSON)."""
        return jobs.fetch_job(job_id)


def scheduled_time(name: str, run_at: Any) -> datetime | None:
    """Return when a job of task ``name`` submitted with ``run_at`` runs (None: now), by the rules the
    forms and the API follow (``SCHEDULE_PAST_TOLERANCE``, ``SCHEDULE_MAX_AHEAD``); raise
    :class:`~offload.InvalidParams` naming ``run_at`` otherwise."""
    if run_at is None:
        return None
    if not isinstance(run_at, datetime) or run_at.utcoffset() is None:
        example = "datetime.now(UTC) + timedelta(minutes=5)"
        raise InvalidParams(name, {"run_at": f"must be an aware datetime (with its tzinfo), e.g. {example}"})
    config = current_app.config
    try:
        return parse_when(
            run_at,
            max_ahead=config["OFFLOAD_SCHEDULE_MAX_AHEAD"],
            tolerance=config["OFFLOAD_SCHEDULE_PAST_TOLERANCE"],
        )
    except ScheduleError as exc:
        raise InvalidParams(name, {"run_at": exc.message}) from None


def tasks_checker(app: Flask) -> Callable[[Task], None]:
    """Return a check of one task against ``app``'s settings, for tasks registered after ``init_app``
    (without keeping the app alive: a test suite makes many)."""
    ref = weakref.ref(app)

    def check(task: Task) -> None:
        live = ref()
        if live is not None:
            check_tasks([task], live.config)

    return check


def check_tasks(tasks: Iterable[Task], config: Mapping[str, Any]) -> None:
    """Refuse tasks bound to unknown queues or caps, or on-demand tasks whose retries wait."""
    queues = config["OFFLOAD_QUEUES"] + config["OFFLOAD_ONDEMAND_QUEUES"]
    for task in tasks:
        if task.queue not in queues:
            raise RuntimeError(
                f"task {task.name!r} uses queue {task.queue!r}, which is not in OFFLOAD_QUEUES="
                f"{config['OFFLOAD_QUEUES']} or OFFLOAD_ONDEMAND_QUEUES={config['OFFLOAD_ONDEMAND_QUEUES']}"
            )
        limit = task.concurrency_limit
        if isinstance(limit, str) and not isinstance(config.get(limit), int):
            raise RuntimeError(f"task {task.name!r} is capped by {limit}, which is not a whole-number setting")
        intervals = getattr(task.retry, "intervals", None) or [0]
        if task.queue in config["OFFLOAD_ONDEMAND_QUEUES"] and any(intervals):
            raise RuntimeError(
                f"task {task.name!r} is on on-demand queue {task.queue!r} but retries after {intervals} s; "
                "its worker exits when the queue is empty, so use immediate retries (interval 0) there"
            )
