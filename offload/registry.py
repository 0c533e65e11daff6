"""Tasks and the registry that describes them.

A task is one function plus one registration (``@offload.task(...)``). The function's
signature *is* its input form: each parameter is annotated with its type and limits
(``Annotated[int, Field(ge=10, le=...)]``), from which the registry builds a pydantic
model that validates the web form and the JSON API alike, and which the templates render
as a form. The registration names the rest: title, description, queue, timeout, retry
policy, result TTL, concurrency cap, who may run it (``access``) and what a job of it costs
(``cpu_cost``, ``stored_bytes``), which the per-client quotas charge.
"""

from __future__ import annotations

import functools
import inspect
import json
import typing
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypedDict, Unpack

from pydantic import BaseModel, ConfigDict, ValidationError, create_model
from rq import RateLimit, Retry, get_current_job

from offload.exceptions import InvalidParams
from offload.retries import PermanentError


class Access(StrEnum):
    """Who may submit a task, and read its jobs: each level includes the ones above it."""

    PUBLIC = "public"  # anyone who reaches the web
    USER = "user"  # a signed-in user; the operator login is Offload's only account, so it signs in
    OPERATOR = "operator"  # the operator only

    def allows(self, level: Access) -> bool:
        """Return True if a visitor of ``level`` may use what this level guards."""
        order = list(Access)
        return order.index(level) >= order.index(self)


DEFAULT_STORED_BYTES = 16 * 1024
"""What a job is taken to keep in Redis besides its arguments (its result) unless its task says."""


class ResultTooLarge(PermanentError):
    """A job returned more than its task declares (``stored_bytes``); it fails instead of storing it."""


CpuCost = float | Callable[[BaseModel], float]


@dataclass(frozen=True)
class Task:
    """A registered task: the function, its input model and how the queue treats it."""

    name: str
    func: Callable[..., Any]
    title: str
    description: str
    params: type[BaseModel]
    queue: str
    timeout: int
    retry: Retry | None
    result_ttl: int | None
    # At most this many jobs queued or running at once across all workers: a number, or the
    # app.config key of one; tasks naming the same key share the cap.
    concurrency_limit: int | str | None = None
    # Endpoint of the page that starts this task, when the form built from its signature
    # cannot (a newsletter enqueues one job per recipient); such a task is not on /api/jobs.
    own_form: str | None = None
    # Who may submit it and read its jobs.
    access: Access = Access.PUBLIC
    # Seconds of CPU one job takes at most, or a function of its validated params giving them;
    # charged against the submitting client's hourly CPU quota. None: not charged.
    cpu_cost: CpuCost | None = None
    # Most bytes a job keeps in Redis besides its arguments (result, files), charged to the client.
    stored_bytes: int = DEFAULT_STORED_BYTES

    def job_cpu_seconds(self, params: BaseModel) -> float:
        """Return the CPU seconds a job of this task with ``params`` is charged (0 for a task with no cost)."""
        cost = self.cpu_cost
        if cost is None:
            return 0.0
        return float(cost(params) if callable(cost) else cost)

    @property
    def path(self) -> str:
        """The import path RQ stores in the job, e.g. ``tasks.crunch_numbers``."""
        return f"{self.func.__module__}.{self.func.__qualname__}"

    @property
    def max_retries(self) -> int:
        """How many times a failed job of this task is retried."""
        return self.retry.max if self.retry else 0

    def validate(self, params: Mapping[str, Any]) -> BaseModel:
        """Return ``params`` validated against the task's signature; raise InvalidParams naming each bad field."""
        try:
            return self.params.model_validate(params)
        except ValidationError as exc:
            raise InvalidParams(self.name, field_errors(exc)) from None

    def rate_limit(self, config: Mapping[str, Any]) -> RateLimit | None:
        """Return RQ's concurrency cap for this task's jobs under ``config``, or None."""
        limit = self.concurrency_limit
        if limit is None:
            return None
        if isinstance(limit, int):
            return RateLimit(f"task:{self.name}", limit)
        return RateLimit(limit, config[limit])

    @functools.cached_property
    def params_schema(self) -> Mapping[str, Any]:
        """The JSON schema of the task's inputs, built once (pydantic builds it anew on every call)."""
        return self.params.model_json_schema()

    def form_fields(self) -> list[dict[str, Any]]:
        """Describe each input for a form: name, type, title, limits, default, required."""
        schema = self.params_schema
        required = set(schema.get("required", []))
        return [{"name": name, "required": name in required, **prop} for name, prop in schema["properties"].items()]

    @functools.cached_property
    def has_form(self) -> bool:
        """Whether a form of text inputs, numbers, checkboxes and choices can give every parameter;
        a nested model, a list or a mapping takes the JSON API (or an ``own_form``)."""
        return not any(_structured(field) for field in self.form_fields())


