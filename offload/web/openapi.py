"""The JSON API's OpenAPI 3.1 document, generated from pydantic models.

Request bodies come from the same models that validate the forms and the API (each task's
``params`` model, the newsletter's ``NewsletterText``); answers from the models below, which
say what ``jobs.job_view``, ``newsletter.batch_view`` and the error handlers return.
``GET /api/openapi.json`` serves it; tests/test_openapi.py checks the running app against it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.json_schema import models_json_schema

from offload import jobs
from offload.registry import Task
from offload.workloads.newsletter import NewsletterText

REF = "#/components/schemas/{model}"
API_VERSION = "1.0"
"""The API's version (its paths and shapes), not the package's."""


class Error(BaseModel):
    """Every 4xx/5xx of the API: a sentence, and the wrong fields by name when there are any."""

    error: str = Field(description="What is wrong, in a sentence.")
    fields: dict[str, str] = Field(default_factory=dict, description="Each wrong field (dotted path) and why.")


class InvalidRecipient(BaseModel):
    """An address a newsletter refused, and why."""

    address: str
    reason: str


class NewsletterError(Error):
    """A refused newsletter: the errors, and the first invalid addresses with their reasons."""

    invalid_recipients: list[InvalidRecipient] = Field(default_factory=list)


class Attempt(BaseModel):
    """One run of a job: when, by which worker, and how it ended (``outcome`` null while running)."""

    model_config = ConfigDict(extra="allow")

    started_at: str | None = None
    ended_at: str | None = None
    outcome: str | None = None
    worker: str | None = None
    error: str | None = None


class JobView(BaseModel):
    """A job as ``GET /api/jobs/{job_id}`` shows it (``traceback`` for operators only)."""

    id: str
    task: str | None
    title: str | None
    queue: str
    status: str = Field(description="One of " + ", ".join(jobs.LISTED_STATES) + " (or another state RQ adds).")
    ended: bool
    progress: float
    params: dict[str, Any]
    created_at: str | None
    enqueued_at: str | None
    scheduled_for: str | None
    started_at: str | None
    ended_at: str | None
    duration_seconds: float | None
    timeout_seconds: float | None
    attempts: list[Attempt]
    max_retries: int
    retries_left: int
    result: Any = None
    error: str | None
    log: list[str]
    url: str | None
    api_url: str | None
    batch_url: str | None
    download_url: str | None
    traceback: str | None = None


class JobList(BaseModel):
    """One page of jobs, newest first: the caller's own, or every job for an operator."""

    jobs: list[JobView]
    offset: int
    limit: int
    next: str | None = Field(description="The URL of the next page, or null on the last one.")


class TaskInfo(BaseModel):
    """A task as ``GET /api/tasks`` lists it, with the JSON schema of its params."""

    name: str
    title: str
    description: str
    queue: str
    timeout_seconds: int
    max_retries: int
    params_schema: dict[str, Any]


class TaskList(BaseModel):
    """Every task this app runs."""

    tasks: list[TaskInfo]


class Failure(BaseModel):
    """One mail of a newsletter that failed: to whom, why, and its job."""

    model_config = ConfigDict(extra="allow")

    to: str
    reason: str
    job_id: str | None = None


class Batch(BaseModel):
    """A newsletter batch as ``GET /api/batches/{batch_id}`` shows it."""

    id: str
    subject: str
    total: int
    sent: int
    failed: int
    pending: int
    canceled: int
    done: bool
    created_at: str | None
    send_at: str | None
    canceled_at: str | None
    failures: list[Failure]
    failures_shown: int


RunAt = Field(None, description="Run at this time (ISO 8601; UTC unless it carries an offset).")
RunIn = Field(None, description="Or run after this many seconds.")


class NewsletterRequest(NewsletterText):
    """``POST /api/newsletters``: the text (validated by ``NewsletterText``, as the form is) and to whom."""

    recipients: list[str]
    skip_invalid: bool = False
    run_at: str | None = RunAt
    run_in: int | None = RunIn


def job_request(task: Task) -> type[BaseModel]:
    """The body that starts ``task``: its name, its ``params`` model (the form's), and when."""
    name: Any = Literal[task.name]  # a literal made at run time, one per task
    return create_model(
        f"{task.name}_job",
        __config__=ConfigDict(extra="forbid", title=f"Start {task.title}"),
        task=(name, ...),
        params=(task.params, Field(default_factory=dict)),
        run_at=(str | None, RunAt),
        run_in=(int | None, RunIn),
    )


def _errors(*codes: int) -> dict[str, Any]:
    reasons = {
        400: "The request is invalid; the fields say why. Nothing was enqueued.",
        401: "This task is for signed-in users or the operator: log in first.",
        403: "Not yours: a task above your access level, or a job another client started.",
        404: "No such job, task or batch (never existed, or expired).",
        405: "This method is not allowed here.",
        409: "The job is in a state that does not allow this.",
        413: "The body is over the size limit.",
        415: "The body is not JSON (Content-Type: application/json).",
        429: "Too many submissions from this client; retry later.",
        503: "The job store (Redis) is unreachable; retry in a moment.",
    }
    return {str(code): _answer(reasons[code], "Error") for code in codes}


