"""Jobs as an app sees them: submitting, fetching, listing and describing them.

Both the HTML pages and the JSON API go through this module (and ``Offload.submit`` /
``Offload.fetch``), so a job looks the same everywhere.
"""

from __future__ import annotations

import contextlib
import re
from datetime import UTC, datetime
from typing import Any

from flask import current_app, url_for
from pydantic import BaseModel
from rq import Queue
from rq.exceptions import DeserializationError, NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import BaseRegistry
from rq.serializers import JSONSerializer

from offload import joblog, ondemand
from offload.registry import Task
from offload.state import get_queue, get_redis, get_state, get_task

ENDED_STATES = frozenset({"finished", "failed", "stopped", "canceled"})
"""States a job never leaves by itself; the job page stops polling in these."""

LISTED_STATES = ("queued", "scheduled", "started", "deferred", "finished", "failed", "stopped", "canceled")

_JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_QUALIFIED_ERROR = re.compile(r"^(?:[A-Za-z_][\w]*\.)+([A-Za-z_]\w*(?::|$))")
_ERROR_CLASS = re.compile(r"^(?:[A-Za-z_]\w*\.)*([A-Za-z_]\w*)(?::\s*(.*))?$", re.DOTALL)
_WORKER_DIED = "The worker running this job stopped unexpectedly."


def submit_job(task: Task, params: BaseModel, run_at: datetime | None = None, job_id: str | None = None) -> Job:
    """Enqueue ``task`` with validated ``params`` (or schedule it for ``run_at``) and return the new job
    (with id ``job_id`` when given: the quotas charge a job before it exists)."""
    config = current_app.config
    queue = get_queue(task.queue)
    delay = max(0, int((run_at - datetime.now(UTC)).total_seconds())) if run_at else 0
    job = queue.create_job(
        task.path,
        kwargs=params.model_dump(mode="json"),
        timeout=task.timeout,
        result_ttl=task.result_ttl if task.result_ttl is not None else config["OFFLOAD_RESULT_TTL"],
        failure_ttl=config["OFFLOAD_FAILURE_TTL"],
        ttl=config["OFFLOAD_JOB_TTL"] + delay,  # a scheduled job's key must outlive its wait
        retry=task.retry,
        # Inline (RUN_JOBS_INLINE), a job runs alone in its submit: no cap to wait for, and RQ has none there.
        rate_limit=task.rate_limit(config) if queue.is_async else None,
        # RQ's default description repeats the arguments; a fixed title keeps user text out of it.
        description=task.title,
        meta={"task": task.name, "progress": 0},
        job_id=job_id,
    )
    if run_at is not None:
        return queue.schedule_job(job, run_at)
    job = queue.enqueue_job(job)  # with RUN_JOBS_INLINE, run here and now
    if queue.is_async:
        ondemand.job_enqueued(task.queue, job.id)  # on an on-demand queue: start a worker for it
    return job


def fetch_job(job_id: str) -> Job | None:
    """Return the job with ``job_id``, or None if the id is malformed, unknown, expired or unreadable."""
    if not _JOB_ID.fullmatch(job_id):
        return None
    try:
        job = Job.fetch(job_id, connection=get_redis(), serializer=JSONSerializer)
    except NoSuchJobError:
        return None
    return None if unreadable(job) else job


def unreadable(job: Job) -> str | None:
    """Return why ``job`` cannot be read as JSON (pickled or forged data), or None if it can.

    Such a job is never decoded any other way: workers refuse it, pages treat it as absent.
    """
    try:
        _ = job.kwargs  # decodes the function and arguments
    except DeserializationError:
        return "its function and arguments are not JSON"
    # RQ keeps meta it cannot decode as {"unserialized": <the raw bytes>}; JSON has no bytes.
    if job.meta.keys() == {"unserialized"} and isinstance(job.meta["unserialized"], bytes):
        return "its meta is not JSON"
    return None


def registries(queue: Queue) -> dict[str, BaseRegistry]:
    """Return ``queue``'s registries by the state of the jobs in each."""
    return {
        "scheduled": queue.scheduled_job_registry,
        "started": queue.started_job_registry,
        "deferred": queue.deferred_job_registry,
        "finished": queue.finished_job_registry,
        "failed": queue.failed_job_registry,
        "canceled": queue.canceled_job_registry,
    }


