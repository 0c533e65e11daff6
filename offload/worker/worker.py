"""``OffloadWorker``: RQ's ``Worker`` with one concern per mixin, each in its own module.

Run a worker exactly as production does::

    rq worker -c worker -w offload.worker.OffloadWorker --with-scheduler

===================  ==========================================================================
construction.py      ``rq worker``'s arguments adapted: JSON, Offload's job/queue classes, settings
appcontext.py        the host Flask app: preload hooks, its app context and job log around jobs
slots.py             WORKER_SLOTS jobs at once: a worker per slot, forked after the preload
scheduler_host.py    ``--with-scheduler`` runs Offload's SleepingScheduler (scheduler.py)
attempts.py          a record of each attempt in the job's meta
job.py               OffloadJob: a delayed retry written whole in the failure's transaction
retry_hints.py       a task's exception decides its retries (offload.retries)
lease.py             a job whose heartbeat cannot be renewed in time is given up, never run twice
outages.py           Redis outages waited out; retried writes written once
crash_reruns.py      crashes recorded and re-run (CRASH_RERUNS); deliberate kills are failures
registration.py      registers again when Redis lost the worker's registration; Redis hygiene
maintenance.py       a dead worker's jobs found within a minute, cheaply
jobprocess.py        fork once, run jobs over a pipe (speed of SimpleWorker, safety of a fork)
roundtrips.py        heartbeat and state writes batched or skipped
waiting.py           the blocking wait for a job while every queue is empty; outages waited out
holds.py             paused queues skipped; a quiet worker takes no more jobs (offload.holds);
                     queue depths sampled for the dashboard in the same round trip
===================  ==========================================================================

Every RQ method these override is listed in overrides.py (checked by tests/test_worker_overrides.py).
"""

from __future__ import annotations

from rq import Worker

from offload.metrics import JobMetricsMixin
from offload.worker.appcontext import HostAppContext
from offload.worker.attempts import AttemptRecords
from offload.worker.construction import Construction
from offload.worker.crash_reruns import CrashReruns
from offload.worker.holds import QueueHolds
from offload.worker.job import OffloadJob
from offload.worker.jobprocess import JobProcessRunner
from offload.worker.lease import JobLease
from offload.worker.maintenance import Maintenance
from offload.worker.outages import REDIS_ERRORS, RedisOutages
from offload.worker.registration import RegistrationUpkeep
from offload.worker.retry_hints import RetryHints
from offload.worker.roundtrips import RoundTrips
from offload.worker.scheduler_host import SchedulerHosting
from offload.worker.slots import Slots
from offload.worker.waiting import JobWait

__all__ = ["REDIS_ERRORS", "OffloadJob", "OffloadWorker"]


class OffloadWorker(
    Construction,
    HostAppContext,
    Slots,
    SchedulerHosting,
    AttemptRecords,
    RetryHints,
    JobLease,
    RedisOutages,
    CrashReruns,
    RegistrationUpkeep,
    Maintenance,
    JobProcessRunner,
    QueueHolds,  # before RoundTrips: it filters the queues RoundTrips' take script pops from
    RoundTrips,
    JobWait,
    JobMetricsMixin,
    Worker,
):
    """RQ's worker with JSON jobs, the Flask app context, attempt records, each job's log and
    metrics, a reused job process, fewer Redis round trips and a scheduler that sleeps."""
