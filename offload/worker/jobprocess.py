"""The job process: fork once, run jobs over a pipe.

Stock RQ forks a fresh "work horse" for every job: ~16 ms of fork, copy-on-write page faults
and a new Redis connection per job, for a no-op. SimpleWorker runs jobs in the worker itself:
fast, but a job that segfaults or calls os._exit takes the worker down, stopping a job does
nothing, and a leak stays forever. Here one forked job process runs job after job (handed over
a pipe), and is replaced when it dies, when it has run ``job_process_max_jobs`` jobs or when its
peak memory passes ``job_process_max_memory_mb``. Everything else is RQ's Worker unchanged: the
parent dequeues, heartbeats during long jobs, kills the job process at timeout + 60 s or on a
stop command (RQ's kill_horse), fails the job of a job process that died, and shuts down warm
on SIGTERM. The job process dies with the worker (``PR_SET_PDEATHSIG``), so a job never runs on
while maintenance re-runs it elsewhere.

The parent waits for a report (``{"status", "retire", "idle"}``) under RQ's monitor, whose SIGALRM
(every job-monitoring interval) may interrupt it: a report is read with that alarm deferred
and kept until the next job, so an alarm never splits or loses one.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import resource
import signal
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection, Pipe
from typing import Any

from rq.executions import Execution
from rq.job import Job
from rq.queue import Queue
from rq.worker import WorkerStatus

from offload.jobs import unreadable
from offload.worker import unknown_tasks
from offload.worker.base import WorkerBase
from offload.worker.outages import REDIS_ERRORS
from offload.worker.parenting import SharedFlag, alarm_deferred, die_with_parent
from offload.worker.roundtrips import job_from_message, job_to_message


@dataclass
class JobProcess:
    """The long-lived child that runs jobs one after another, the pipe to it, and the flag it sets
    while it writes a job's end in a write that checks the job's lease itself (lease.py)."""

    pid: int
    connection: Connection
    ending: SharedFlag = field(default_factory=SharedFlag)


UNKNOWN_EXIT = 1 << 8
"""Wait status "exited 1": what a job process's death reads as when its real status is lost."""