def recent_jobs(
    state: str | None = None, limit: int = 100, task: str | None = None, queue: str | None = None
) -> list[Job]:
    """Return up to ``limit`` jobs, newest first, optionally only those in ``state``, of ``task``, on ``queue``."""
    ids: list[str] = []
    for name, rq_queue in get_state().queues.items():
        if queue is not None and name != queue:
            continue
        if state in (None, "queued"):
            ids += rq_queue.get_job_ids(0, limit - 1)
        for registry_name, registry in registries(rq_queue).items():
            if state in (None, registry_name) or (state == "stopped" and registry_name == "failed"):
                # Read only: RQ's cleanup would fail abandoned jobs before the workers' maintenance
                # gives them their crash re-run (worker.OffloadWorker.clean_registries).
                ids += registry.get_job_ids(0, limit - 1, desc=True, cleanup=False)
    jobs = fetch_jobs(list(dict.fromkeys(ids)))
    if state is not None:
        # A registry can briefly hold a job that already moved on; trust the job's own status.
        jobs = [job for job in jobs if job.get_status(refresh=False) == state]
    if task is not None:
        jobs = [job for job in jobs if (job.meta or {}).get("task") == task]
    return newest_first(jobs)[:limit]


def fetch_jobs(job_ids: list[str]) -> list[Job]:
    """Return the jobs with these ids that still exist, in the same order."""
    valid = [job_id for job_id in job_ids if _JOB_ID.fullmatch(job_id)]
    fetched = Job.fetch_many(valid, connection=get_redis(), serializer=JSONSerializer)
    return [job for job in fetched if job and not unreadable(job)]


def newest_first(jobs: list[Job]) -> list[Job]:
    """Return ``jobs`` sorted by creation time, newest first."""
    epoch = datetime.min.replace(tzinfo=UTC)
    return sorted(jobs, key=lambda job: _aware(job.created_at) or epoch, reverse=True)


def attempts(job: Job) -> list[dict[str, Any]]:
    """Each run of ``job``, oldest first: ``{started_at, ended_at, outcome, worker[, error]}``
    (``outcome`` None while it runs).

    A run that ended without finishing (failed, crashed, stopped) is recorded in the job's meta
    as it ends. The run under way, or the one that finished the job, is the job's own fields
    (``started_at``, ``ended_at``, ``worker_name``, status), which RQ writes anyway: a job that
    finishes on its first run keeps no record at all, and its hash stays in Redis's compact
    encoding (docs/capacity.md). Jobs recorded by earlier releases (every run in meta) read the same.
    """
    recorded = [dict(attempt) for attempt in (job.meta or {}).get("attempts", [])]
    status = job.get_status(refresh=False)
    if status not in (JobStatus.STARTED, JobStatus.FINISHED) or job.started_at is None:
        return recorded
    start = attempt_time(job.started_at)
    if recorded and (recorded[-1].get("outcome") in (None, "finished") or recorded[-1].get("started_at") == start):
        # The current run is recorded already: by an earlier release (which recorded every run),
        # or it has just ended without finishing (its record is written as the task raises, its
        # status, failed or queued again for a retry, a moment later).
        return recorded
    finished = status == JobStatus.FINISHED
    current = {
        "started_at": start,
        "ended_at": attempt_time(job.ended_at) if finished else None,
        "outcome": "finished" if finished else None,
        "worker": job.worker_name,
    }
    return [*recorded, current]


def attempt_time(moment: datetime | None) -> str | None:
    """A moment as attempt records write it: UTC, to the millisecond (``2026-11-30T21:30:56.244Z``)."""
    moment = _aware(moment)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z") if moment else None


def _aware(moment: datetime | None) -> datetime | None:
    """RQ stores naive UTC datetimes; make them explicit."""
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _iso(moment: datetime | None) -> str | None:
    moment = _aware(moment)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z") if moment else None


def short_error(job: Job) -> str | None:
    """Return a one-line reason a failed job failed, safe to show to its submitter."""
    recorded = (job.meta or {}).get("attempts") or []
    if recorded and recorded[-1].get("error"):
        return recorded[-1]["error"]
    result = job.latest_result()
    exc = getattr(result, "exc_string", None) if result else None
    if not exc:
        return None
    lines = [line for line in exc.strip().splitlines() if line.strip()]
    return error_line(lines[-1]) if lines else None


def human_error(line: str | None) -> str | None:
    """Return an error as its submitter reads it: a sentence, without exception class paths or RQ's internals.

    ``thirdparty.APIUnavailable: no answer within 5 s`` -> ``No answer within 5 s.``; RQ's
    "work-horse terminated" lines become one plain sentence. Operators keep the details (the
    attempts as recorded, and the traceback).
    """
    if not line:
        return line
    text = line.strip()
    lowered = text.lower()
    if "work-horse terminated" in lowered or "work horse" in lowered or "abandonedjoberror" in lowered:
        return "Stopped on request." if lowered.startswith("job stopped by user") else _WORKER_DIED
    match = _ERROR_CLASS.match(text)
    if match is None:  # already a sentence (e.g. "timed out after 30 s", "stopped on request")
        message = text
    elif match.group(2):
        message = match.group(2).strip()
    else:
        return f"The task failed ({match.group(1)})."
    message = message[0].upper() + message[1:]
    return message if message.endswith((".", "!", "?", ")")) else message + "."


