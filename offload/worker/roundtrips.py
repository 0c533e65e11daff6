"""A job's life in three Redis round trips (RQ's worker takes 13 over 59 commands).

1. Take: one script (scripts.TAKE_JOB) checks the suspension flag, pops the job as RQ's
   ``dequeue_any`` would, notes it under the worker's name (a take whose reply is lost hands it
   over again) and reads its hash. Only when every queue is empty does the worker fall back to
   RQ's blocking wait (``BLPOP``), which costs nothing while there is work, in a loop of its own
   that waits out a Redis outage as every other step does.
2. Start: the execution RQ's parent writes and the "started" write RQ's work horse sends next
   (status, heartbeat, metrics) go in one transaction from the worker; the job process gets the
   job over its pipe instead of reading it again (both batches write nothing twice: batches.py).
3. End: the job process builds RQ's own end-of-execution transaction (status, result stream,
   finished registry, TTLs, execution cleanup), adds the metrics and the worker's idle state and
   heartbeat, and sends it as one script (scripts.COMMIT_IF_NO_DEPENDENTS), which stands in for
   RQ's ``WATCH`` of the job's dependents: a job with dependents, a repeat or a ``Retry`` result
   takes RQ's own path; nor does it write once the job's lease is over or nearly so (lease.py).

Between jobs, a heartbeat moving the expiry by under a quarter of the TTL (a minute at most) is
skipped, one costs one round trip, a state is not written twice; all wait out Redis (outages.py).
"""

from __future__ import annotations

import base64
import time
from typing import Any

from redis.client import Pipeline
from rq.exceptions import NoSuchJobError
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.rate_limit import release_slot
from rq.results import Result
from rq.suspension import WORKERS_SUSPENDED
from rq.utils import as_text, now
from rq.worker import WorkerStatus

from offload.metrics import job_duration, queue_job_record
from offload.worker.base import WorkerBase
from offload.worker.batches import coalesce
from offload.worker.outages import ExecutionAlreadyEnded, LeaseLost
from offload.worker.scripts import commit_if_no_dependents, take_job


def job_to_message(job: Job) -> dict[str, dict[str, str]]:
    """Return ``job`` as its Redis hash, in JSON-safe form, for the job process (``job_from_message``)."""
    encoder = job.connection.get_encoder()  # what Redis would store: the bytes redis-py sends
    fields: dict[str, dict[str, str]] = {"text": {}, "bytes": {}}
    for name, value in job.to_dict().items():
        raw = encoder.encode(value)
        try:
            fields["text"][name] = raw.decode()
        except UnicodeDecodeError:
            fields["bytes"][name] = base64.b64encode(raw).decode()
    return fields


def job_from_message(job_class: type[Job], job_id: str, fields: dict[str, dict[str, str]], **kwargs: Any) -> Job:
    """Return the job ``job_to_message`` sent, as ``Job.fetch`` would have read it."""
    raw = {name.encode(): value.encode() for name, value in fields["text"].items()}
    raw.update({name.encode(): base64.b64decode(value) for name, value in fields["bytes"].items()})
    job = job_class(job_id, **kwargs)
    job.restore(raw)
    return job


