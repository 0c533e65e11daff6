"""The reference app's tasks: the work it runs in the background.

Add a task here: a function with an annotated signature (its form and its API schema) and an
``@offload.task(...)`` registration (title, queue, timeout, retry, result TTL, concurrency cap).
The page lists it at once, and the worker runs it (README: "Add a task").

Keep this module light: the web process imports it to learn each task's name, form and
policy. Heavy libraries are imported inside the task functions, which only run on workers;
``preload`` loads what is worth loading once per worker process.
"""

from __future__ import annotations

import json
from typing import Annotated, Any
from urllib.parse import unquote, urlsplit

from pydantic import AfterValidator, Field
from rq import Retry, get_current_job

from offload import Offload, report_progress
from offload.retries import backoff_intervals
from offload.settings import all_queue_names

offload = Offload()
"""The reference app's Offload; ``app.create_app`` sets it up on the app."""


@offload.on_worker_start
def preload() -> None:
    """Load what jobs should not each load; every worker calls this once, before it forks."""
    import fpdf  # noqa: F401 - importing fpdf2 (with Pillow, fontTools) takes most of a second

    from offload.workloads import (
        inference,
        thirdparty,  # noqa: F401 - httpx
    )

    inference.load_model()


# --------------------------------------------------------------------------- tasks

SIEVE_SECONDS_PER_NUMBER = 21e-9
"""CPU seconds the sieve spends per number on a Fly shared CPU (2,000,000,000 took 41.5 s there)."""


def _sieve_cpu_seconds(params: Any) -> float:
    return params.limit * SIEVE_SECONDS_PER_NUMBER


@offload.task(
    title="Crunch numbers",
    description="Count the prime numbers below a limit with a segmented sieve of Eratosthenes.",
    queue="default",
    timeout=240,  # under fly.toml kill_timeout (300 s), so a deploy lets it finish
    retry=Retry(max=2, interval=[10, 30]),
    result_ttl=24 * 3600,
    # Charged to the client's hourly CPU quota (QUOTA_CPU_SECONDS_PER_HOUR): a billion is about 21 s.
    cpu_cost=_sieve_cpu_seconds,
    stored_bytes=1024,
)
def crunch_numbers(
    limit: Annotated[
        int,
        Field(
            ge=10,
            # A billion is about 21 s of CPU on a Fly shared CPU: one job never holds a worker for long.
            le=1_000_000_000,
            title="Count primes below",
            description="From 10 to 1,000,000,000; a hundred million takes a second or two.",
            examples=[50_000_000],
        ),
    ] = 100_000_000,
) -> dict[str, Any]:
    """Return how many primes lie below ``limit`` and the largest of them."""
    from offload.workloads.primes import count_primes

    return count_primes(limit, report_progress)


def _csv_table(text: str) -> str:
    from offload.workloads.reports import parse_table  # light: fpdf2 loads only when a PDF is built

    parse_table(text)
    return text


