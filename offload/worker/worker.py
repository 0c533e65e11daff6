"""Settings and worker class for the stock ``rq worker`` command.

Run a worker exactly as production does::

    rq worker -c worker -w worker.OffloadWorker --with-scheduler

``-c worker`` makes RQ read ``REDIS_URL``, ``QUEUES`` and ``DICT_CONFIG`` below, which come
from the same environment as the web app (``settings.load``). ``-w worker.OffloadWorker``
adds what plain RQ lacks: JSON serialization whatever the command line says, the Flask app
built once per worker process with its context pushed around every job, a record of each
attempt in the job's meta for the job page, heavy libraries and models preloaded before the
job process forks (``tasks.preload``), retry hints from a task's exception (``retries.py``:
a permanent error is never retried; a transient one says when), the speed of running jobs
in-process without giving up the safety of a separate process (see "The job process"
below), and fault handling: a dead worker's jobs found within a minute and re-run, Redis
outages waited out instead of quitting, and jobs that are not JSON refused (SECURITY.md).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import logging
import os
import random
import resource
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection, Pipe
from typing import Any, TypeVar

import redis.exceptions
from flask import Flask
from rq import Queue, Worker, worker_registration
from rq.defaults import (
    DEFAULT_JOB_MONITORING_INTERVAL,
    DEFAULT_LOGGING_DATE_FORMAT,
    DEFAULT_LOGGING_FORMAT,
    DEFAULT_MAINTENANCE_TASK_INTERVAL,
)
from rq.exceptions import NoSuchJobError, StopRequested
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.registry import clean_registries
from rq.scheduler import RQScheduler
from rq.serializers import JSONSerializer
from rq.timeouts import JobTimeoutException
from rq.utils import current_timestamp, import_attribute, now, utcformat
from rq.worker import WorkerStatus

from offload import joblog, retries
from offload.jobs import error_line, unreadable
from offload.metrics import JobMetricsMixin
from offload.queues import WAKE_CHANNEL, OffloadQueue
from offload.state import State, get_state
from offload.worker import unknown_tasks
from offload.worker.host import load_host_app
from offload.worker.scheduler import SleepingScheduler

REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
"""What a lost or restarting Redis raises; the worker waits these out instead of quitting."""

_T = TypeVar("_T")


def _own_class(given: type | str | None, ours: type, rqs: type, option: str) -> type:
    """Return the job or queue class to use: ours where RQ's default (or none) was given, a
    subclass of ours as given; anything else is refused, naming the option."""
    if isinstance(given, str):
        given = import_attribute(given)
    if given is None or given is rqs:
        return ours
    if isinstance(given, type) and issubclass(given, ours):
        return given
    raise ValueError(
        f"{option} {given.__module__}.{given.__qualname__} is not a subclass of "
        f"{ours.__module__}.{ours.__qualname__}, which Offload's worker needs (JSON jobs, attempt records)"
    )


def _json_queue(queue: str | Queue, queue_class: type[Queue], job_class: type[Job]) -> str | Queue:
    """Return ``queue`` as a JSON queue of ``queue_class``, keeping its connection and timeout."""
    if isinstance(queue, str) or (isinstance(queue, queue_class) and queue.serializer is JSONSerializer):
        return queue
    return queue_class(
        queue.name,
        connection=queue.connection,
        job_class=job_class,
        serializer=JSONSerializer,
        default_timeout=queue._default_timeout,  # RQ has no public reader of it
        is_async=queue.is_async,
        death_penalty_class=queue.death_penalty_class,
    )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def describe_failure(exc: BaseException | None, timeout: float | None) -> str:
    """Return the one line a user sees for a failed attempt."""
    if isinstance(exc, JobTimeoutException):
        return f"timed out after {int(timeout or 0)} s"
    if exc is None:
        return "failed"
    return error_line(traceback.format_exception_only(type(exc), exc)[-1])


def _die_with_parent(parent_pid: int) -> None:
    """Have Linux SIGKILL this process when its parent dies (``prctl(PR_SET_PDEATHSIG)``)."""
    if not sys.platform.startswith("linux"):
        return
    pr_set_pdeathsig = 1
    if ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(1)


class OffloadJob(Job):
    """RQ's job, which records the start of each attempt in the write that marks it started."""

    def prepare_for_execution(self, worker_name: str, pipeline) -> None:  # type: ignore[no-untyped-def]
        super().prepare_for_execution(worker_name, pipeline)
        attempts = self.meta.setdefault("attempts", [])
        attempts.append({"started_at": _now(), "ended_at": None, "outcome": None, "worker": worker_name})
        pipeline.hset(self.key, "meta", self.serializer.dumps(self.meta))


