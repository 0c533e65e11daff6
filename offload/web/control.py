"""Operator actions on one thing: cancel, stop or requeue a job; cancel a newsletter's unsent
mails; pause or resume a queue; quiet, wake or stop a worker.

Every action is a POST with the page's CSRF token, behind ``auth.operator_required``; an
action that does not fit the job's state answers 409 and changes nothing. Stop, cancel,
requeue and stopping a worker first answer a page asking to confirm (``confirm.py``); pausing,
resuming, quieting and waking undo each other and act at once. Each is written to the operator
log (``audit.py``) and answers with a redirect (303) back to the page, which shows the new state.

Quiet or stop a worker: quiet is Offload's own hold (offload.holds: the worker finishes its
job, takes no more, stays up and can be woken); stop is RQ's shutdown command (a warm
shutdown: the worker finishes its job and exits; a supervisor such as Fly's restart policy
may start a new one).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from flask import Blueprint, abort, current_app, flash, redirect, url_for
from redis import Redis
from rq import Worker
from rq.command import send_shutdown_command, send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.group import Group
from rq.job import Job, JobStatus
from rq.rate_limit import RateLimitRegistry
from rq.serializers import JSONSerializer
from rq.worker.base import BaseWorker

from offload import holds, jobs
from offload.web import audit, confirm, listing
from offload.web.auth import operator_required
from offload.workloads import newsletter

bp = Blueprint("control", __name__)

CANCELABLE = ("queued", "scheduled", "deferred", "rate_limited")
"""States a job can be canceled in: not started (``rate_limited``: waiting for a concurrency slot)."""
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


def _page_of(job: Job) -> str:
    if "web" not in current_app.blueprints:  # an app with the console but not the pages
        return url_for("operators.all_jobs")
    return url_for("web.job_page", job_id=job.id)


def _back(job: Job):
    return redirect(_page_of(job), code=303)


def _ask(job: Job, question: str, detail: str, button: str):
    return confirm.ask(question, detail, button, _page_of(job))


@bp.post("/jobs/<job_id>/cancel")
@operator_required
def cancel_job(job_id: str):
    """Cancel a job that has not started: it leaves its queue (or the schedule) for the canceled registry."""
    job = _job_in(job_id, CANCELABLE, "cancelled")
    if not confirm.confirmed():
        return _ask(job, f"Cancel job {job.id}?", "It will not run; it stays listed as canceled.", "Cancel the job")
    cancel(job_id)
    audit.record("cancel job", 1, job=job.id)
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
    if job.has_rate_limit:
        # RQ's cancel leaves the job in its cap's waiting set, and a queued one's slot held: free
        # both, and let the next waiting job take the slot.
        RateLimitRegistry.from_job(job).cancel(job.id)
    return job


@bp.post("/jobs/<job_id>/stop")
@operator_required
def stop_job(job_id: str):
    """Stop a running job: its worker kills the work horse; the job ends stopped and is not retried."""
    job = _job_in(job_id, STOPPABLE, "stopped")
    if not confirm.confirmed():
        return _ask(
            job, f"Stop job {job.id}?", "Its worker kills it now; it ends stopped and is not retried.", "Stop the job"
        )
    try:
        send_stop_job_command(jobs.get_redis(), job.id, serializer=JSONSerializer)
    except (InvalidJobOperation, NoSuchJobError) as exc:
        abort(409, f"The job could not be stopped: {exc}")
    audit.record("stop job", 1, job=job.id)
    return _back(job)


@bp.post("/jobs/<job_id>/requeue")
@operator_required
def requeue_job(job_id: str):
    """Put a failed or stopped job back on its queue."""
    job = _job_in(job_id, REQUEUEABLE, "requeued")
    if not confirm.confirmed():
        return _ask(job, f"Requeue job {job.id}?", "It goes back on its queue and runs again.", "Requeue the job")
    try:
        job.requeue()
    except InvalidJobOperation as exc:
        abort(409, str(exc))
    audit.record("requeue job", 1, job=job.id)
    return _back(job)


@bp.post("/batches/<batch_id>/cancel")
@operator_required
def cancel_batch(batch_id: str):
    """Cancel a newsletter's unsent mails: its waiting jobs are cancelled, and any that starts anyway skips."""
    redis = jobs.get_redis()
    batch = newsletter.batch_view(redis, batch_id, failures_shown=0)
    if batch is None:
        abort(404, "No such newsletter: it never existed or it has expired.")
    page = url_for("web.batch_page", batch_id=batch_id) if "web" in current_app.blueprints else None
    if not confirm.confirmed():
        return confirm.ask(
            f"Cancel the unsent mails of newsletter {batch_id}?",
            f"Its {batch['pending']} mail(s) not sent yet will not be sent; those sent stay sent.",
            "Cancel the unsent mails",
            page or url_for("operators.all_jobs"),
        )
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
    audit.record("cancel newsletter", len(waiting), batch=batch_id)
    return redirect(page or url_for("operators.all_jobs"), code=303)


