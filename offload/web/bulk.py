"""Bulk actions on the operators' job lists: retry or delete every failed job of a filter, cancel
every scheduled one, empty a queue.

Each is a CSRF-protected POST behind the operator login, taking the list's filter as form
fields (queue, task, since, q). The first POST answers a page saying how many jobs it would
touch; only the confirming POST acts, on the jobs that match at that moment, each checked
again (a job that moved on meanwhile is left alone). Each is written to the operator log.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Blueprint, abort, flash, redirect, request, url_for
from rq.exceptions import InvalidJobOperation
from rq.job import Job

from offload import jobs
from offload.state import get_queue
from offload.web import audit, confirm, listing
from offload.web.auth import operator_required

bp = Blueprint("bulk", __name__)


def _describe(wanted: listing.JobFilter) -> str:
    parts = [f"{name} {value}" for name, value in (("queue", wanted.queue), ("task", wanted.task)) if value]
    if wanted.since:
        parts.append(f"created in the last {wanted.since}")
    if wanted.text:
        parts.append(f"mentioning “{wanted.text}”")
    return ", ".join(parts) or "every queue and task"


def _act(
    state: str,
    verb: str,
    past: str,
    action: str,
    apply: Callable[[Job], object],
    back_state: str | None,
):
    wanted = listing.filter_from(request.form, state=state)
    ids = listing.matching_ids(wanted)
    scope = _describe(wanted)
    back = url_for("operators.all_jobs", **wanted.query())
    if not confirm.confirmed():
        noun = "job" if len(ids) == 1 else "jobs"
        return confirm.ask(
            f"{verb} {len(ids)} {state} {noun}?",
            f"The {state} jobs of {scope}, as they are when you confirm.",
            f"{verb} {len(ids)} {noun}",
            back,
            fields={name: value for name, value in wanted.query().items() if name != "state"},
        )
    done = 0
    for start in range(0, len(ids), 500):
        for job in jobs.fetch_jobs(ids[start : start + 500]):
            if job.get_status(refresh=False) != state:
                continue  # it moved on since the list was read
            try:
                apply(job)
            except InvalidJobOperation:  # it moved on between the two reads
                continue
            done += 1
    audit.record(action, done, **{**wanted.query(), "state": state})
    flash(f"{past} {done} {state} job{'s' if done != 1 else ''}.")
    after = {**wanted.query(), "state": back_state} if back_state else wanted.query()
    return redirect(url_for("operators.all_jobs", **after), code=303)


@bp.post("/bulk/retry-failed")
@operator_required
def retry_failed():
    """Put every failed job of the filter back on its queue."""
    return _act("failed", "Retry", "Retried", "retry failed jobs", Job.requeue, "queued")


@bp.post("/bulk/delete-failed")
@operator_required
def delete_failed():
    """Delete every failed job of the filter, its result and log with it."""
    return _act("failed", "Delete", "Deleted", "delete failed jobs", Job.delete, None)


@bp.post("/bulk/cancel-scheduled")
@operator_required
def cancel_scheduled():
    """Cancel every scheduled job of the filter: it will not run, and is kept in the canceled registry."""
    return _act("scheduled", "Cancel", "Canceled", "cancel scheduled jobs", Job.cancel, "canceled")


@bp.post("/queues/<name>/empty")
@operator_required
def empty_queue(name: str):
    """Delete every job waiting in queue ``name`` (started, scheduled and ended jobs stay)."""
    if name not in listing.queue_names():
        abort(404, f"No queue named {name[:60]!r}.")
    queue = get_queue(name)
    back = url_for("operators.queues")
    if not confirm.confirmed():
        return confirm.ask(
            f"Empty queue {name}?",
            f"The {queue.count} jobs waiting in it are deleted and never run.",
            f"Delete {queue.count} waiting jobs",
            back,
        )
    deleted = queue.empty()
    audit.record("empty queue", int(deleted or 0), queue=name)
    flash(f"Emptied queue {name}: {int(deleted or 0)} waiting jobs deleted.")
    return redirect(back, code=303)
