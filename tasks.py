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
import json
import logging
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass
from math import isqrt
from typing import Annotated, Any
from urllib.parse import unquote, urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import Retry, get_current_job

from retries import backoff_intervals

log = logging.getLogger(__name__)


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
    concurrency_limit: str | None = None
    # Endpoint of the page that starts this task, when the form built from its signature
    # cannot (a newsletter enqueues one job per recipient); such a task is not on /api/jobs.
    own_form: str | None = None

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
    concurrency_limit: str | None = None,
    own_form: str | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the decorated function as a task; its annotated signature is its input.

    ``concurrency_limit`` names a setting (e.g. ``THIRD_PARTY_CONCURRENCY``): at most that many
    jobs of every task naming it are queued or running at once, across all workers.
    """

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
            concurrency_limit=concurrency_limit,
            own_form=own_form,
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
    try:
        job.save_meta()
    except (RedisConnectionError, RedisTimeoutError) as exc:
        # Progress only feeds the job page: a Redis blip must not fail the work itself.
        log.warning("job %s: progress not saved, Redis unreachable (%s)", job.id, exc)


def preload() -> None:
    """Load what jobs should not each load; the worker calls this once, before it forks."""
    import fpdf  # noqa: F401 - importing fpdf2 (with Pillow, fontTools) takes most of a second

    import inference
    import thirdparty  # noqa: F401 - httpx

    inference.load_model()


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
            examples=[50_000_000],
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
    log.info("sieving below %d with %d base primes", limit, len(base_primes))

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

    log.info("found %d primes below %d", count, limit)
    return {
        "limit": limit,
        "primes_below_limit": count,
        "largest_prime": largest,
        "seconds": round(time.perf_counter() - started, 3),
    }


def _csv_table(text: str) -> str:
    from reports import parse_table  # light: fpdf2 loads only when a PDF is built

    parse_table(text)
    return text


@task(
    title="Generate a PDF report",
    description="Lays out a title, text and a table as a PDF; the job page then offers the file for download.",
    queue="default",
    timeout=120,
    retry=Retry(max=1, interval=10),
)
def generate_report(
    title: Annotated[str, Field(min_length=1, max_length=200, title="Title")] = "Quarterly sales",
    text: Annotated[
        str,
        Field(
            max_length=20_000,
            title="Text",
            description="Paragraphs, separated by a blank line.",
            json_schema_extra={"format": "textarea"},
        ),
    ] = "Sales grew in every region this quarter.\n\nThe table below has the figures.",
    table: Annotated[
        str,
        AfterValidator(_csv_table),
        Field(
            max_length=20_000,
            title="Table (CSV)",
            description="The first row holds the headings; up to 200 rows of 8 cells.",
            json_schema_extra={"format": "textarea"},
        ),
    ] = "Region,Q1,Q2\nNorth,120,135\nSouth,98,110",
) -> dict[str, Any]:
    """Build the PDF, store it next to this job for as long as its result, return its metadata."""
    from flask import current_app

    import artifacts
    import reports

    job = get_current_job()
    if job is None:
        raise RuntimeError("generate_report stores its file next to its job: run it on a worker")
    rows = reports.parse_table(table)
    data = reports.build_pdf(title, text, rows, font_path=current_app.config["REPORT_FONT"])
    report_progress(0.8)
    ttl = job.get_result_ttl(current_app.config["RESULT_TTL"])
    artifact = artifacts.get_store().save(job.id, reports.file_name(title), "application/pdf", data, ttl=ttl)
    return {"artifact": artifact.to_json(), "table_rows": len(rows)}


def _api_path(path: str) -> str:
    parts = urlsplit(path)
    if not path.startswith("/") or path.startswith("//") or parts.scheme or parts.netloc:
        raise ValueError("give a path starting with a single /, not a URL: the API's host is fixed")
    if any(char in path for char in "\\#") or any(ord(char) <= 32 or ord(char) == 127 for char in path):
        raise ValueError("no spaces, control characters, backslashes or # in the path")
    if ".." in unquote(parts.path).split("/"):
        raise ValueError("no .. segments in the path")
    return path


def _json_text(text: str) -> str:
    if text.strip():
        try:
            json.loads(text)
        except ValueError as exc:
            raise ValueError(f"not valid JSON ({exc})") from None
    return text


CALL_API_RETRY = Retry(max=4, interval=backoff_intervals(4, base=5, cap=120))
"""Up to 4 retries. A transient API failure raises ``RetryLater`` with a jittered backoff (and
``Retry-After``) that replaces the interval; these 5, 10, 20, 40 s apply to the rest (a job
timeout, a worker that died mid-call)."""


@task(
    title="Call a slow, flaky API",
    description=(
        "One HTTP request to the third-party API configured in THIRD_PARTY_URL. Timeouts, 429 and 5xx "
        "are retried with exponential backoff; other 4xx fail at once. Calls are capped across workers."
    ),
    queue="default",
    timeout=60,
    retry=CALL_API_RETRY,
    concurrency_limit="THIRD_PARTY_CONCURRENCY",
)
def call_api(
    path: Annotated[
        str,
        AfterValidator(_api_path),
        Field(
            min_length=1,
            max_length=500,
            title="Path",
            description="Path and query under the API's base URL, e.g. /status/503 or /get?q=1.",
        ),
    ] = "/get",
    payload: Annotated[
        str,
        AfterValidator(_json_text),
        Field(
            max_length=10_000,
            title="JSON payload",
            description="Optional: when given, it is POSTed as the JSON body; otherwise the call is a GET.",
            json_schema_extra={"format": "textarea"},
        ),
    ] = "",
) -> dict[str, Any]:
    """Make the call and return the answer's status, timing and body (JSON or text)."""
    from flask import current_app

    import thirdparty

    job = get_current_job()
    retry_number = CALL_API_RETRY.max - job.retries_left if job and job.retries_left is not None else 0
    body = json.loads(payload) if payload.strip() else None
    return thirdparty.call(current_app.config, path, body, retry_number=retry_number)


