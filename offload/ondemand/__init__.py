"""On-demand workers (the guide's option 2): a job sent to an on-demand queue starts a worker
for that queue, which runs ``rq worker --burst`` and exits when the queue is empty.

The worker is the project's own (``-c offload.worker.rqconfig``, the settings ``worker.py`` uses, with
:class:`OnDemandWorker`, a subclass of ``worker.OffloadWorker``), started with the settings of the
process that starts it (:func:`worker_settings`, secrets left out) by one of two backends behind
:class:`Backend`:

- ``local``: a subprocess of the process that enqueued (laptop, tests, a single box);
- ``fly``: a Fly Machine created through the Machines API from the image the app runs
  (``FLY_IMAGE_REF``), with ``auto_destroy`` and restart policy ``no``: it exists only while
  it drains the queue. Metadata on the Machine says which queue and worker it is.

Who drains a queue is recorded in Redis (``offload:ondemand:<queue>:workers``, worker id ->
pid or Machine id) and changed only under a per-queue Redis lock: by the submitter
(:func:`ensure_worker`, after the job is enqueued) and by the worker itself when it finds the
queue empty. A job enqueued while the last worker is leaving is therefore either seen by
that worker, which goes on, or finds no worker recorded and starts one. The backend's own
view (the process is alive; the Machine is listed in a live state) drops records of workers
that died without saying so. At most ``ONDEMAND_MAX_WORKERS`` drain a queue at once, and a new
one starts only while queued jobs outnumber the workers already draining.

Jobs on an on-demand queue must not wait for a delayed retry: once the queue is empty its
worker exits, and no scheduler would move the retry back. :func:`check_tasks` refuses such
tasks at start-up.
"""

from offload.ondemand.drain import (
    LOCK_TIMEOUT,
    LOCK_WAIT,
    WORKER_ID_ENV,
    Backend,
    OnDemandError,
    burst_command,
    ensure_worker,
    leave_if_drained,
    lock_key,
    workers_key,
)
from offload.ondemand.fly import SET_BY_FLY, FlyAPIError, FlyBackend
from offload.ondemand.local import LocalBackend
from offload.ondemand.starter import Starter, job_enqueued, make_backend, worker_env, worker_settings

__all__ = [
    "LOCK_TIMEOUT",
    "LOCK_WAIT",
    "SET_BY_FLY",
    "WORKER_ID_ENV",
    "Backend",
    "FlyAPIError",
    "FlyBackend",
    "LocalBackend",
    "OnDemandError",
    "Starter",
    "burst_command",
    "ensure_worker",
    "job_enqueued",
    "leave_if_drained",
    "lock_key",
    "make_backend",
    "worker_env",
    "worker_settings",
    "workers_key",
]