def _answer(description: str, model: str, **extra: Any) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": REF.format(model=model)}}},
        **extra,
    }


def _path_id(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}, "description": description}


def document(tasks: Mapping[str, Task], base: str = "/api", server: str = "") -> dict[str, Any]:
    """Return the OpenAPI 3.1 document of the JSON API for the app's ``tasks``: its paths under
    ``base`` (where the API blueprint is registered), on ``server`` (the prefix the app is mounted
    at, ``SCRIPT_NAME``; none: the document's own origin)."""
    startable = [task for task in tasks.values() if not task.own_form]
    requests = {task.name: job_request(task) for task in startable}
    models: list[type[BaseModel]] = [
        Error,
        NewsletterError,
        JobView,
        JobList,
        TaskList,
        Batch,
        NewsletterRequest,
        *requests.values(),
    ]
    _, top = models_json_schema([(model, "validation") for model in models], ref_template=REF)
    schemas = top.get("$defs", {})
    schemas["JobRequest"] = {
        "oneOf": [{"$ref": REF.format(model=model.__name__)} for model in requests.values()],
        "discriminator": {
            "propertyName": "task",
            "mapping": {name: REF.format(model=model.__name__) for name, model in requests.items()},
        },
    }
    location = {"Location": {"description": "The new resource's URL.", "schema": {"type": "string"}}}
    job_id = _path_id("job_id", "The job's id (from Location, or the list).")
    state = {
        "name": "state",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "enum": list(jobs.LISTED_STATES)},
    }
    page = [
        state,
        {"name": "task", "in": "query", "required": False, "schema": {"type": "string"}, "description": "A task name."},
        {"name": "queue", "in": "query", "required": False, "schema": {"type": "string"}, "description": "A queue."},
        {"name": "offset", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 0}},
        {
            "name": "limit",
            "in": "query",
            "required": False,
            "schema": {"type": "integer", "minimum": 1, "maximum": 100},
        },
    ]
    json_body = {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": REF.format(model="JobRequest")}}},
    }
    newsletter_body = {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": REF.format(model="NewsletterRequest")}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Offload JSON API",
            "version": API_VERSION,
            "description": "Start slow work on RQ workers and follow it. Jobs are JSON, never pickle.",
        },
        "paths": {
            f"{base}/tasks": {
                "get": {
                    "operationId": "listTasks",
                    "summary": "Every task, with the JSON schema of its params",
                    "responses": {"200": _answer("The tasks.", "TaskList"), **_errors(503)},
                }
            },
            f"{base}/jobs": {
                "post": {
                    "operationId": "createJob",
                    "summary": "Start a job (now, at run_at, or after run_in seconds)",
                    "requestBody": json_body,
                    "responses": {
                        "202": _answer("Enqueued (or scheduled).", "JobView", headers=location),
                        **_errors(400, 401, 403, 404, 413, 415, 429, 503),
                    },
                },
                "get": {
                    "operationId": "listJobs",
                    "summary": "Your jobs (this client's session), newest first; an operator's: every job",
                    "parameters": page,
                    "responses": {"200": _answer("One page of jobs.", "JobList"), **_errors(400, 503)},
                },
            },
            f"{base}/jobs/{{job_id}}": {
                "get": {
                    "operationId": "getJob",
                    "summary": "A job's state, progress, timings, log and result or error",
                    "parameters": [job_id],
                    "responses": {"200": _answer("The job.", "JobView"), **_errors(404, 503)},
                },
                "delete": {
                    "operationId": "cancelJob",
                    "summary": "Cancel a job that has not started (queued, scheduled or deferred)",
                    "parameters": [job_id],
                    "responses": {"200": _answer("Canceled.", "JobView"), **_errors(403, 404, 409, 503)},
                },
            },
            f"{base}/newsletters": {
                "post": {
                    "operationId": "createNewsletter",
                    "summary": "Send a newsletter: one job per distinct valid recipient",
                    "requestBody": newsletter_body,
                    "responses": {
                        "202": _answer("Enqueued.", "Batch", headers=location),
                        "400": _answer("Refused; nothing was enqueued.", "NewsletterError"),
                        **_errors(401, 403, 413, 415, 429, 503),
                    },
                }
            },
            f"{base}/batches/{{batch_id}}": {
                "get": {
                    "operationId": "getBatch",
                    "summary": "A newsletter's counts and failures",
                    "parameters": [_path_id("batch_id", "The batch id (from Location).")],
                    "responses": {"200": _answer("The batch.", "Batch"), **_errors(404, 503)},
                }
            },
            f"{base}/openapi.json": {
                "get": {
                    "operationId": "getOpenAPI",
                    "summary": "This document",
                    "responses": {
                        "200": {
                            "description": "OpenAPI 3.1",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
        },
        "components": {"schemas": schemas},
        **({"servers": [{"url": server}]} if server else {}),
    }