def _structured(schema: Mapping[str, Any]) -> bool:
    """Whether a JSON schema property needs more than one form input: an object, an array, a model."""
    if "$ref" in schema or schema.get("type") in ("object", "array"):
        return True
    return any(_structured(option) for option in (*schema.get("anyOf", ()), *schema.get("allOf", ())))


class TaskOptions(TypedDict, total=False):
    """How a task is registered (``@offload.task(**options)``); every key is optional."""

    title: str  # shown on its form and job pages (default: from the function's name)
    description: str  # default: the first paragraph of its docstring
    queue: str  # default "default"
    timeout: int  # seconds; default 180 (RQ's)
    retry: Retry | None  # RQ's Retry(max=..., interval=[...]); default: none
    result_ttl: int | None  # seconds the result is kept; default OFFLOAD_RESULT_TTL
    concurrency_limit: int | str | None  # at most this many queued or running at once (or the config key of it)
    own_form: str | None  # the endpoint of the page that starts it, when its signature's form cannot
    access: Access | str  # "public" (default), "user" (signed in) or "operator": who may submit it and read its jobs
    cpu_cost: CpuCost | None  # seconds of CPU a job takes (or a function of its params), charged to the client
    stored_bytes: int  # most bytes a job keeps besides its arguments (result, files); default 16 KiB
    name: str  # default: the function's name


def check_options(func: Callable[..., Any], options: Mapping[str, Any]) -> None:
    """Raise TypeError for a registration option that does not exist or has the wrong type or value:
    ``@offload.task(timout=30)`` would otherwise run with the default timeout unnoticed."""
    where = f"@offload.task on {func.__name__}"
    unknown = sorted(set(options) - set(TaskOptions.__annotations__))
    if unknown:
        raise TypeError(
            f"{where}: unknown option(s) {', '.join(unknown)}; known: {', '.join(TaskOptions.__annotations__)}"
        )

    def whole(name: str, least: int, optional: bool = False) -> None:
        value = options.get(name)
        if name not in options or (optional and value is None):
            return
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise TypeError(f"{where}: {name} must be a whole number of at least {least}, not {value!r}")

    whole("timeout", 1)
    whole("stored_bytes", 1)
    whole("result_ttl", -1, optional=True)  # RQ's: -1 keeps the result for ever, 0 not at all
    for name in ("title", "description", "queue", "name"):
        if name in options and not isinstance(options[name], str):
            raise TypeError(f"{where}: {name} must be text, not {options[name]!r}")
    if not options.get("queue", "default"):
        raise TypeError(f"{where}: queue must name a queue")
    retry = options.get("retry")
    if retry is not None and not isinstance(retry, Retry):
        raise TypeError(f"{where}: retry must be rq.Retry(max=..., interval=...) or None, not {retry!r}")
    if "access" in options and options["access"] not in set(Access):
        raise TypeError(f"{where}: access must be one of {', '.join(Access)}, not {options['access']!r}")


class TaskRegistry(MutableMapping[str, Task]):
    """The tasks of one :class:`offload.Offload`, by name (a mapping) and by the import path RQ stores."""

    def __init__(self) -> None:
        self._by_name: dict[str, Task] = {}
        self._by_path: dict[str, Task] = {}
        self._checks: list[Callable[[Task], None]] = []

    def add_check(self, check: Callable[[Task], None]) -> None:
        """Run ``check`` on every task registered from now on (it raises to refuse one): an app set
        up before its tasks are imported still refuses a task its settings cannot run."""
        self._checks.append(check)

    def register(self, func: Callable[..., Any], **options: Unpack[TaskOptions]) -> Task:
        """Register ``func`` as a task and return it; a second task of the same name, or an option
        misspelled or of the wrong type, is refused."""
        check_options(func, options)
        if func.__module__ == "__main__":
            # The job would name __main__.<function>: no worker can import that (its own __main__
            # is rq's or flask's), and the job would wait for a worker that knows it, then fail.
            raise TypeError(
                f"@offload.task on {func.__name__}: defined in a script run as __main__ (python app.py), which "
                "no worker can import; run the app by its module name (flask --app app run, gunicorn app:app), "
                "or define the tasks in a module it imports (tasks.py)"
            )
        task_name = options.get("name") or func.__name__
        if task_name in self._by_name:
            raise ValueError(f"task {task_name!r} is registered twice")
        doc = inspect.getdoc(func) or ""
        title = options.get("title")
        description = options.get("description")
        task = Task(
            name=task_name,
            func=func,
            title=title or task_name.replace("_", " ").capitalize(),
            description=description if description is not None else doc.split("\n\n")[0],
            params=params_model(func),
            queue=options.get("queue", "default"),
            timeout=options.get("timeout", 180),
            retry=options.get("retry"),
            result_ttl=options.get("result_ttl"),
            concurrency_limit=options.get("concurrency_limit"),
            own_form=options.get("own_form"),
            access=Access(options.get("access", Access.PUBLIC)),
            cpu_cost=options.get("cpu_cost"),
            stored_bytes=options.get("stored_bytes", DEFAULT_STORED_BYTES),
        )
        for check in self._checks:
            check(task)
        self[task_name] = task
        return task

    def by_path(self, path: str) -> Task | None:
        """Return the task whose function RQ stores as ``path`` (``module.function``), or None."""
        return self._by_path.get(path)

    def __getitem__(self, name: str) -> Task:
        return self._by_name[name]

    def __setitem__(self, name: str, task: Task) -> None:
        if name != task.name:
            raise ValueError(f"task {task.name!r} cannot be stored as {name!r}")
        self.pop(name, None)
        self._by_name[name] = task
        self._by_path[task.path] = task

    def __delitem__(self, name: str) -> None:
        task = self._by_name.pop(name)
        if self._by_path.get(task.path) is task:
            del self._by_path[task.path]
            # Another name for the same function (an alias) still makes its path a task.
            for other in self._by_name.values():
                if other.path == task.path:
                    self._by_path[task.path] = other
                    break

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)


