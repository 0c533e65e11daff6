"""The operators' pages: every job, filtered, searched and paged; queues and workers with their
holds; the throughput dashboard; the operator log.

All need a logged-in operator (``auth.operator_required``). Actions live in ``control.py``
(one job, one queue, one worker) and ``bulk.py`` (many jobs); the RQ dashboard at ``/rq``
(``dashboard.py``) stays for what these pages lack.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, abort, jsonify, render_template, request
from rq import Worker
from rq.rate_limit import RateLimitRegistry
from rq.serializers import JSONSerializer

from offload import holds, jobs, throughput
from offload.state import get_tasks
from offload.web import audit, listing
from offload.web.auth import operator_required
from offload.web.dashboard import current_job

URL_PREFIX = "/operator"

bp = Blueprint("operators", __name__, url_prefix=URL_PREFIX)

REGISTRIES = ("scheduled", "started", "deferred", "finished", "failed", "canceled")


@bp.app_template_filter("offload_short_id")
def _short_id(job_id: str) -> str:
    return listing.short_id(job_id)


def _page_number() -> int:
    raw = request.args.get("page") or "1"
    if not raw.isdigit() or not 0 < int(raw) < 1_000_000:
        abort(400, "page must be a whole number from 1.")
    return int(raw)


@bp.get("/jobs")
@operator_required
def all_jobs():
    """Every job of every queue and registry, newest first: filtered by state, queue, task and
    time, searched by id or a text in its arguments, 50 to a page, with the exact count."""
    wanted = listing.filter_from(request.args)
    found = listing.list_jobs(wanted, _page_number())
    return render_template(
        "offload/operator_jobs.html",
        listing=found,
        pager=listing.page_links(found),
        jobs=[jobs.job_view(job, with_log=False) for job in found.jobs],
        filters=wanted,
        query=wanted.query(),
        # Each filter's options as (value, text).
        states=[(state, state.replace("_", " ")) for state in listing.STATES],
        tasks=[(task.name, task.title) for task in get_tasks().values()],
        queues=[(name, name) for name in listing.queue_names()],
        since=listing.SINCE,
    )


def queue_overview() -> list[dict[str, Any]]:
    """Each queue (on-demand ones too): waiting jobs, jobs per registry, whether it is paused."""
    redis = jobs.get_redis()
    paused = holds.paused_queues(redis)
    waiting_for_slot: dict[str, int] = {}
    for registry in RateLimitRegistry.all(redis):
        for job in jobs.fetch_jobs(registry.get_rate_limited_job_ids()):
            waiting_for_slot[job.origin] = waiting_for_slot.get(job.origin, 0) + 1
    overview = []
    for name in listing.queue_names():
        queue = jobs.get_queue(name)
        counts = {registry: getattr(queue, f"{registry}_job_registry").get_job_count() for registry in REGISTRIES}
        overview.append(
            {
                "name": name,
                "queued": queue.count,
                "rate_limited": waiting_for_slot.get(name, 0),
                "paused": name in paused,
                **counts,
            }
        )
    return overview


def worker_overview() -> list[dict[str, Any]]:
    """Each registered worker: its state (quiet or not), queues, the job it runs now and its totals."""
    redis = jobs.get_redis()
    quiet = holds.quiet_workers(redis)
    overview = []
    for worker in Worker.all(connection=redis, serializer=JSONSerializer):
        job = current_job(worker)
        overview.append(
            {
                "name": worker.name,
                "hostname": worker.hostname,
                "pid": worker.pid,
                "state": str(worker.get_state()),
                "quiet": worker.name in quiet,
                "queues": [queue.name for queue in worker.queues],
                "job": jobs.job_view(job, with_log=False) if job else None,
                "successful": worker.successful_job_count,
                "failed": worker.failed_job_count,
                "last_heartbeat": (
                    worker.last_heartbeat.isoformat(timespec="seconds").replace("+00:00", "Z")
                    if worker.last_heartbeat
                    else None
                ),
            }
        )
    return sorted(overview, key=lambda worker: worker["name"])


@bp.get("/queues")
@operator_required
def queues():
    """Depth per queue, counts per registry, paused queues, and every worker with what it runs."""
    return render_template(
        "offload/queues.html", queues=queue_overview(), workers=worker_overview(), registries=REGISTRIES
    )


@bp.get("/dashboard")
@operator_required
def dashboard():
    """Throughput and queue depth charts over the last hour or day, per queue and per task."""
    return render_template(
        "offload/dashboard.html",
        queues=listing.queue_names(),
        tasks=get_tasks().values(),
        outcomes=throughput.OUTCOMES,
    )


@bp.get("/dashboard.json")
@operator_required
def dashboard_data():
    """The dashboard's series (offload.throughput.read); ``span`` is ``hour`` or ``day``."""
    span = request.args.get("span", "hour")
    if span not in throughput.RANGES:
        abort(400, f"span must be one of: {', '.join(throughput.RANGES)}.")
    redis = jobs.get_redis()
    names = listing.queue_names()
    throughput.sample_depths(redis, names)  # a queue no worker takes from still shows its depth
    data = throughput.read(redis, span)
    data["queues"] = names
    data["paused"] = sorted(holds.paused_queues(redis))
    return jsonify(data), {"Cache-Control": "no-store"}


@bp.get("/log")
@operator_required
def operator_log():
    """What operators did, newest first: who, what, when, to how many."""
    return render_template("offload/operator_log.html", entries=audit.entries())


@bp.app_template_filter("offload_utc_iso")
def _utc_iso(timestamp: float) -> str:
    """A UNIX time as ISO 8601 in UTC, to the second."""
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
