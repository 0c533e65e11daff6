"""Operator actions from the job and batch pages: cancel, stop, requeue; cancel a newsletter's unsent mails.

Every action is a POST with the page's CSRF token, behind ``auth.operator_required``; an
action that does not fit the job's state answers 409 and changes nothing. Each answers with
a redirect (303) back to the page, which then shows the new state.
"""

from __future__ import annotations

import logging
import time

from flask import Blueprint, abort, current_app, redirect, url_for
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.group import Group
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from offload import jobs
from offload.web.auth import operator_required
from offload.workloads import newsletter

log = logging.getLogger("offload")

bp = Blueprint("control", __name__)

CANCELABLE = ("queued", "scheduled", "deferred")
STOPPABLE = ("started",)
REQUEUEABLE = ("failed", "stopped")


def _job_in(job_id: str, states: tuple[str, ...], action: str) -> Job:
    job = jobs.fetch_job(job_id)
    if job is None:
        abort(404, "No such job: it never existed or its result has expired.")
    found = job.get_status()
    status = found.value if isinstance(found, JobStatus) else str(found)
    if status not in states:
        abort(409, f"Only a {' or '.join(states)} job can be {action}; this one is {status}.")
    return job


def _back(job: Job):
    if "web" not in current_app.blueprints:  # an app with the console but not the pages
        return redirect(url_for("operators.all_jobs"), code=303)
    return redirect(url_for("web.job_page", job_id=job.id), code=303)


@bp.post("/jobs/<job_id>/cancel")
@operator_required
def cancel_job(job_id: str):
    """Cancel a job that has not started: it leaves its queue (or the schedule) for the canceled registry."""
    job = cancel(job_id)
    log.info("Operator canceled job %s", job.id)
    return _back(job)


def cancel(job_id: str) -> Job:
    """Cancel the job ``job_id`` if it has not started, and return it; abort 404 / 409 otherwise.

    The one cancel for every caller: operators here, submitters from their job page and the API.
    """
    job = _job_in(job_id, CANCELABLE, "cancelled")
    try:
        job.cancel()
    except InvalidJobOperation as exc:
        abort(409, str(exc))
    return job


@bp.post("/jobs/<job_id>/stop")
@operator_required
def stop_job(job_id: str):
    """Stop a running job: its worker kills the work horse; the job ends stopped and is not retried."""
    job = _job_in(job_id, STOPPABLE, "stopped")
    try:
        send_stop_job_command(jobs.get_redis(), job.id, serializer=JSONSerializer)
    except (InvalidJobOperation, NoSuchJobError) as exc:
        abort(409, f"The job could not be stopped: {exc}")
    log.info("Operator stopped job %s", job.id)
    return _back(job)


@bp.post("/jobs/<job_id>/requeue")
@operator_required
def requeue_job(job_id: str):
    """Put a failed or stopped job back on its queue."""
    job = _job_in(job_id, REQUEUEABLE, "requeued")
    try:
        job.requeue()
    except InvalidJobOperation as exc:
        abort(409, str(exc))
    log.info("Operator requeued job %s", job.id)
    return _back(job)


@bp.post("/batches/<batch_id>/cancel")
@operator_required
def cancel_batch(batch_id: str):
    """Cancel a newsletter's unsent mails: its waiting jobs are cancelled, and any that starts anyway skips."""
    redis = jobs.get_redis()
    if newsletter.batch_view(redis, batch_id, failures_shown=0) is None:
        abort(404, "No such newsletter: it never existed or it has expired.")
    # The flag first: a job that starts between here and its cancel below sees it and sends nothing.
    if not newsletter.mark_canceled(redis, batch_id, int(time.time())):
        abort(404, "No such newsletter: it has just expired.")
    ids = [raw.decode() for raw in redis.smembers(Group.get_key(batch_id))]
    waiting = [
        job
        for job in Job.fetch_many(ids, connection=redis, serializer=JSONSerializer)
        if job is not None and job.get_status(refresh=False) in CANCELABLE
    ]
    with redis.pipeline() as pipe:
        for job in waiting:
            job.cancel(pipeline=pipe)
        pipe.execute()
    log.info("Operator canceled newsletter %s: %d waiting mails", batch_id, len(waiting))
    if "web" not in current_app.blueprints:
        return redirect(url_for("operators.all_jobs"), code=303)
    return redirect(url_for("web.batch_page", batch_id=batch_id), code=303)