class ParamsRefused(PermanentError):
    """A job's arguments do not fit its task's signature (a job enqueued by another client, or by an
    older release); it fails at once, naming each bad field, instead of running on wrong types."""


class ResultNotJSON(PermanentError):
    """A job returned a value JSON cannot hold; it fails instead of RQ storing a placeholder."""


def job_function(task: Task) -> Callable[..., Any]:
    """Return ``task``'s function as its jobs run it (what the module's name is bound to, so what
    RQ imports):

    - inside a job, its arguments go through the task's params model first, so the function gets
      the types its signature declares (a ``datetime``, an ``Enum`` member, a nested model), not
      the JSON values the job stores; arguments that do not fit fail the job (:class:`ParamsRefused`);
    - its result must be JSON (:class:`ResultNotJSON`) and at most its ``stored_bytes``
      (:class:`ResultTooLarge`), both failures that retrying cannot fix: the bytes quota charges
      what a task declares, and this keeps the declaration true. Files a job stores are capped
      apart (``ARTIFACT_MAX_BYTES``).

    Called outside a job, the function runs on what it is given; its result is checked the same.
    """
    func = task.func
    signature = inspect.signature(func)

    def typed(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        try:
            params = task.params.model_validate(signature.bind(*args, **kwargs).arguments)
        except TypeError as exc:  # positional arguments that do not bind
            raise ParamsRefused(f"invalid arguments for task {task.name!r}: {exc}") from None
        except ValidationError as exc:
            raise ParamsRefused(str(InvalidParams(task.name, field_errors(exc)))) from None
        return {name: getattr(params, name) for name in task.params.model_fields}

    @functools.wraps(func)
    def as_job(*args: Any, **kwargs: Any) -> Any:
        result = func(**typed(args, kwargs)) if get_current_job() is not None else func(*args, **kwargs)
        try:
            # Measured as RQ's JSON serializer stores it (non-ASCII text escaped).
            size = len(json.dumps(result).encode())
        except (TypeError, ValueError) as exc:
            raise ResultNotJSON(f"task {task.name} returned a value that is not JSON ({exc})") from None
        if size > task.stored_bytes:
            raise ResultTooLarge(
                f"the result is {size} bytes, over the {task.stored_bytes} "
                f"that task {task.name} declares (stored_bytes)"
            )
        return result

    return as_job


def params_model(func: Callable[..., Any]) -> type[BaseModel]:
    """Build the pydantic model of ``func``'s keyword parameters (unknown keys refused)."""
    hints = typing.get_type_hints(func, include_extras=True)
    fields: dict[str, Any] = {}
    for name, param in inspect.signature(func).parameters.items():
        if name not in hints:
            raise TypeError(f"{func.__name__}: parameter {name!r} needs a type annotation")
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[name] = (hints[name], default)
    model_name = "".join(part.title() for part in func.__name__.split("_")) + "Params"
    return create_model(model_name, __config__=ConfigDict(extra="forbid"), **fields)


MAX_FIELD_ERRORS = 20
"""Most invalid fields an answer names: a body with thousands of bad keys gets a short answer."""


def field_errors(exc: ValidationError, prefix: str = "") -> dict[str, str]:
    """Map each invalid field (``params.limit``) of ``exc`` to a readable message (the first
    ``MAX_FIELD_ERRORS`` of them)."""
    errors: dict[str, str] = {}
    for error in exc.errors(include_url=False, include_input=False):
        if len(errors) >= MAX_FIELD_ERRORS:
            break
        # An empty key is named "" (not dropped), so every message points at something.
        name = ".".join(str(part) or '""' for part in error["loc"])
        errors.setdefault(f"{prefix}{name}" if name else prefix.rstrip(".") or "params", error["msg"])
    return errors