def _queue_named(name: str) -> str:
    if name not in listing.queue_names():
        abort(404, f"No queue named {name[:60]!r}.")
    return name


def _hold(change: Callable[[Redis, str], bool], action: str, subject: str, name: str, message: str):
    """Put on or lift one hold (offload.holds), log it, and go back to the queues page saying so."""
    change(jobs.get_redis(), name)
    audit.record(action, 1, **{subject: name})
    flash(message)
    return redirect(url_for("operators.queues"), code=303)


@bp.post("/operator/queues/<name>/pause")
@operator_required
def pause_queue(name: str):
    """Pause a queue: its jobs stay, no worker takes them until it is resumed."""
    message = f"Queue {name} is paused: workers skip it until you resume it."
    return _hold(holds.pause_queue, "pause queue", "queue", _queue_named(name), message)


@bp.post("/operator/queues/<name>/resume")
@operator_required
def resume_queue(name: str):
    """Resume a paused queue: workers take its jobs again (within a couple of seconds)."""
    return _hold(holds.resume_queue, "resume queue", "queue", _queue_named(name), f"Queue {name} is resumed.")


def _worker_named(name: str) -> BaseWorker:
    worker = Worker.find_by_key(Worker.redis_worker_namespace_prefix + name, connection=jobs.get_redis())
    if worker is None:
        abort(404, "No such worker: it has stopped, or never ran.")
    return worker


@bp.post("/operator/workers/<name>/quiet")
@operator_required
def quiet_worker(name: str):
    """Quiet a worker: it finishes the job it runs and takes no more, until woken."""
    worker = _worker_named(name).name
    message = f"Worker {worker} is quiet: it finishes its job and takes no more."
    return _hold(holds.quiet_worker, "quiet worker", "worker", worker, message)


@bp.post("/operator/workers/<name>/wake")
@operator_required
def wake_worker(name: str):
    """Let a quiet worker take jobs again."""
    worker = _worker_named(name).name
    return _hold(holds.wake_worker, "wake worker", "worker", worker, f"Worker {worker} takes jobs again.")


@bp.post("/operator/workers/<name>/stop")
@operator_required
def stop_worker(name: str):
    """Stop a worker (RQ's shutdown command): it finishes its job, then exits."""
    worker = _worker_named(name)
    if not confirm.confirmed():
        return confirm.ask(
            f"Stop worker {worker.name}?",
            "It finishes the job it runs, then exits; whatever supervises it may start a new one.",
            "Stop the worker",
            url_for("operators.queues"),
        )
    send_shutdown_command(jobs.get_redis(), worker.name)
    audit.record("stop worker", 1, worker=worker.name)
    flash(f"Worker {worker.name} stops after its current job.")
    return redirect(url_for("operators.queues"), code=303)