@offload.task(
    title="Generate a PDF report",
    description="Lays out a title, text and a table as a PDF; the job page then offers the file for download.",
    queue="default",
    timeout=120,
    retry=Retry(max=1, interval=10),
    stored_bytes=1024 * 1024,  # the PDF: 20,000 characters of text and 200 rows come to well under that
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

    from offload import artifacts
    from offload.workloads import reports

    job = get_current_job()
    if job is None:
        raise RuntimeError("generate_report stores its file next to its job: run it on a worker")
    rows = reports.parse_table(table)
    data = reports.build_pdf(title, text, rows, font_path=current_app.config["OFFLOAD_REPORT_FONT"])
    report_progress(0.8)
    ttl = job.get_result_ttl(current_app.config["OFFLOAD_RESULT_TTL"])
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


MAX_PAYLOAD_DEPTH = 32
"""Most levels of arrays and objects a call_api payload may nest: the API's echo of it is decoded
and searched for the token level by level (``thirdparty.redact``)."""


def _json_text(text: str) -> str:
    """``text`` if it is JSON the API call can send: no NaN or Infinity (which JSON does not have,
    and which httpx refuses to send), nested at most ``MAX_PAYLOAD_DEPTH`` levels."""
    if not text.strip():
        return text
    try:
        value = json.loads(text, parse_constant=_not_json)
    except RecursionError:
        raise ValueError(f"nested too deeply (at most {MAX_PAYLOAD_DEPTH} levels)") from None
    except ValueError as exc:
        raise ValueError(f"not valid JSON ({exc})") from None
    if _depth(value) > MAX_PAYLOAD_DEPTH:
        raise ValueError(f"nested too deeply (at most {MAX_PAYLOAD_DEPTH} levels)")
    return text


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _depth(value: Any) -> int:
    """How many levels of arrays and objects ``value`` nests (without recursing: it may be deep)."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, level = pending.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is not None:
            deepest = max(deepest, level)
            pending.extend((child, level + 1) for child in children)
    return deepest


CALL_API_RETRY = Retry(max=4, interval=backoff_intervals(4, base=5, cap=120))
"""Up to 4 retries. A transient API failure raises ``RetryLater`` with a jittered backoff (and
``Retry-After``) that replaces the interval; these 5, 10, 20, 40 s apply to the rest (a job
timeout, a worker that died mid-call)."""


@offload.task(
    title="Call a slow, flaky API",
    description=(
        "One HTTP request to the third-party API configured in THIRD_PARTY_URL. Timeouts, 429 and 5xx "
        "are retried with exponential backoff; other 4xx fail at once. Calls are capped across workers."
    ),
    queue="default",
    timeout=60,
    retry=CALL_API_RETRY,
    concurrency_limit="OFFLOAD_THIRD_PARTY_CONCURRENCY",
    # The answer's body is cut at 64 KiB (thirdparty.MAX_BODY_BYTES); stored as JSON, escapes can
    # make text up to 6 times longer (\ufffd for each undecodable byte, \u0001 for a control character).
    stored_bytes=400 * 1024,
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

    from offload.workloads import thirdparty

    job = get_current_job()
    retry_number = CALL_API_RETRY.max - job.retries_left if job and job.retries_left is not None else 0
    body = json.loads(payload) if payload.strip() else None
    return thirdparty.call(current_app.config, path, body, retry_number=retry_number)


@offload.task(
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
    from offload.workloads.inference import identify_language

    return identify_language(text, top)


@offload.task(
    title="Send newsletter",
    description="Mail a subject and text to up to 10,000 recipients: one job per recipient, each mailed once.",
    queue="low",  # bulk work must not hold up interactive jobs
    timeout=120,
    # 4xx replies and dropped connections, each retry after its interval give or take 20% (newsletter.deliver).
    retry=Retry(max=6, interval=[15, 60, 300, 900, 1800, 3600]),
    own_form="web.newsletter_form",
    # Mail to any address the submitter types: never open to anonymous visitors (an open relay).
    access="user",
)
def send_newsletter(
    batch_id: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")],
    to: Annotated[str, Field(max_length=320)],
) -> dict[str, Any]:
    """Mail the newsletter of ``batch_id`` to ``to``, unless it was already accepted for them."""
    from offload.workloads import newsletter

    return newsletter.deliver(batch_id, to)


@offload.task(
    title="Clean up expired records",
    description="Prunes what does not expire by itself: the index of expired newsletters, RQ's groups and registries. "
    "Runs nightly (periodic.py); run it now here.",
    queue="low",
    timeout=240,  # ends before fly.toml's kill_timeout, so a deploy never cuts it short
    # Housekeeping, at a predictable id (periodic-cleanup_expired-<n>): the operator's alone.
    access="operator",
)
def cleanup_expired() -> dict[str, int]:
    """Return how many index entries were pruned."""
    from flask import current_app

    from offload.state import get_redis
    from offload.workloads import housekeeping

    return housekeeping.cleanup_expired(get_redis(), all_queue_names(current_app.config))


@offload.task(
    title="Digest of the last hours",
    description="Counts the jobs that ended, by task and outcome, and the newsletters sent; keeps the last 48 and "
    "mails it to DIGEST_TO when set. Runs hourly (periodic.py).",
    queue="low",
    timeout=120,
    # Counts of everyone's jobs, at a predictable id (periodic-hourly_digest-<n>): the operator's alone.
    access="operator",
)
def hourly_digest(hours: Annotated[int, Field(ge=1, le=168, title="Hours to cover")] = 1) -> dict[str, Any]:
    """Return the digest of the last ``hours``."""
    from flask import current_app

    from offload.state import get_redis
    from offload.workloads import housekeeping

    job = get_current_job()
    return housekeeping.hourly_digest(get_redis(), current_app.config, hours, job.id if job else None)