@task(
    title="Identify the language (ML model)",
    description=(
        "Runs a small naive Bayes model (py3langid, 97 languages) over your text. Workers load the "
        "model once, before their first job, so each job only pays for the inference."
    ),
    queue="high",
    timeout=30,
)
def run_model(
    text: Annotated[
        str,
        Field(min_length=1, max_length=10_000, title="Text", json_schema_extra={"format": "textarea"}),
    ] = "Der schnelle braune Fuchs springt über den faulen Hund.",
    top: Annotated[int, Field(ge=1, le=10, title="Candidates to list")] = 3,
) -> dict[str, Any]:
    """Return the most likely languages of ``text``, the inference time and whether the model was warm."""
    from inference import identify_language

    return identify_language(text, top)


@task(
    title="Send newsletter",
    description="Mail a subject and text to up to 10,000 recipients: one job per recipient, each mailed once.",
    queue="low",  # bulk work must not hold up interactive jobs
    timeout=120,
    # 4xx replies and dropped connections, each retry after its interval give or take 20% (newsletter.deliver).
    retry=Retry(max=6, interval=[15, 60, 300, 900, 1800, 3600]),
    own_form="web.newsletter_form",
)
def send_newsletter(
    batch_id: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")],
    to: Annotated[str, Field(max_length=320)],
) -> dict[str, Any]:
    """Mail the newsletter of ``batch_id`` to ``to``, unless it was already accepted for them."""
    import newsletter

    return newsletter.deliver(batch_id, to)


@task(
    title="Clean up expired records",
    description="Prunes what does not expire by itself: the index of expired newsletters, RQ's groups and registries. "
    "Runs nightly (periodic.py); run it now here.",
    queue="low",
    timeout=240,  # ends before fly.toml's kill_timeout, so a deploy never cuts it short
)
def cleanup_expired() -> dict[str, int]:
    """Return how many index entries were pruned."""
    from flask import current_app

    import housekeeping
    import jobs

    return housekeeping.cleanup_expired(jobs.get_redis(), current_app.config["QUEUES"])


@task(
    title="Digest of the last hours",
    description="Counts the jobs that ended, by task and outcome, and the newsletters sent; keeps the last 48 and "
    "mails it to DIGEST_TO when set. Runs hourly (periodic.py).",
    queue="low",
    timeout=120,
)
def hourly_digest(hours: Annotated[int, Field(ge=1, le=168, title="Hours to cover")] = 1) -> dict[str, Any]:
    """Return the digest of the last ``hours``."""
    from flask import current_app

    import housekeeping
    import jobs

    job = get_current_job()
    return housekeeping.hourly_digest(jobs.get_redis(), current_app.config, hours, job.id if job else None)
