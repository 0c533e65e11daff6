"""The JSON API: ``POST /api/jobs`` starts a job (202 + Location), ``GET`` reads one back."""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, abort, current_app, jsonify, request, url_for
from flask.sansio.blueprints import BlueprintSetupState
from pydantic import ValidationError

from offload import jobs
from offload.registry import MAX_FIELD_ERRORS, field_errors
from offload.scheduling import ScheduleError, parse_when
from offload.state import get_task, get_tasks
from offload.web import access, control, mine, openapi, quotas
from offload.web.auth import is_operator
from offload.web.security import limit_submissions
from offload.web.setup import on_register
from offload.workloads import newsletter

bp = on_register(Blueprint("api", __name__, url_prefix="/api"))


@bp.record_once
def _exempt_from_csrf(state: BlueprintSetupState) -> None:
    # JSON only: browsers cannot send it cross-site without a CORS preflight.
    state.app.extensions["csrf"].exempt(bp)


EMPTY_KEY = '""'
_SURROGATE = re.compile("[\ud800-\udfff]")


def _bad_request(message: str, fields: dict[str, str]):
    return jsonify(error=message, fields=fields), 400


def invalid_text(value: Any, path: str | None = None) -> str | None:
    """Return the path of the first key or string in ``value`` that is not valid Unicode.

    JSON's ``\\ud800`` escapes decode to unpaired surrogates, which pass validation as
    ``str`` and then break every page that prints them as UTF-8.
    """
    if isinstance(value, str):
        return None if value.isascii() or not _SURROGATE.search(value) else (path or "")
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        # Inside the body an empty key is named "" (as field_errors names it), so the path stays readable.
        where = f"{path}.{str(key) or EMPTY_KEY}" if path is not None else str(key)
        if isinstance(key, str) and _SURROGATE.search(key):
            return where
        found = invalid_text(item, where)
        if found:
            return found
    return None


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
                "access": task.access.value,
                "params_schema": task.params_schema,
            }
            for task in access.submittable(get_tasks().values())
        ]
    )


@bp.post("/jobs")
@limit_submissions
def create_job():
    """Validate ``{"task": ..., "params": {...}}``, enqueue it and answer 202 Accepted."""
    body = json_body()
    if body is None:
        return _bad_request("The body is not valid JSON.", {"body": "not valid JSON"})
    if not isinstance(body, dict):
        return _bad_request("The body must be a JSON object.", {"body": "must be an object"})
    bad_text = invalid_text(body)
    if bad_text:
        return _bad_request("Text must be valid Unicode.", {bad_text: "contains an unpaired surrogate"})
    unknown = sorted(set(body) - {"task", "params", "run_at", "run_in"})
    if unknown:
        return _bad_request("Unknown keys in the body.", {key: "unknown key" for key in unknown})
    name = body.get("task")
    if not isinstance(name, str) or not name:
        return _bad_request("Name the task to run.", {"task": "required, a task name (see GET /api/tasks)"})
    task = get_task(name)
    if task is None:
        return jsonify(error=f"There is no task called {name[:100]!r}.", fields={"task": "unknown task"}), 404
    access.require_submit(task)
    if task.own_form:
        return _bad_request(f"{name} is not started here.", {"task": "has its own endpoint (see the README)"})
    params = body.get("params", {})
    if not isinstance(params, dict):
        return _bad_request("params must be a JSON object.", {"params": "must be an object"})
    unknown_params = [key for key in params if key not in task.params.model_fields]
    if len(unknown_params) > MAX_FIELD_ERRORS:  # named before validating: each costs pydantic an error
        listed = {f"params.{key[:100]}": "unknown parameter" for key in unknown_params[:MAX_FIELD_ERRORS]}
        return _bad_request(f"{len(unknown_params)} unknown parameters (the first {MAX_FIELD_ERRORS} named).", listed)
    try:
        validated = task.params.model_validate(params)
    except ValidationError as exc:
        return _bad_request("Some parameters are invalid.", field_errors(exc, prefix="params."))
    try:
        run_at = body_schedule(body)
    except ScheduleError as exc:
        return _bad_request(exc.message, {exc.field: exc.message})

    job = jobs.submit_job(task, validated, run_at=run_at, job_id=quotas.charge(task, validated))
    mine.remember_job(job.id)  # a client that keeps the cookie can list and cancel it
    response = jsonify(jobs.job_view(job, with_log=False))
    response.status_code = 202
    response.headers["Location"] = url_for("api.get_job", job_id=job.id)
    return response


def json_body() -> Any:
    """The request's JSON body, or None if it is not JSON; 415 if it is not sent as JSON, 400 if it
    nests too deeply for the parser (about a thousand levels: Python's recursion limit)."""
    if not request.is_json:
        abort(415, "Send a JSON body with Content-Type: application/json.")
    try:
        return request.get_json(silent=True)
    except RecursionError:
        abort(400, "The body nests arrays or objects too deeply.")


def body_schedule(body: dict[str, Any]):
    """The UTC time a JSON body asks to run at (``run_at`` ISO time or ``run_in`` seconds), or None for now."""
    config = current_app.config
    return parse_when(
        body.get("run_at"),
        body.get("run_in"),
        max_ahead=config["OFFLOAD_SCHEDULE_MAX_AHEAD"],
        tolerance=config["OFFLOAD_SCHEDULE_PAST_TOLERANCE"],
    )