def error_line(line: str) -> str:
    """Return an exception's one line as users see it: ``pkg.mod.SomeError: msg`` -> ``SomeError: msg``."""
    return _QUALIFIED_ERROR.sub(r"\1", line.strip())[:500]


def job_view(job: Job, with_traceback: bool = False, with_log: bool = True) -> dict[str, Any]:
    """Return everything the job page and the API show about ``job``, as JSON values: with
    its traceback when ``with_traceback`` (operators only); without reading its log when
    not ``with_log`` (lists, and a job this request has just submitted, which has logged
    nothing yet), so the view costs no Redis round trip."""
    status = job.get_status(refresh=False)
    status_name = status.value if isinstance(status, JobStatus) else str(status)
    meta = job.meta or {}
    task = get_task(meta.get("task", ""))
    started, ended = _aware(job.started_at), _aware(job.ended_at)
    duration = (ended - started).total_seconds() if started and ended and ended >= started else None
    max_retries = task.max_retries if task else 0
    view: dict[str, Any] = {
        "id": job.id,
        "task": task.name if task else job.func_name,
        "title": task.title if task else job.func_name,
        "queue": job.origin,
        "status": status_name,
        "ended": status_name in ENDED_STATES,
        # A finished job is done, whether or not its task reported progress on the way.
        "progress": 100 if status_name == "finished" else meta.get("progress", 0),
        "params": job.kwargs,
        "created_at": _iso(job.created_at),
        "enqueued_at": _iso(job.enqueued_at),
        "scheduled_for": None,
        "started_at": _iso(job.started_at),
        "ended_at": _iso(job.ended_at) if status_name in ENDED_STATES else None,
        "duration_seconds": round(duration, 3) if duration is not None and status_name in ENDED_STATES else None,
        "timeout_seconds": job.timeout,
        "attempts": _attempts(attempts(job), detailed=with_traceback),
        "max_retries": max_retries,
        "retries_left": job.retries_left if job.retries_left is not None else max_retries,
        "result": job.return_value() if status_name == "finished" else None,
        "error": _error(job, detailed=with_traceback) if status_name in ("failed", "stopped") else None,
        "log": job_log(job) if with_log else [],
        "url": _url("web.job_page", job_id=job.id),
        "api_url": _url("api.get_job", job_id=job.id),
        "batch_url": _url("web.batch_page", batch_id=meta["batch"]) if meta.get("batch") else None,
    }
    artifact = view["result"].get("artifact") if isinstance(view["result"], dict) else None
    view["download_url"] = _url("web.download_file", job_id=job.id, name=artifact["name"]) if artifact else None
    if status_name == "scheduled":
        queue = get_state().queues.get(job.origin)
        if queue is not None:
            with contextlib.suppress(NoSuchJobError):
                view["scheduled_for"] = _iso(queue.scheduled_job_registry.get_scheduled_time(job))
    if with_traceback:
        view["traceback"] = job_traceback(job)
    return view


def _error(job: Job, detailed: bool) -> str | None:
    """The job's error: as recorded for operators (``detailed``), as a sentence for anyone else."""
    error = short_error(job)
    return error if detailed else human_error(error)


def _attempts(runs: list[dict[str, Any]], detailed: bool) -> list[dict[str, Any]]:
    """The attempt records: as recorded for operators (``detailed``), errors as sentences for anyone else."""
    if detailed:
        return runs
    return [{**run, "error": human_error(run.get("error"))} if run.get("error") else run for run in runs]


def _url(endpoint: str, **values: Any) -> str | None:
    """The URL of ``endpoint``, or None when the app did not register the blueprint that has it."""
    if endpoint.partition(".")[0] not in current_app.blueprints:
        return None
    return url_for(endpoint, **values)


def job_log(job: Job) -> list[str]:
    """Return what the job's task logged while it ran (``joblog``), oldest line first."""
    return joblog.read(get_redis(), job.id)


def job_traceback(job: Job) -> str | None:
    """Return the full traceback of a failed or stopped job: for operators only, never its submitter."""
    if job.get_status(refresh=False) not in ("failed", "stopped"):
        return None
    result = job.latest_result()
    return getattr(result, "exc_string", None) if result else None
