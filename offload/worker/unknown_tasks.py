"""Jobs whose task the worker does not know: put back for a worker that knows it, failed after a grace time.

A worker runs only the jobs of registered tasks of its host app (``@offload.task``), plus the
functions of the modules ``UNREGISTERED_JOB_MODULES`` lists (empty in production; the tests list
their fixtures). Any other job's function is never imported, let alone run (SECURITY.md).

Such a job is usually no attack: during a rolling deploy the web of the new release enqueues a
task that workers of the old release do not have yet. So the worker neither runs it nor spends its
retries: it puts the job back a few seconds out (the scheduled registry, so it does not take the
same job again at once; the scheduler then requeues it at the back) and a worker that knows the
task runs it. On an on-demand queue, which no scheduler serves, it goes to the back of the queue
at once and the worker pauses a second. Only once workers have been putting it back for
``UNKNOWN_TASK_GRACE`` seconds (since the first of them did, recorded in the job's meta) is it
failed, with a message saying that no worker knows its task; its retries are left as they were,
so a requeue after the deploy gets them all.

Only the job's function is checked: the callbacks a job names (a newsletter's ``on_failure``) are
Offload's own and run as RQ runs them. ``OffloadWorker.execute_job`` calls :func:`set_aside` for
every job it dequeued, before anything of the job is imported.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from offload.registry import TaskRegistry

if TYPE_CHECKING:
    from rq import Queue
    from rq.job import Job

    from offload.worker.worker import OffloadWorker

SINCE = "unknown_task_since"
"""Job meta: when (epoch seconds) a worker first put the job back because it did not know its task."""

PUT_BACK = "unknown_task_put_back"
"""Job meta: how many times workers put the job back."""

RECHECK_DELAY = 5
"""Seconds a put-back job waits before it is queued again (less when the grace time ends sooner)."""

ONDEMAND_PAUSE = 1.0
"""Seconds a worker pauses after putting a job back at the end of an on-demand queue (no scheduler there)."""


def is_known(func_name: str, tasks: TaskRegistry, config: Mapping[str, Any]) -> bool:
    """Return True if a worker with ``tasks`` and ``config`` may run a job of function ``func_name``."""
    if tasks.by_path(func_name) is not None:
        return True
    module = func_name.rpartition(".")[0]
    return bool(module) and module in config["OFFLOAD_UNREGISTERED_JOB_MODULES"]


def set_aside(worker: OffloadWorker, job: Job, queue: Queue) -> bool:
    """Put ``job`` back, or fail it once its grace time is over, if ``worker`` does not know its
    task; return True then (the worker must not run it), False for a job it may run."""
    config = worker.flask_app.config
    func_name = job.func_name or ""
    if is_known(func_name, worker.offload.tasks, config):
        return False
    grace = config["OFFLOAD_UNKNOWN_TASK_GRACE"]
    now = time.time()
    since = float(job.meta.setdefault(SINCE, now))
    left = since + grace - now
    if left > 0:
        _put_back(worker, job, queue, delay=max(1, min(RECHECK_DELAY, math.ceil(left))), left=left)
    else:
        _fail(worker, job, queue, grace)
    return True


def _put_back(worker: OffloadWorker, job: Job, queue: Queue, delay: int, left: float) -> None:
    # On-demand queues have no scheduler (their burst workers run none): there the job goes to the
    # back of the queue at once, and this worker pauses instead.
    ondemand = queue.name in worker.flask_app.config["OFFLOAD_ONDEMAND_QUEUES"]
    job.meta[PUT_BACK] = int(job.meta.get(PUT_BACK, 0)) + 1
    worker.log.warning(
        "Worker %s: job %s is of task %s, which this worker does not know (an older release?): put back "
        "for a worker that knows it, queued again %s; it fails if none takes it in %d s",
        worker.name,
        job.id,
        job.func_name,
        "at the back now" if ondemand else f"in {delay} s",
        math.ceil(left),
    )
    # What RQ's Job.retry does, in one transaction with taking it out of the worker's hands: the
    # scheduled registry (with its meta; OffloadQueue wakes the scheduler), its status "scheduled"
    # until it is queued again; or the back of the queue.
    with worker.connection.pipeline() as pipeline:
        pipeline.lrem(queue.intermediate_queue.key, 1, job.id)
        if ondemand:
            queue._enqueue_job(job, pipeline=pipeline)
        else:
            queue.schedule_job(job, datetime.now(UTC) + timedelta(seconds=delay), pipeline=pipeline)
        pipeline.execute()
    if ondemand:
        time.sleep(ONDEMAND_PAUSE)


def _fail(worker: OffloadWorker, job: Job, queue: Queue, grace: int) -> None:
    message = (
        f"no worker knows task {job.func_name}; the workers that took its job in the last {grace} s "
        "(UNKNOWN_TASK_GRACE) do not have it registered, so it never ran: deploy the release that has "
        "the task, then requeue the job"
    )
    worker.log.error("Worker %s: failed job %s: %s", worker.name, job.id, message)
    # No retry: retrying cannot teach a worker the task. A None count is not written by RQ's
    # job.save(), so the stored retries_left stays as it was: none were spent.
    retries_left, job.retries_left = job.retries_left, None
    try:
        queue.intermediate_queue.remove(job.id)
        worker.handle_job_failure(job, queue, exc_string=message)
    finally:
        job.retries_left = retries_left
