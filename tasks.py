"""The work Offload runs in the background, and the registry that describes it.

A task is one function plus one ``@task(...)`` registration. The function's signature
*is* its input form: each parameter is annotated with its type and limits
(``Annotated[int, Field(ge=10, le=...)]``), from which the registry builds a pydantic
model that validates the web form and the JSON API alike, and which the templates
render as a form. The registration names the rest: title, description, queue,
timeout, retry policy and result TTL.

Keep this module light: the web process imports it to learn each task's name, form and
policy. Heavy libraries are imported inside the task functions, which only run on
workers (``worker.py`` preloads what is worth loading once per process).
"""

from __future__ import annotations

import inspect
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass
from math import isqrt
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, create_model
from rq import Retry, get_current_job


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

    @property
    def path(self) -> str:
        """The import path RQ stores in the job, e.g. ``tasks.crunch_numbers``."""
        return f"{self.func.__module__}.{self.func.__qualname__}"

    @property
    def max_retries(self) -> int:
        return self.retry.max if self.retry else 0

    def form_fields(self) -> list[dict[str, Any]]:
        """Describe each input for a form: name, type, title, limits, default, required."""
        schema = self.params.model_json_schema()
        required = set(schema.get("required", []))
        fields = []
        for name, prop in schema["properties"].items():
            fields.append({"name": name, "required": name in required, **prop})
        return fields


TASKS: dict[str, Task] = {}
"""Every registered task by name; filled as ``@task`` decorators run at import."""


def task(
    *,
    title: str,
    description: str,
    queue: str = "default",
    timeout: int = 180,
    retry: Retry | None = None,
    result_ttl: int | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the decorated function as a task; its annotated signature is its input."""

    def register(func: Callable[..., Any]) -> Callable[..., Any]:
        if func.__name__ in TASKS:
            raise ValueError(f"task {func.__name__!r} is registered twice")
        TASKS[func.__name__] = Task(
            name=func.__name__,
            func=func,
            title=title,
            description=description,
            params=_params_model(func),
            queue=queue,
            timeout=timeout,
            retry=retry,
            result_ttl=result_ttl,
        )
        return func

    return register


def _params_model(func: Callable[..., Any]) -> type[BaseModel]:
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


def get_task(name: str) -> Task | None:
    """Return the task registered under ``name``, or None."""
    return TASKS.get(name)


def report_progress(fraction: float, **details: Any) -> None:
    """Record how far the running job is (0.0 to 1.0) in its meta, for the job page.

    Does nothing outside a worker, so task functions can also be called directly.
    """
    job = get_current_job()
    if job is None:
        return
    job.meta["progress"] = round(max(0.0, min(1.0, fraction)) * 100, 1)
    job.meta.update(details)
    job.save_meta()


# --------------------------------------------------------------------------- tasks


@task(
    title="Crunch numbers",
    description="Count the prime numbers below a limit with a segmented sieve of Eratosthenes.",
    queue="default",
    timeout=240,  # under fly.toml kill_timeout (300 s), so a deploy lets it finish
    retry=Retry(max=2, interval=[10, 30]),
    result_ttl=24 * 3600,
)
def crunch_numbers(
    limit: Annotated[
        int,
        Field(
            ge=10,
            le=2_000_000_000,
            title="Count primes below",
            description="From 10 to 2,000,000,000; a billion takes a few seconds.",
        ),
    ] = 1_000_000_000,
) -> dict[str, Any]:
    """Return how many primes lie below ``limit`` and the largest of them."""
    started = time.perf_counter()
    root = isqrt(limit - 1)
    small = bytearray([1]) * (root + 1)
    small[0] = small[1] = 0
    for p in range(2, isqrt(root) + 1):
        if small[p]:
            small[p * p :: p] = bytes(len(range(p * p, root + 1, p)))
    base_primes = [p for p in range(2, root + 1) if small[p]]

    # 50 segments: progress moves every 2 %, and a segment stays small in memory.
    segment = max(root + 1, -(-limit // 50))
    count = 0
    largest = None
    for low in range(0, limit, segment):
        high = min(low + segment, limit)
        sieve = bytearray([1]) * (high - low)
        for number in range(low, min(2, high)):
            sieve[number - low] = 0
        for p in base_primes:
            if p * p >= high:
                break
            first = max(p * p, -(-low // p) * p)
            sieve[first - low :: p] = bytes(len(range(first - low, high - low, p)))
        count += sieve.count(1)
        last = sieve.rfind(1)
        if last >= 0:
            largest = low + last
        report_progress(high / limit, primes_so_far=count)

    return {
        "limit": limit,
        "primes_below_limit": count,
        "largest_prime": largest,
        "seconds": round(time.perf_counter() - started, 3),
    }
