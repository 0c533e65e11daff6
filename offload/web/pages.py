"""The HTML pages: the task forms, a page per job, and the list of jobs."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from typing import Any

from flask import (
    Blueprint,
    abort,
    current_app,
    jsonify,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)
from pydantic import ValidationError
from redis.exceptions import RedisError

from offload import artifacts, jobs, redis_hygiene
from offload.registry import Task, field_errors
from offload.scheduling import ScheduleError, parse_when
from offload.state import get_task, get_tasks
from offload.web import access, control, mine, quotas
from offload.web.auth import is_operator
from offload.web.rate_limits import limiter
from offload.web.security import limit_submissions
from offload.web.setup import on_register
from offload.workloads import newsletter

bp = on_register(Blueprint("web", __name__))


@bp.app_template_filter("offload_pretty_json")
def pretty_json(value: Any) -> str:
    """Indent a JSON value for a <pre>; Jinja escapes the text when it is printed."""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


def form_values(task: Task, form: dict[str, str]) -> dict[str, Any]:
    """Turn submitted form text into params for ``task``: blanks are omitted, checkboxes become bools."""
    values: dict[str, Any] = {}
    for field in task.form_fields():
        name = field["name"]
        if field.get("type") == "boolean":
            values[name] = name in form
        elif form.get(name, "").strip() != "":
            values[name] = form[name]
    return values


@bp.get("/")
def index():
    """Every task with its form."""
    return render_template("offload/index.html", tasks=access.submittable(get_tasks().values()), errors={}, values={})


@bp.post("/tasks/<name>")
@limit_submissions
def submit(name: str):
    """Validate the form, enqueue the job and send the browser to its page (303)."""
    task = get_task(name)
    if task is None:
        abort(404, f"There is no task called {name!r}.")
    access.require_submit(task)
    if task.own_form:
        abort(404, f"{task.title} starts from its own form.")
    if not task.has_form:
        abort(404, f"{task.title} takes structured parameters: start it through the JSON API (POST /api/jobs).")
    values = form_values(task, request.form)
    errors: dict[str, str] = {}
    try:
        params = task.params.model_validate(values)
    except ValidationError as exc:
        errors = field_errors(exc)
    try:
        run_at = form_schedule(request.form)
    except ScheduleError as exc:
        errors[exc.field] = exc.message
    if errors:
        page = render_template(
            "offload/index.html",
            tasks=access.submittable(get_tasks().values()),
            errors={name: errors},
            values={name: request.form},
        )
        return page, 400
    job = jobs.submit_job(task, params, run_at=run_at, job_id=quotas.charge(task, params))
    mine.remember_job(job.id)
    return redirect(url_for("web.job_page", job_id=job.id), code=303)


def form_schedule(form: Mapping[str, str]):
    """The UTC time a form asks its job to run at (its run_at / run_in fields), or None for now."""
    config = current_app.config
    return parse_when(
        form.get("run_at", "").strip(),
        form.get("run_in", "").strip(),
        max_ahead=config["OFFLOAD_SCHEDULE_MAX_AHEAD"],
        tolerance=config["OFFLOAD_SCHEDULE_PAST_TOLERANCE"],
    )


@bp.route("/newsletter", methods=["GET", "POST"])
@limit_submissions
def newsletter_form():
    """The newsletter form; a valid submit enqueues one job per recipient and shows the batch (303)."""
    access.require_submit(newsletter.TASK)
    if request.method == "GET":
        return render_template("offload/newsletter.html", errors={}, values={}, invalid=[], recipients=None)
    config = current_app.config
    upload = request.files.get("recipients_csv")
    errors: dict[str, str] = {}
    try:
        recipients = newsletter.read_recipients(request.form.get("recipients", ""), upload.read() if upload else None)
    except ValueError as exc:
        recipients, errors["recipients_csv"] = newsletter.Recipients(), str(exc)
    submission = newsletter.check_newsletter(
        request.form,
        recipients,
        config["OFFLOAD_NEWSLETTER_MAX_RECIPIENTS"],
        skip_invalid="skip_invalid" in request.form,
    )
    errors = {**submission.errors, **errors}
    try:
        run_at = form_schedule(request.form)
    except ScheduleError as exc:
        errors[exc.field] = exc.message
    if errors:
        page = render_template(
            "offload/newsletter.html",
            errors=errors,
            values=request.form,
            invalid=recipients.invalid[: newsletter.INVALID_SHOWN],
            recipients=recipients,
        )
        return page, 400
    assert submission.text is not None
    batch_id = newsletter.submit_batch(
        jobs.get_queue(newsletter.queue_name()), submission.text, recipients.valid, config=config, run_at=run_at
    )
    mine.remember_batch(batch_id)
    return redirect(url_for("web.batch_page", batch_id=batch_id), code=303)


@bp.get("/batches/<batch_id>")
def batch_page(batch_id: str):
    """One newsletter batch: sent / failed / pending, updated live, and the failures with their reasons."""
    batch = newsletter.batch_view(jobs.get_redis(), batch_id) if access.may_submit(newsletter.TASK) else None
    if batch is None:
        abort(404, "No such newsletter: it never existed or it has expired.")
    return render_template("offload/batch.html", batch=batch)


@bp.get("/jobs/<job_id>")
def job_page(job_id: str):
    """One job: state, progress, timings, attempts, result or error; it updates itself."""
    job = access.readable_job(job_id)
    view = jobs.job_view(job, with_traceback=is_operator())
    return render_template("offload/job.html", job=view, mine=mine.submitted(job.id))


@bp.post("/jobs/<job_id>/withdraw")
def cancel_my_job(job_id: str):
    """The submitter cancels their own job before it starts (CSRF-checked like every form); 303 back to it."""
    access.cancelable_job(job_id)
    control.cancel(job_id)
    return redirect(url_for("web.job_page", job_id=job_id), code=303)


@bp.get("/jobs/<job_id>/files/<name>")
def download_file(job_id: str, name: str):
    """A file the job made, as an attachment; 410 once it has expired with the job's result."""
    job = jobs.fetch_job(job_id)
    result = job.return_value() if job is not None and access.may_read(job) else None
    if not isinstance(result, dict) or (result.get("artifact") or {}).get("name") != name:
        abort(404, "No such file: its job never made it, or it has expired together with the job's result.")
    found = artifacts.get_store().open(job_id, name)
    if found is None:
        abort(410, "This file has expired: files are kept only as long as their job's result. Run the job again.")
    artifact, data = found
    response = send_file(
        io.BytesIO(data), mimetype=artifact.content_type, as_attachment=True, download_name=artifact.name
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "private, no-store"
    return response


@limiter.request_filter
def _health_check_skips_rate_limits() -> bool:
    """True for /healthz: Fly's checks are no clients, and the limiter's own PING of a dead limit
    store (it does one before it looks at exemptions) would cost its timeout here."""
    return request.blueprint == bp.name and request.endpoint == f"{bp.name}.healthz"


@bp.get("/healthz")
def healthz():
    """200 when Redis answers, 503 when it does not, within 1 s either way (a client of its own with
    ``OFFLOAD_REDIS_QUICK_TIMEOUT``): for Fly's health check (5 s) and load balancers. The answer
    names any way this Redis can lose jobs (redis_hygiene.py), without failing the check for it,
    and without its URL: anyone may ask (the log and the operators' banner name it)."""
    probe = redis_hygiene.get_health_client(current_app)
    try:
        probe.ping()
    except RedisError as exc:
        return jsonify(status="unavailable", redis=type(exc).__name__), 503
    # Fly probes every 15 s: the schedule of this process's hygiene check (a few commands every
    # 5 min), and a data loss is noticed within one probe (one GET each).
    hygiene = redis_hygiene.get_watch(current_app).check_if_due()
    return jsonify(status="ok", redis_problems=hygiene.problems(named=False) if hygiene else [])


@bp.get("/jobs")
def job_list():
    """My jobs: the jobs this browser submitted, newest first, optionally filtered by state."""
    state = request.args.get("state") or None
    if state is not None and state not in jobs.LISTED_STATES:
        abort(400, f"Unknown state filter; use one of: {', '.join(jobs.LISTED_STATES)}.")
    found = [job for job in jobs.fetch_jobs(mine.job_ids()) if access.may_read(job)]
    found = jobs.newest_first(found)
    if state is not None:
        found = [job for job in found if job.get_status(refresh=False) == state]
    return render_template(
        "offload/jobs.html",
        jobs=[jobs.job_view(job, with_log=False) for job in found],
        filters={"state": state},
        states=[(name, name) for name in jobs.LISTED_STATES],  # the filter's options as (value, text)
        batches=[] if state else my_batches(),
    )


def my_batches() -> list[dict[str, Any]]:
    """The newsletters this browser sent that have not expired, newest first (counts only)."""
    redis = jobs.get_redis()
    found = (newsletter.batch_view(redis, batch_id, failures_shown=0) for batch_id in mine.batch_ids())
    return [batch for batch in found if batch is not None]