class RoundTrips(WorkerBase):
    """Worker mixin: take, start and end a job in one round trip each; batched heartbeats."""

    _heartbeat_expires_at: float = 0.0
    _start_with_execution: bool = False
    """Set by the job process runner around ``prepare_execution``: write the job's start with it."""
    _started_job_id: str | None = None
    """In the job process: the job whose start the worker already wrote."""
    _last_received: str | None = None  # the last job taken: TAKE_JOB hands over one taken since again
    _end_in_one: bool = False
    """In the job process: end the current job in one script (its start came with the job)."""
    _pending_end: tuple[str, dict[Any, str]] | None = None
    """The attempt's end (job key, fields), held for the end-of-execution script."""
    _idle_written: bool = False
    """In the job process: the end script also wrote the worker's idle state and heartbeat."""
    job_came_while_waiting: bool = False  # the last job taken came through RQ's blocking wait (holds.py)
    _suspension_noticed: bool = False

    def heartbeat(self, timeout: int | None = None, pipeline=None) -> None:
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

    def set_state(self, state: str, pipeline=None) -> None:
        if pipeline is not None:
            return super().set_state(state, pipeline=pipeline)
        if state == self._state:
            return None
        return self._until_redis_answers(f"setting state {state}", super().set_state, state)

    # 1. Take

    def check_for_suspension(self, burst: bool) -> None:
        if self._suspension_noticed:
            super().check_for_suspension(burst)
        # Otherwise TAKE_JOB checks the flag in the same round trip as the dequeue.

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None):
        self.set_state(WorkerStatus.IDLE)
        self.heartbeat()
        taken = self._until_redis_answers("taking a job", self._take_job, timeout is None)
        self.job_came_while_waiting = taken is None  # queues empty: what the blocking wait returns came after it began
        return taken if taken is not None else self._wait_for_job(timeout, max_idle_time)

    def _take_job(self, burst: bool) -> tuple[Job, Queue] | None:
        """Pop and read the next job (None when every queue is empty), as RQ's ``dequeue_any`` does."""
        while True:
            queues = self._ordered_queues
            single = len(queues) == 1 and self.get_redis_server_version() >= (6, 2, 0)
            reply = take_job(
                self.connection,
                WORKERS_SUSPENDED,
                self.name,
                [queue.key for queue in queues],
                queues[0].intermediate_queue_key if single else None,
                self.job_class.redis_job_namespace_prefix,
                self._last_received,
            )
            if reply is None:
                return None
            if reply == [b"suspended"]:
                self._suspension_noticed = True
                try:
                    self.check_for_suspension(burst)  # RQ's wait for `rq resume` (or the end of a burst)
                finally:
                    self._suspension_noticed = False
                continue
            queue_key, job_id, flat = as_text(reply[0]), as_text(reply[1]), list(reply[2:])
            self._last_received = job_id
            if not flat:
                continue  # the job's hash is gone: RQ skips it too
            queue = next(queue for queue in queues if queue.key == queue_key)
            job = self.job_class(job_id, connection=self.connection, serializer=self.serializer)
            try:
                job.restore(dict(zip(flat[::2], flat[1::2], strict=True)))
            except NoSuchJobError:
                continue
            self.reorder_queues(reference_queue=queue)
            job.redis_server_version = self.get_redis_server_version()
            self._log_taken(job, queue)
            return job, queue

    # 2. Start

    def prepare_execution(self, job: Job) -> Execution:
        if not self._start_with_execution:
            return super().prepare_execution(job)
        # RQ's prepare_execution, then its work horse's prepare_job_execution, in one transaction.
        with self.connection.pipeline() as pipeline:
            heartbeat_ttl = self.get_heartbeat_ttl(job)
            execution = Execution.create(job, heartbeat_ttl, pipeline=pipeline, worker_name=self.name)
            self.executions[execution.id] = execution
            self.set_state(WorkerStatus.BUSY, pipeline=pipeline)
            self.heartbeat(heartbeat_ttl, pipeline=pipeline)
            job.heartbeat(now(), heartbeat_ttl, pipeline=pipeline)
            job.prepare_for_execution(self.name, pipeline=pipeline)
            pipeline.persist(job.key)
            if len(self.queues) == 1:
                pipeline.lrem(self.queues[0].intermediate_queue_key, 1, job.id)
            queue_job_record(pipeline, job, "started")
            options = {id(args): kwargs for args, kwargs in pipeline.command_stack}
            pipeline.command_stack = [
                (args, options.get(id(args), {})) for args in coalesce([args for args, _ in pipeline.command_stack])
            ]
            pipeline.execute()
        return execution

    def prepare_job_execution(self, job: Job, remove_from_intermediate_queue: bool = False) -> None:
        if self._started_job_id is not None and self._started_job_id == job.id:
            self._started_job_id = None  # written with the execution (prepare_execution)
            return
        super().prepare_job_execution(job, remove_from_intermediate_queue)

    # 3. End

    def hold_end_write(self, job: Job, mapping: dict[Any, str]) -> bool:
        """Hold the attempt's end for the end-of-execution script; False when it must be written now."""
        self._pending_end = None  # a later end (a failing success callback) supersedes a held one
        if not self._end_in_one or job._status == JobStatus.FAILED:
            return False
        self._pending_end = (job.key, mapping)
        return True

    def _write_pending_end(self) -> None:
        self._mark_ending(False)  # the end goes RQ's way, whose writes do not check the lease
        if self._pending_end is not None:
            key, mapping = self._pending_end
            self._until_redis_answers(f"recording the end of job {key}", self.connection.hset, key, mapping=mapping)
            self._pending_end = None

    def handle_job_success(self, job, queue, started_job_registry, execution) -> None:
        if self._pending_end is None or job.repeats_left:
            self._write_pending_end()
            return super().handle_job_success(job, queue, started_job_registry, execution)
        self._mark_ending(True)  # a write that checks the lease itself: the watchdog leaves it be (lease.py)
        with self.connection.pipeline(transaction=False) as pipeline:  # collects the commands; never executed
            commands = self._end_commands(job, execution, pipeline)
        ran = commit_if_no_dependents(job, execution, commands, self._compaction(job), self._lease_margin())
        if ran == 0:
            # Dependents to move: RQ's own transaction, under its WATCH.
            self._write_pending_end()
            return super().handle_job_success(job, queue, started_job_registry, execution)
        if ran == 3:
            raise LeaseLost(execution.id)
        self._pending_end = None
        self._idle_written = True
        if ran == 2:
            # redis-py resent the script after its reply was lost: the first run wrote it all.
            raise ExecutionAlreadyEnded(execution.id)
        release_slot(job)
        self.log.info(
            "Successfully completed job %s in %ss on worker %s", job.id, job.ended_at - job.started_at, self.name
        )
        return None

    def _end_commands(self, job: Job, execution: Execution, pipeline: Pipeline) -> list[tuple[Any, ...]]:
        """Return the commands of RQ's success transaction (Worker.handle_job_success, no
        dependents or repeat), preceded by the attempt's end and followed by the metrics and the
        worker's idle state and heartbeat."""
        assert self._pending_end is not None
        key, mapping = self._pending_end
        pipeline.hset(key, mapping=mapping)
        self.increment_successful_job_count(pipeline=pipeline)
        assert job.started_at is not None and job.ended_at is not None  # perform_job set both
        self.increment_total_working_time(job.ended_at - job.started_at, pipeline)
        result_ttl = job.get_result_ttl(self.default_result_ttl)
        if result_ttl != 0:
            job._handle_success(
                result_ttl,
                pipeline=pipeline,
                worker_name=self.name,
                execution_id=execution.id,
                execution_started_at=execution.created_at,
                execution_ended_at=job.ended_at,
            )
        job.cleanup(result_ttl, pipeline=pipeline, remove_from_queue=False)
        job._status = JobStatus.FINISHED
        empty: set[str] = set()
        if self._compaction(job) is not None:
            # Empty fields read back exactly as absent ones (Job.restore), at ~100 bytes each; and
            # a job's heartbeat means nothing once it has ended (nothing of RQ's reads it then).
            empty = {name for name, value in job.to_dict(include_meta=False).items() if value == ""}
            empty.add("last_heartbeat")
            pipeline.hdel(job.key, *sorted(empty))
        self.cleanup_execution(job, pipeline=pipeline, execution=execution)
        queue_job_record(pipeline, job, "finished", job_duration(job), "finished")
        self.set_state(WorkerStatus.IDLE, pipeline=pipeline)
        self.heartbeat(pipeline=pipeline)
        # Keys the job cannot have need no TTL: its dependents (the script runs only when there
        # are none) and, with no dependencies, its dependencies set.
        absent = {job.dependents_key} | (set() if job._dependency_ids else {job.dependencies_key})
        commands = []
        for command in coalesce([args for args, _options in pipeline.command_stack]):
            if command[0] == "EXPIRE" and command[1] in absent:
                continue
            if command[0] == "HSET" and command[1] == job.key and empty:  # deleted a few commands on
                pairs = zip(command[2::2], command[3::2], strict=True)
                command = (*command[:2], *(item for pair in pairs if pair[0] not in empty for item in pair))
            commands.append(command)
        return commands

    def _compaction(self, job: Job) -> tuple[str, int] | None:
        """The results stream to compact after the end write, and its TTL in ms, under
        FINISHED_JOB_FOOTPRINT "compact"; None when there is none or the setting is "rq"."""
        result_ttl = job.get_result_ttl(self.default_result_ttl)
        if self.flask_app.config["OFFLOAD_FINISHED_JOB_FOOTPRINT"] != "compact" or result_ttl == 0:
            return None
        return Result.get_key(job.id), max(result_ttl, 0) * 1000

    def handle_job_retry(self, *args: Any, **kwargs: Any) -> None:
        self._write_pending_end()
        super().handle_job_retry(*args, **kwargs)

    def handle_job_failure(self, job, queue, started_job_registry=None, exc_string="", execution=None):
        self._write_pending_end()
        super().handle_job_failure(job, queue, started_job_registry, exc_string, execution)