@dataclass
class JobProcess:
    """The long-lived child that runs jobs one after another, and the pipe to it."""

    pid: int
    connection: Connection


class OffloadWorker(JobMetricsMixin, Worker):
    """RQ's worker with JSON jobs, the Flask app context, attempt records, each job's log and
    metrics, a reused job process, fewer Redis round trips and a scheduler that sleeps."""

    def __init__(
        self,
        queues: Sequence[str | Queue] | str | Queue,
        *args: Any,
        job_process_max_jobs: int | None = None,
        job_process_max_memory_mb: int | None = None,
        **kwargs: Any,
    ) -> None:
        # The host app: its context wraps every job, its config is the worker's (worker/host.py).
        self.flask_app: Flask = load_host_app()
        config = self.flask_app.config
        kwargs["job_class"] = _own_class(kwargs.get("job_class"), OffloadJob, Job, "--job-class")
        kwargs["queue_class"] = _own_class(kwargs.get("queue_class"), OffloadQueue, Queue, "--queue-class")
        # JSON whatever -S says (SECURITY.md); queues built with another serializer are rebuilt.
        kwargs["serializer"] = JSONSerializer
        if isinstance(queues, (str, Queue)):
            queues = [queues]
        queues = [_json_queue(queue, kwargs["queue_class"], kwargs["job_class"]) for queue in queues]
        # `rq worker` always passes RQ's defaults; those mean "not chosen", so Offload's apply.
        if kwargs.get("job_monitoring_interval", DEFAULT_JOB_MONITORING_INTERVAL) == DEFAULT_JOB_MONITORING_INTERVAL:
            kwargs["job_monitoring_interval"] = config["OFFLOAD_WORKER_HEARTBEAT_INTERVAL"]
        if kwargs.get("maintenance_interval", DEFAULT_MAINTENANCE_TASK_INTERVAL) == DEFAULT_MAINTENANCE_TASK_INTERVAL:
            kwargs["maintenance_interval"] = config["OFFLOAD_WORKER_MAINTENANCE_INTERVAL"]
        super().__init__(queues, *args, **kwargs)
        # Without it, connecting to a vanished host waits for the kernel's TCP timeout (minutes).
        pool_kwargs = self.connection.connection_pool.connection_kwargs
        if pool_kwargs.get("socket_connect_timeout") is None:
            pool_kwargs["socket_connect_timeout"] = config["OFFLOAD_REDIS_CONNECT_TIMEOUT"]
        self.full_maintenance_interval: int = config["OFFLOAD_WORKER_FULL_MAINTENANCE_INTERVAL"]
        self.crash_reruns: int = config["OFFLOAD_CRASH_RERUNS"]
        if job_process_max_jobs is None:
            job_process_max_jobs = config["OFFLOAD_JOB_PROCESS_MAX_JOBS"]
        if job_process_max_memory_mb is None:
            job_process_max_memory_mb = config["OFFLOAD_JOB_PROCESS_MAX_MEMORY_MB"]
        self._stop_signalled = False
        self.job_process_max_jobs = job_process_max_jobs
        self.job_process_max_memory_mb = job_process_max_memory_mb
        self._job_process: JobProcess | None = None
        self._heartbeat_expires_at = 0.0
        self._fully_cleaned_at: float | None = None

    @property
    def offload(self) -> State:
        """The host app's Offload: its tasks and worker hooks."""
        return get_state(self.flask_app)

    def _start_scheduler(
        self,
        burst: bool = False,
        logging_level: str | None = "INFO",
        date_format: str = DEFAULT_LOGGING_DATE_FORMAT,
        log_format: str = DEFAULT_LOGGING_FORMAT,
    ) -> None:
        # RQ 3.0.0's own method, with a scheduler that also enqueues the periodic jobs (periodic.py)
        # and sleeps until the next job is due (scheduler.py).
        self.scheduler = SleepingScheduler(
            self.queues,
            connection=self.connection,
            logging_level=logging_level if logging_level is not None else self.log.level,
            date_format=date_format,
            log_format=log_format,
            serializer=self.serializer,
            config=self.flask_app.config,
            tasks=self.offload.tasks,
        )
        self.scheduler.acquire_locks()
        if self.scheduler.acquired_locks:
            if burst:
                try:
                    self.scheduler.register_birth()
                    self.scheduler.enqueue_scheduled_jobs()
                finally:
                    self.scheduler.release_locks()
                    self.scheduler.register_death()
            else:
                self.scheduler.start()

    def bootstrap(self, *args: Any, **kwargs: Any) -> None:
        started = time.perf_counter()
        for hook in self.offload.worker_startup:  # the job process inherits what these load (copy-on-write)
            with self.flask_app.app_context():
                hook()
        self.log.info("Worker %s: preloaded libraries and models in %.2f s", self.name, time.perf_counter() - started)
        super().bootstrap(*args, **kwargs)

    # --------------------------------------------------------------- attempt records

    def perform_job(self, job, queue, execution) -> bool:  # type: ignore[no-untyped-def]
        # The attempt's start is recorded by OffloadJob.prepare_for_execution.
        with self.flask_app.app_context(), joblog.capture(job, self.connection):
            return super().perform_job(job, queue, execution)

    def handle_execution_ended(self, job, queue, heartbeat_ttl) -> None:  # type: ignore[no-untyped-def]
        # Runs right after the task returns or raises, inside perform_job's except block on failure.
        attempts = job.meta.get("attempts") or [{"started_at": None}]
        attempt = attempts[-1]
        attempt["ended_at"] = _now()
        if job._status == "failed":
            attempt["outcome"] = "failed"
            attempt["error"] = describe_failure(sys.exc_info()[1], job.timeout)
        else:
            attempt["outcome"] = "finished"
        job.meta["attempts"] = attempts
        # What RQ's version does (end time, job heartbeat), with the meta in the same write.
        job.ended_at = job.last_heartbeat = now()
        mapping = {"last_heartbeat": utcformat(job.last_heartbeat), "meta": job.serializer.dumps(job.meta)}
        self._until_redis_answers(f"recording the end of job {job.id}", job.connection.hset, job.key, mapping=mapping)

    def handle_job_failure(self, job, queue, started_job_registry=None, exc_string="", execution=None):  # type: ignore[no-untyped-def]
        # In the work horse this runs inside perform_job's except block, before RQ decides on a retry.
        retries.apply_retry_hints(job, sys.exc_info()[1])
        super().handle_job_failure(job, queue, started_job_registry, exc_string, execution)

    # ------------------------------------------------------------------ faults
    #
    # A dead worker: its work horse dies with it (no job runs twice at once), its jobs are
    # found within a minute (heartbeat TTL and maintenance interval from settings, instead of
    # RQ's 60 s grace and 10 min), and every job gets CRASH_RERUNS more runs after a crash.
    # A lost Redis: every step waits for it with backoff instead of quitting (RQ quits, and
    # exits 0: rq #1933), and pubsub resubscribes on reconnect (redis-py's on_connect).

    def _until_redis_answers(self, what: str, action: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """Return ``action(...)``, retrying with backoff (one log line a try) while Redis is unreachable."""
        delay = 0.5
        while True:
            try:
                return action(*args, **kwargs)
            except REDIS_ERRORS as exc:
                if self._stop_signalled and not self.horse_pid and not self.is_horse:
                    raise StopRequested() from exc
                self.log.warning(
                    "Worker %s: Redis unreachable while %s (%s); retrying in %.1f s", self.name, what, exc, delay
                )
                time.sleep(delay)
                delay = min(delay * 2, 30.0)

    @property
    def dequeue_timeout(self) -> int:
        # RQ blocks up to 405 s waiting for a job, and runs maintenance only between waits.
        return max(1, min(self.worker_ttl - 15, self.maintenance_interval))

    def get_heartbeat_ttl(self, job, working_time: float = 0.0) -> int:  # type: ignore[no-untyped-def]
        # RQ adds a fixed 60 s; two missed heartbeats are evidence enough that the worker died.
        interval = self.job_monitoring_interval
        if job.timeout and job.timeout > 0:
            return int(max(0, min(job.timeout - working_time, interval))) + 2 * interval
        return 3 * interval

    def setup_work_horse_signals(self) -> None:
        super().setup_work_horse_signals()
        # A horse outliving its worker would run on while maintenance re-runs its job elsewhere.
        _die_with_parent(self.pid or os.getppid())

    def clean_registries(self) -> None:
        # RQ's, with the crash re-runs granted first, under the same per-queue lock.
        for queue in self.queues:
            if queue.acquire_maintenance_lock():
                try:
                    self._settle_abandoned_jobs(queue)
                    self.log.info("Worker %s: cleaning registries for queue: %s", self.name, queue.name)
                    clean_registries(queue, self._exc_handlers)
                    worker_registration.clean_worker_registry(queue)
                    queue.intermediate_queue.cleanup(self, queue)
                finally:
                    queue.release_maintenance_lock()
        self.last_cleaned_at = now()

    def _settle_abandoned_jobs(self, queue: Queue) -> None:
        """Record the crash on each job whose worker stopped heartbeating; RQ's cleanup then retries or fails it."""
        for job_id in queue.started_job_registry.get_expired_job_ids():
            try:
                job = self.job_class.fetch(job_id, connection=self.connection, serializer=self.serializer)
            except NoSuchJobError:
                continue
            if job.get_status(refresh=False) != JobStatus.STARTED:
                continue
            self.log.warning("Worker %s: job %s was abandoned (its worker stopped heartbeating)", self.name, job.id)
            self._record_crash(job, "AbandonedJobError: its worker died or lost Redis while it ran")

    def handle_work_horse_killed(self, job, retpid, ret_val, rusage) -> None:  # type: ignore[no-untyped-def]
        if ret_val and os.WIFSIGNALED(ret_val):
            reason = f"its work horse was killed by {signal.Signals(os.WTERMSIG(ret_val)).name}"
        else:
            reason = f"its work horse exited unexpectedly (wait status {ret_val})"
        self._until_redis_answers(f"recording the crash of job {job.id}", self._record_crash, job, reason)
        super().handle_work_horse_killed(job, retpid, ret_val, rusage)

    def _record_crash(self, job, reason: str) -> None:  # type: ignore[no-untyped-def]
        """End the job's running attempt as crashed and, within CRASH_RERUNS, give the job one more run."""
        meta = job.get_meta(refresh=True)
        attempts = meta.get("attempts") or []
        if attempts and attempts[-1].get("outcome") is None:
            attempts[-1].update(ended_at=_now(), outcome="crashed", error=reason)
        granted = meta.get("crash_reruns", 0)
        if not job.retries_left and granted < self.crash_reruns:
            meta["crash_reruns"] = granted + 1
            job.retries_left, job.retry_intervals = 1, [0]
            self.connection.hset(job.key, mapping={"retries_left": 1, "retry_intervals": "[0]"})
        job.save_meta()

    def check_for_suspension(self, burst: bool) -> None:
        self._until_redis_answers("checking for suspension", super().check_for_suspension, burst)

    def prepare_execution(self, job):  # type: ignore[no-untyped-def]
        def attempt():  # type: ignore[no-untyped-def]
            self.executions.clear()  # one job at a time: drop what a failed try left behind
            return Worker.prepare_execution(self, job)

        return self._until_redis_answers(f"starting job {job.id}", attempt)

    def prepare_job_execution(self, job, remove_from_intermediate_queue: bool = False) -> None:  # type: ignore[no-untyped-def]
        self._until_redis_answers(
            f"starting job {job.id}", super().prepare_job_execution, job, remove_from_intermediate_queue
        )

    def handle_job_success(self, job, queue, started_job_registry, execution) -> None:  # type: ignore[no-untyped-def]
        self._until_redis_answers(
            f"recording the success of job {job.id}",
            super().handle_job_success,
            job,
            queue,
            started_job_registry,
            execution,
        )

    def maintain_heartbeats(self, job, execution) -> None:  # type: ignore[no-untyped-def]
        try:
            super().maintain_heartbeats(job, execution)
        except REDIS_ERRORS as exc:
            # Keep watching the work horse; the next heartbeat is one interval away.
            self.log.warning("Worker %s: no heartbeat for job %s, Redis unreachable (%s)", self.name, job.id, exc)

    def request_stop(self, signum, frame) -> None:  # type: ignore[no-untyped-def]
        self._stop_signalled = True
        try:
            super().request_stop(signum, frame)
        except REDIS_ERRORS:
            # RQ asks Redis whether we are busy; we know: stop after the job, or now.
            if not self.horse_pid:
                raise StopRequested() from None
            self._stop_requested = True

    def work(self, burst: bool = False, **kwargs: Any) -> bool:  # type: ignore[override]
        worked = super().work(burst, **kwargs)
        if not (burst or kwargs.get("max_jobs") or kwargs.get("max_idle_time") or self._stop_signalled):
            # RQ's loop quits on errors it does not handle and `rq worker` then exits 0, which
            # a supervisor reads as "done" (rq #1933). Exit 1 so the worker gets restarted.
            self.log.error("Worker %s: the work loop ended unexpectedly; exiting 1", self.name)
            sys.exit(1)
        return worked

    # --------------------------------------------------------------- the job process
    #
    # Stock RQ forks a fresh "work horse" for every job: ~16 ms of fork, copy-on-write page
    # faults and a new Redis connection per job, for a no-op. SimpleWorker runs jobs in the
    # worker itself: fast, but a job that segfaults or calls os._exit takes the worker down,
    # stopping a job does nothing, and a leak stays forever. Here one forked job process runs
    # job after job (handed over a pipe), and is replaced when it dies, when it has run
    # `job_process_max_jobs` jobs or when its peak memory passes `job_process_max_memory_mb`.
    # Everything else is RQ's Worker unchanged: the parent dequeues, heartbeats during long
    # jobs, kills the job process at timeout + 60 s or on a stop command (RQ's kill_horse),
    # fails the job of a job process that died, and shuts down warm on SIGTERM.

    def execute_job(self, job: Job, queue: Queue) -> None:
        refusal = unreadable(job)
        if refusal:
            # Pickled or forged: never decoded another way, never run; it fails with the reason.
            self.log.error("Worker %s: refused job %s: %s", self.name, job.id, refusal)
            queue.intermediate_queue.remove(job.id)
            self.handle_job_failure(job, queue, exc_string=f"Refused: {refusal} (Offload only runs JSON jobs)")
            return
        if self._until_redis_answers(f"setting job {job.id} aside", unknown_tasks.set_aside, self, job, queue):
            return  # not a task this worker knows: put back for one that does, or failed (unknown_tasks.py)
        try:
            execution = self.prepare_execution(job)
            self.fork_work_horse(job, queue)
            self.monitor_work_horse(job, queue, execution)
            # Idle again: state and heartbeat in one round trip (RQ's loop sends them apart).
            with self.connection.pipeline(transaction=False) as batch:
                self.set_state(WorkerStatus.IDLE, pipeline=batch)
                self.heartbeat(pipeline=batch)
                batch.execute()
        except REDIS_ERRORS as exc:
            # Only the bookkeeping after the job ended gets here. A job that could not record
            # its end stays "started" until its heartbeat expires; maintenance then re-runs it.
            self.log.warning("Worker %s: Redis unreachable as job %s ended (%s)", self.name, job.id, exc)
            self._horse_pid = 0
            self.executions.clear()
            self.set_state(WorkerStatus.IDLE)

    def fork_work_horse(self, job: Job, queue: Queue) -> None:
        execution = self.execution
        assert execution is not None
        process = self._ensure_job_process()
        message = {
            "job": job.id,
            "queue": queue.name,
            "execution": execution.id,
            "created_at": execution.created_at.timestamp(),
        }
        try:
            process.connection.send_bytes(json.dumps(message).encode())
        except OSError:
            # It died since the check; monitor_work_horse sees the death and fails the job.
            self.log.warning("Worker %s: job process %s is gone", self.name, process.pid)
        self._horse_pid = process.pid
        # The job process's first write shortens the worker's TTL to the job's heartbeat TTL.
        self._heartbeat_expires_at = time.monotonic() + self.get_heartbeat_ttl(job)
        self.procline(f"Job {job.id} in job process {process.pid}")

    def wait_for_horse(self):  # type: ignore[no-untyped-def]
        """Wait until the job process reports the job done, or dies; return like os.wait4."""
        process = self._job_process
        if process is None:
            return None, None, None
        while True:
            # The scheduler process may hold a copy of the pipe (it can fork after the job
            # process), so a death does not always close it: check the pid between polls.
            if process.connection.poll(0.5):
                try:
                    report = json.loads(process.connection.recv_bytes())
                except (EOFError, OSError):
                    return self._reap_job_process(block=True)
                if report["retire"]:
                    self._reap_job_process(block=True)
                return process.pid, report["status"], None
            reaped = self._reap_job_process(block=False)
            if reaped[0]:
                return reaped

    def teardown(self) -> None:
        if not self.is_horse:
            self._stop_job_process()
        super().teardown()

    def _ensure_job_process(self) -> JobProcess:
        """Return the live job process, forking a new one if there is none."""
        if self._job_process is not None:
            self._reap_job_process(block=False)
        if self._job_process is None:
            parent_end, child_end = Pipe()
            pid = os.fork()
            if pid == 0:
                parent_end.close()
                self._run_job_process(child_end)  # never returns
            child_end.close()
            try:
                os.setpgid(pid, pid)  # as the child does, so kill_horse never hits our own group
            except OSError as exc:
                if exc.errno not in (errno.EACCES, errno.ESRCH):
                    raise
            self._job_process = JobProcess(pid=pid, connection=parent_end)
            self.log.info("Worker %s: started job process %s", self.name, pid)
        return self._job_process

    def _reap_job_process(self, block: bool):  # type: ignore[no-untyped-def]
        """Collect the job process if it exited (waiting for it if ``block``); return like os.wait4."""
        process = self._job_process
        if process is None:
            return None, None, None
        try:
            pid, status, rusage = os.wait4(process.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            pid, status, rusage = process.pid, 0, None
        if pid:
            process.connection.close()
            self._job_process = None
        return pid, status, rusage

    def _stop_job_process(self) -> None:
        if self._job_process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._job_process.pid, signal.SIGTERM)
            self._reap_job_process(block=True)

    def _run_job_process(self, connection: Connection) -> None:
        """The job process: run each job the parent sends until told to stop; never return."""
        os.setpgrp()
        random.seed()
        self.setup_work_horse_signals()
        self._is_horse = True
        parent = os.getppid()
        done = 0
        try:
            while True:
                if not connection.poll(5):
                    if os.getppid() != parent:
                        break  # the worker is gone; so are we
                    continue
                try:
                    message = json.loads(connection.recv_bytes())
                except (EOFError, OSError):
                    break
                status = self._run_one_job(message)
                done += 1
                retire = (
                    status != 0
                    or done >= self.job_process_max_jobs
                    or self._peak_memory_mb() > self.job_process_max_memory_mb
                )
                connection.send_bytes(json.dumps({"status": status, "retire": retire}).encode())
                if retire:
                    break
        finally:
            os._exit(0)

    def _run_one_job(self, message: dict[str, Any]) -> int:
        """Perform one job in the job process; return a wait status as RQ's work horse would exit."""
        os.environ["RQ_WORKER_ID"] = self.name
        os.environ["RQ_JOB_ID"] = message["job"]
        try:
            job = self.job_class.fetch(message["job"], connection=self.connection, serializer=self.serializer)
            job.redis_server_version = self.get_redis_server_version()
            queue = next(queue for queue in self.queues if queue.name == message["queue"])
            execution = Execution(message["execution"], job.id, connection=self.connection, worker_name=self.name)
            execution.created_at = execution.last_heartbeat = datetime.fromtimestamp(message["created_at"], tz=UTC)
            execution._job = job
            self.procline(f"Processing {job.func_name} from {queue.name} since {time.time()}")
            self.perform_job(job, queue, execution)
        except Exception:
            self.log.exception("Worker %s: job process failed around job %s", self.name, message["job"])
            return 1 << 8  # as if it exited with 1: the parent fails the job "unexpectedly"
        return 0

    @staticmethod
    def _peak_memory_mb() -> float:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)

    # --------------------------------------------------------------- cheap maintenance
    #
    # The faults section runs maintenance every WORKER_MAINTENANCE_INTERVAL seconds. RQ's pass
    # cleans every registry of every queue (~30 commands from each worker each time: the lock
    # is released after every pass) and tries for the scheduler's locks (a script per queue).
    # Only one part of it has to be that fast: failing or retrying the jobs of a worker that
    # died, i.e. started-registry entries whose heartbeat expired. Each pass asks for those (one
    # round trip, a command per queue) and cleans only a queue that has some; the rest of RQ's
    # maintenance runs every FULL_MAINTENANCE_INTERVAL (RQ's own default), and the scheduler's
    # locks are tried only when one of them is free.

    def run_maintenance_tasks(self) -> None:
        self._until_redis_answers("running maintenance", self._maintain)

    def _maintain(self) -> None:
        if self.last_cleaned_at and self.scheduler and self._scheduler_lock_free():
            process = self.scheduler._process
            if process is None or not process.is_alive():
                self.scheduler.acquire_locks(auto_start=True)
        moment = time.monotonic()
        if self._fully_cleaned_at is None or moment - self._fully_cleaned_at >= self.full_maintenance_interval:
            self.clean_registries()
            self.clean_group_registries()
            self._fully_cleaned_at = moment
        else:
            self.clean_abandoned_jobs()
            self.last_cleaned_at = now()

    def clean_abandoned_jobs(self) -> None:
        """Fail or retry the jobs of workers that died, in the queues that have any."""
        registries = [queue.started_job_registry for queue in self.queues]
        cutoff = current_timestamp()
        with self.connection.pipeline(transaction=False) as pipeline:
            for registry in registries:
                pipeline.zrangebyscore(registry.key, 0, cutoff, start=0, num=1)
            expired = pipeline.execute()
        for queue, registry, found in zip(self.queues, registries, expired, strict=True):
            if found and queue.acquire_maintenance_lock():
                try:
                    self._settle_abandoned_jobs(queue)  # crash recorded, re-run granted (faults)
                    registry.cleanup(exception_handlers=self._exc_handlers)
                finally:
                    queue.release_maintenance_lock()
                # A retry with a delay went through RQ's plain Queue: wake the scheduler for it.
                self.connection.publish(WAKE_CHANNEL, queue.name)

    def _scheduler_lock_free(self) -> bool:
        keys = [RQScheduler.get_locking_key(queue.name) for queue in self.queues]
        return self.connection.exists(*keys) < len(keys)

    # --------------------------------------------------------------- fewer round trips
    #
    # RQ's loop writes the worker's heartbeat (3 commands, one round trip each) four times
    # and its state twice per job. A heartbeat that would move the expiry by less than a
    # quarter of the TTL (at most a minute) is skipped, the three commands go in one
    # round trip, and a state already written is not written again. Both wait out Redis.

    def heartbeat(self, timeout: int | None = None, pipeline=None) -> None:  # type: ignore[no-untyped-def]
        timeout = timeout or self.worker_ttl + 60
        expires_at = time.monotonic() + timeout
        if pipeline is not None:
            super().heartbeat(timeout, pipeline=pipeline)
        else:
            if expires_at - self._heartbeat_expires_at < min(timeout / 4, 60):
                return
            send = super().heartbeat

            def batched() -> None:
                with self.connection.pipeline(transaction=False) as batch:
                    send(timeout, pipeline=batch)
                    batch.execute()

            self._until_redis_answers("sending a heartbeat", batched)
        self._heartbeat_expires_at = expires_at

    def set_state(self, state: str, pipeline=None) -> None:  # type: ignore[no-untyped-def]
        if pipeline is not None:
            return super().set_state(state, pipeline=pipeline)
        if state == self._state:
            return None
        return self._until_redis_answers(f"setting state {state}", super().set_state, state)
