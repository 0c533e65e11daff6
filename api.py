"""The JSON API: ``POST /api/jobs`` starts a job (202 + Location), ``GET`` reads one back."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, jsonify, request, url_for
from pydantic import ValidationError

import jobs
from auth import is_operator
from tasks import TASKS, get_task

bp = Blueprint("api", __name__, url_prefix="/api")


def field_errors(exc: ValidationError, prefix: str = "") -> dict[str, str]:
    """Map each invalid field (``params.limit``) to a readable message."""
    errors: dict[str, str] = {}
    for error in exc.errors(include_url=False, include_input=False):
        name = ".".join(str(part) for part in error["loc"]) or "params"
        errors.setdefault(f"{prefix}{name}", error["msg"])
    return errors


def _bad_request(message: str, fields: dict[str, str]):
    return jsonify(error=message, fields=fields), 400


@bp.get("/tasks")
def list_tasks():
    """Every task with its queue, policy and the JSON schema of its params."""
    return jsonify(
        tasks=[
            {
                "name": task.name,
                "title": task.title,
                "description": task.description,
                "queue": task.queue,
                "timeout_seconds": task.timeout,
                "max_retries": task.max_retries,
                "params_schema": task.params.model_json_schema(),
            }
            for task in TASKS.values()
        ]
    )


@bp.post("/jobs")
def create_job():
    """Validate ``{"task": ..., "params": {...}}``, enqueue it and answer 202 Accepted."""
    if not request.is_json:
        abort(415, "Send a JSON body with Content-Type: application/json.")
    body: Any = request.get_json(silent=True)
    if body is None:
        return _bad_request("The body is not valid JSON.", {"body": "not valid JSON"})
    if not isinstance(body, dict):
        return _bad_request("The body must be a JSON object.", {"body": "must be an object"})
    unknown = sorted(set(body) - {"task", "params"})
    if unknown:
        return _bad_request("Unknown keys in the body.", {key: "unknown key" for key in unknown})
    name = body.get("task")
    if not isinstance(name, str) or not name:
        return _bad_request("Name the task to run.", {"task": "required, a task name (see GET /api/tasks)"})
    task = get_task(name)
    if task is None:
        return jsonify(error=f"There is no task called {name[:100]!r}.", fields={"task": "unknown task"}), 404
    params = body.get("params", {})
    if not isinstance(params, dict):
        return _bad_request("params must be a JSON object.", {"params": "must be an object"})
    try:
        validated = task.params.model_validate(params)
    except ValidationError as exc:
        return _bad_request("Some parameters are invalid.", field_errors(exc, prefix="params."))

    job = jobs.submit_job(task, validated)
    response = jsonify(jobs.job_view(job))
    response.status_code = 202
    response.headers["Location"] = url_for("api.get_job", job_id=job.id)
    return response


@bp.get("/jobs/<job_id>")
def get_job(job_id: str):
    """The job's state, progress, timings, its log and result or error (and traceback, for operators)."""
    job = jobs.fetch_job(job_id)
    if job is None:
        abort(404, "No such job: it never existed or its result has expired.")
    view = jobs.job_view(job)
    if is_operator():
        view["traceback"] = jobs.job_traceback(job)
    return jsonify(view)