class JobProcessRunner(WorkerBase):
    """Worker mixin: one forked job process running job after job over a pipe."""

    job_process_max_jobs: int = 1000
    job_process_max_memory_mb: int = 1024
    _job_process: JobProcess | None = None
    _horse_result: tuple[Any, Any, Any] | None = None
    _idle_reported: bool = False

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
            # The job's process first, then its start (with its execution: roundtrips.py): whoever
            # sees the job started can stop it (a kill-horse command needs a horse to kill).
            self._current_job_id, self._killed_job_id, self._horse_result = job.id, None, None
            self._horse_pid = self._ensure_job_process().pid
            self._start_with_execution = True
            try:
                execution = self.prepare_execution(job)
            finally:
                self._start_with_execution = False
            self.fork_work_horse(job, queue)
            self._idle_reported = False
            self.monitor_work_horse(job, queue, execution)
            if self._idle_reported:
                # The job process's end write set the worker idle and sent its heartbeat.
                self._state = WorkerStatus.IDLE
                self._heartbeat_expires_at = time.monotonic() + self.worker_ttl + 60
            else:
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
        process = self._job_process
        if process is None or self._current_job_id != job.id or self._horse_pid != process.pid:
            # Not prepared by execute_job (RQ's tests call this on its own).
            self._current_job_id, self._killed_job_id, self._horse_result = job.id, None, None
            process = self._ensure_job_process()
        message = {
            "job": job.id,
            "queue": queue.name,
            "execution": execution.id,
            "created_at": execution.created_at.timestamp(),
            "hash": job_to_message(job),  # as started: the job process need not read it again
        }
        process.ending.set(False)  # what it said of the last job says nothing of this one
        try:
            process.connection.send_bytes(json.dumps(message).encode())
        except OSError:
            # It died since the check; monitor_work_horse sees the death and fails the job.
            self.log.warning("Worker %s: job process %s is gone", self.name, process.pid)
        self._horse_pid = process.pid
        # The job process's first write shortens the worker's TTL to the job's heartbeat TTL.
        self._heartbeat_expires_at = time.monotonic() + self.get_heartbeat_ttl(job)
        self.procline(f"Job {job.id} in job process {process.pid}")

    def wait_for_horse(self):
        """Wait until the job process reports the job done, or dies; return like os.wait4.

        The outcome is kept until the next job: RQ's monitor calls again when its alarm
        interrupted the call that got it, and gets it then."""
        if self._horse_result is not None:
            return self._horse_result
        process = self._job_process
        if process is None:
            return None, None, None
        while True:
            # The scheduler process may hold a copy of the pipe (it can fork after the job
            # process), so a death does not always close it: check the pid between polls.
            ready = process.connection.poll(0.5)
            with alarm_deferred():  # read, or reap, and keep the outcome, whole
                if ready:
                    self._horse_result = self._read_report(process)
                else:
                    reaped = self._reap_job_process(block=False)
                    if reaped[0]:
                        self._horse_result = reaped
            if self._horse_result is not None:
                return self._horse_result

    def _read_report(self, process: JobProcess):
        """Read the job process's report of the job it ran; return like os.wait4."""
        try:
            raw = process.connection.recv_bytes()
        except (EOFError, OSError):
            return self._reap_job_process(block=True)
        try:
            report = json.loads(raw)
            status, retire = int(report["status"]), bool(report["retire"])
        except (ValueError, KeyError, TypeError):
            self.log.error("Worker %s: unreadable report from job process %s: %r", self.name, process.pid, raw)
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            return self._reap_job_process(block=True)
        self._idle_reported = bool(report.get("idle"))
        if retire:
            self._reap_job_process(block=True)
        return process.pid, status, None

    def teardown(self) -> None:
        if not self.is_horse:
            self._stop_job_process()
        super().teardown()

    def setup_work_horse_signals(self) -> None:
        super().setup_work_horse_signals()
        # A job process outliving its worker would run on while maintenance re-runs its job elsewhere.
        die_with_parent(self.pid or os.getppid())

    def _ensure_job_process(self) -> JobProcess:
        """Return the live job process, forking a new one if there is none."""
        if self._job_process is not None:
            self._reap_job_process(block=False)
        if self._job_process is None:
            parent_end, child_end, ending = *Pipe(), SharedFlag()
            pid = os.fork()
            if pid == 0:
                parent_end.close()
                self._ending_flag = ending
                self._run_job_process(child_end)  # never returns
            child_end.close()
            try:
                os.setpgid(pid, pid)  # as the child does, so kill_horse never hits our own group
            except OSError as exc:
                if exc.errno not in (errno.EACCES, errno.ESRCH):
                    raise
            self._job_process = JobProcess(pid=pid, connection=parent_end, ending=ending)
            self.log.info("Worker %s: started job process %s", self.name, pid)
        return self._job_process

    def _reap_job_process(self, block: bool):
        """Collect the job process if it exited (waiting for it if ``block``); return like os.wait4.

        A job process that cannot be waited for (reaped elsewhere) reads as exited 1: its fate
        is unknown, so RQ fails a job it left unfinished, never takes it for a success."""
        process = self._job_process
        if process is None:
            return None, None, None
        try:
            pid, status, rusage = os.wait4(process.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            self.log.warning("Worker %s: job process %s vanished (reaped elsewhere)", self.name, process.pid)
            pid, status, rusage = process.pid, UNKNOWN_EXIT, None
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
                self._idle_written = False
                status = self._run_one_job(message)
                done += 1
                retire = (
                    status != 0
                    or done >= self.job_process_max_jobs
                    or self._peak_memory_mb() > self.job_process_max_memory_mb
                )
                report = {"status": status, "retire": retire, "idle": self._idle_written}
                connection.send_bytes(json.dumps(report).encode())
                if retire:
                    break
        finally:
            os._exit(0)

    def _run_one_job(self, message: dict[str, Any]) -> int:
        """Perform one job in the job process; return a wait status as RQ's work horse would exit."""
        os.environ["RQ_WORKER_ID"] = self.name
        os.environ["RQ_JOB_ID"] = message["job"]
        try:
            job = job_from_message(
                self.job_class, message["job"], message["hash"], connection=self.connection, serializer=self.serializer
            )
            job.redis_server_version = self.get_redis_server_version()
            queue = next(queue for queue in self.queues if queue.name == message["queue"])
            execution = Execution(message["execution"], job.id, connection=self.connection, worker_name=self.name)
            execution.created_at = execution.last_heartbeat = datetime.fromtimestamp(message["created_at"], tz=UTC)
            execution._job = job
            self.procline(f"Processing {job.func_name} from {queue.name} since {time.time()}")
            # The worker wrote the start; the end goes in one round trip (roundtrips.py).
            self._started_job_id, self._end_in_one = job.id, True
            try:
                self.perform_job(job, queue, execution)
            finally:
                self._started_job_id, self._end_in_one = None, False
        except Exception:
            self.log.exception("Worker %s: job process failed around job %s", self.name, message["job"])
            return UNKNOWN_EXIT  # as if it exited with 1: the parent fails the job "unexpectedly"
        return 0

    @staticmethod
    def _peak_memory_mb() -> float:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)