@bp.post("/newsletters")
@limit_submissions
def create_newsletter():
    """Validate ``{"subject", "body", "recipients": [...]}``, enqueue one job per recipient, answer 202."""
    access.require_submit(newsletter.TASK)
    body = json_body()
    if not isinstance(body, dict):
        return _bad_request("The body must be a JSON object.", {"body": "must be an object"})
    unknown = sorted(set(body) - {"subject", "body", "recipients", "skip_invalid", "run_at", "run_in"})
    if unknown:
        return _bad_request("Unknown keys in the body.", {key: "unknown key" for key in unknown})
    given = body.get("recipients")
    if not isinstance(given, list) or not all(isinstance(entry, str) for entry in given):
        return _bad_request("recipients must be a list of addresses.", {"recipients": "must be a list of strings"})
    config = current_app.config
    recipients = newsletter.read_recipients("\n".join(entry.replace("\n", " ") for entry in given))
    submission = newsletter.check_newsletter(
        body,
        recipients,
        config["OFFLOAD_NEWSLETTER_MAX_RECIPIENTS"],
        skip_invalid=body.get("skip_invalid") is True,
        json_client=True,
    )
    errors = dict(submission.errors)
    try:
        run_at = body_schedule(body)
    except ScheduleError as exc:
        errors[exc.field] = exc.message
    if errors:
        invalid = [{"address": entry, "reason": reason} for entry, reason in recipients.invalid]
        response = jsonify(
            error="The newsletter was not sent.", fields=errors, invalid_recipients=invalid[: newsletter.INVALID_SHOWN]
        )
        return response, 400
    assert submission.text is not None
    batch_id = newsletter.submit_batch(
        jobs.get_queue(newsletter.queue_name()), submission.text, recipients.valid, config=config, run_at=run_at
    )
    mine.remember_batch(batch_id)
    response = jsonify(newsletter.batch_view(jobs.get_redis(), batch_id))
    response.status_code = 202
    response.headers["Location"] = url_for("api.get_batch", batch_id=batch_id)
    return response


@bp.get("/batches/<batch_id>")
def get_batch(batch_id: str):
    """A newsletter batch: sent / failed / pending counts and the failures with their reasons."""
    batch = newsletter.batch_view(jobs.get_redis(), batch_id) if access.may_submit(newsletter.TASK) else None
    if batch is None:
        abort(404, "No such newsletter: it never existed or it has expired.")
    return jsonify(batch)


@bp.get("/openapi.json")
def openapi_document():
    """This API's OpenAPI 3.1 document, generated from the models that validate its bodies."""
    base = url_for("api.openapi_document").removeprefix(request.script_root).removesuffix("/openapi.json")
    return jsonify(openapi.document(get_tasks(), base=base, server=request.script_root))


PAGE_LIMIT = 100
MAX_OFFSET = 10_000


def _page_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        abort(400, f"{name} must be a whole number from {low} to {high}.")
    if not low <= value <= high:
        abort(400, f"{name} must be a whole number from {low} to {high}.")
    return value


@bp.get("/jobs")
def list_jobs():
    """One page of jobs, newest first: the ones this client submitted (its session cookie), or, for
    an operator, every job; ``state``, ``task`` and ``queue`` filter, ``offset`` and ``limit`` page."""
    state = request.args.get("state") or None
    if state is not None and state not in jobs.LISTED_STATES:
        abort(400, f"Unknown state; use one of: {', '.join(jobs.LISTED_STATES)}.")
    offset = _page_arg("offset", 0, 0, MAX_OFFSET)
    limit = _page_arg("limit", 20, 1, PAGE_LIMIT)
    task = request.args.get("task") or None
    queue = request.args.get("queue") or None
    operator = is_operator()
    if operator:
        found = jobs.recent_jobs(state, limit=offset + limit + 1, task=task, queue=queue)
    else:
        found = jobs.newest_first([job for job in jobs.fetch_jobs(mine.job_ids()) if access.may_read(job)])
        if state is not None:
            found = [job for job in found if job.get_status(refresh=False) == state]
        if task is not None:
            found = [job for job in found if (job.meta or {}).get("task") == task]
        if queue is not None:
            found = [job for job in found if job.origin == queue]
    shown = found[offset : offset + limit]
    more = len(found) > offset + limit
    filters = {"state": state, "task": task, "queue": queue}
    args: dict[str, Any] = {name: value for name, value in filters.items() if value}
    return jsonify(
        jobs=[jobs.job_view(job, with_traceback=operator, with_log=False) for job in shown],
        offset=offset,
        limit=limit,
        next=url_for("api.list_jobs", offset=offset + limit, limit=limit, **args) if more else None,
    )


@bp.delete("/jobs/<job_id>")
def cancel_job(job_id: str):
    """Cancel a job that has not started: for the client that submitted it, or an operator.

    DELETE, never a POST: a browser cannot send it cross-site without a CORS preflight, so the
    session cookie alone cannot be abused (this blueprint is exempt from the forms' CSRF token).
    """
    access.cancelable_job(job_id)
    canceled = control.cancel(job_id)
    return jsonify(jobs.job_view(canceled, with_traceback=is_operator(), with_log=False))


@bp.get("/jobs/<job_id>")
def get_job(job_id: str):
    """The job's state, progress, timings, its log and result or error (and traceback, for operators)."""
    job = access.readable_job(job_id)
    view = jobs.job_view(job, with_traceback=is_operator())
    return jsonify(view)
