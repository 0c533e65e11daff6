"""The operators' pages: every job with filters, and an overview of queues and workers.

Both need a logged-in operator (``auth.operator_required``); the RQ dashboard at ``/rq``
(``dashboard.py``) has the rest: registries job by job, requeue, delete, empty.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, current_app, render_template, request
from rq import Worker
from rq.serializers import JSONSerializer

from offload import jobs
from offload.state import get_tasks
from offload.web.auth import operator_required
from offload.web.dashboard import current_job

URL_PREFIX = "/operator"

bp = Blueprint("operators", __name__, url_prefix=URL_PREFIX)

REGISTRIES = ("scheduled", "started", "deferred", "finished", "failed", "canceled")


def _choice(name: str, allowed: list[str] | tuple[str, ...]) -> str | None:
    """Return the query parameter ``name`` if it is one of ``allowed`` (None if blank); else 400."""
    value = request.args.get(name) or None
    if value is not None and value not in allowed:
        abort(400, f"Unknown {name} filter; use one of: {', '.join(allowed)}.")
    return value


@bp.get("/jobs")
@operator_required
def all_jobs():
    """Every recent job, newest first, filtered by state, task and queue."""
    queues = current_app.config["OFFLOAD_QUEUES"]
    filters = {
        "state": _choice("state", jobs.LISTED_STATES),
        "task": _choice("task", list(get_tasks())),
        "queue": _choice("queue", queues),
    }
    found = jobs.recent_jobs(limit=current_app.config["OFFLOAD_JOB_LIST_LIMIT"], **filters)
    return render_template(
        "offload/jobs.html",
        jobs=[jobs.job_view(job, with_log=False) for job in found],
        filters=filters,
        states=jobs.LISTED_STATES,
        tasks=get_tasks().values(),
        queues=queues,
    )


def queue_overview() -> list[dict[str, Any]]:
    """Each configured queue: how many jobs wait in it and how many sit in each registry."""
    overview = []
    for name in current_app.config["OFFLOAD_QUEUES"]:
        queue = jobs.get_queue(name)
        counts = {registry: getattr(queue, f"{registry}_job_registry").get_job_count() for registry in REGISTRIES}
        overview.append({"name": name, "queued": queue.count, **counts})
    return overview


def worker_overview() -> list[dict[str, Any]]:
    """Each registered worker: its state, queues, the job it runs now and its totals."""
    overview = []
    for worker in Worker.all(connection=jobs.get_redis(), serializer=JSONSerializer):
        job = current_job(worker)
        overview.append(
            {
                "name": worker.name,
                "hostname": worker.hostname,
                "pid": worker.pid,
                "state": str(worker.get_state()),
                "queues": [queue.name for queue in worker.queues],
                "job": jobs.job_view(job, with_log=False) if job else None,
                "successful": worker.successful_job_count,
                "failed": worker.failed_job_count,
                "last_heartbeat": f"{worker.last_heartbeat:%Y-%m-%d %H:%M:%S} UTC" if worker.last_heartbeat else None,
            }
        )
    return sorted(overview, key=lambda worker: worker["name"])


@bp.get("/queues")
@operator_required
def queues():
    """Depth per queue, counts per registry, and every worker with what it is running."""
    return render_template(
        "offload/queues.html", queues=queue_overview(), workers=worker_overview(), registries=REGISTRIES
    )
