"""The worker's edge cases, each once a bug, on real parts: real Redis (behind a TCP proxy for
network faults: tests/faultproxy.py), real processes and signals, the real ``rq worker`` CLI."""

from __future__ import annotations

import fcntl
import json
import multiprocessing
import os
import shlex
import signal
import struct
import subprocess
import sys
import termios
import time
import uuid
from multiprocessing import Pipe
from urllib.parse import urlsplit

import pytest
from redis import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from rq import Worker
from rq.command import send_kill_horse_command
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer
from rq.timeouts import HorseMonitorTimeoutException

import dev
from offload.jobs import attempts as job_attempts
from offload.queues import OffloadQueue
from offload.worker import OffloadWorker
from offload.worker.jobprocess import JobProcess
from offload.worker.scheduler import SleepingScheduler
from offload.worker.scripts import TAKE_JOB, TAKERS_KEY, commit_if_no_dependents, taken_key
from tests.conftest import ROOT, process_env, wait_for
from tests.faultproxy import FaultProxy
from tests.faults import Ledger, alive

FAST = {"WORKER_HEARTBEAT_INTERVAL": "1", "WORKER_MAINTENANCE_INTERVAL": "1"}


class OwnQueue(OffloadQueue):
    """An app's own queue class, built on Offload's."""


@pytest.fixture
def json_queue(redis: Redis) -> OffloadQueue:
    return OffloadQueue("default", connection=redis, serializer=JSONSerializer)


@pytest.fixture
def signals():
    """Put back the handlers a worker run in the tests' process installs."""
    kept = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGALRM)}
    yield
    signal.setitimer(signal.ITIMER_REAL, 0)
    for sig, handler in kept.items():
        signal.signal(sig, handler)


@pytest.fixture
def proxy(redis_url: str):
    proxy = FaultProxy(urlsplit(redis_url).port)
    yield proxy
    proxy.close()


def ended(job: Job, timeout: float = 30) -> Job:
    ends = (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED)
    wait_for(lambda: job.get_status(refresh=True) in ends, timeout=timeout, what=f"job {job.id} to end")
    job.refresh()
    return job


def attempts(job: Job) -> list[tuple[str | None, str | None]]:
    return [(attempt["outcome"], attempt.get("error")) for attempt in job_attempts(job)]


# --------------------------------------------------------------------------- construction


def test_a_worker_built_from_queues_alone_takes_their_connection_and_keeps_their_settings(redis, signals):
    given = OwnQueue("default", connection=redis, default_timeout=7)  # RQ's pickle serializer

    worker = OffloadWorker([given])
    [queue] = worker.queues
    job = queue.enqueue("tests.fixtures.report_pid")
    worker.work(burst=True)

    assert worker.connection is redis
    assert type(queue) is OwnQueue and queue.serializer is JSONSerializer
    assert job.timeout == 7
    assert job.get_status(refresh=True) == JobStatus.FINISHED


def run_cli(redis_url: str, *extra: str) -> subprocess.CompletedProcess:
    command = [*shlex.split(dev.WORKER_COMMAND), "--burst", *extra]
    return subprocess.run(command, cwd=ROOT, env=process_env(redis_url), capture_output=True, text=True, timeout=60)


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("option", "given", "needed"),
    [
        ("--job-class", "tests.fixtures.PlainJob", "offload.worker.OffloadJob"),
        ("--queue-class", "tests.fixtures.PlainQueue", "offload.queues.OffloadQueue"),
    ],
)
def test_the_cli_refuses_a_job_or_queue_class_not_built_on_offloads(redis_url, json_queue, option, given, needed):
    job = json_queue.enqueue("tests.fixtures.report_pid")

    result = run_cli(redis_url, option, given)

    assert result.returncode != 0
    assert f"{option} {given} is not a subclass of {needed}" in result.stdout + result.stderr
    assert job.get_status(refresh=True) == JobStatus.QUEUED


@pytest.mark.e2e
def test_the_cli_takes_a_job_class_built_on_offloads(redis_url, json_queue):
    job = json_queue.enqueue("tests.fixtures.report_pid")

    result = run_cli(redis_url, "--job-class", "tests.fixtures.OwnJob")

    assert result.returncode == 0, result.stdout + result.stderr
    assert job.get_status(refresh=True) == JobStatus.FINISHED


# --------------------------------------------------------------------------- deliberate kills


@pytest.mark.e2e
def test_a_kill_horse_command_fails_the_job_and_it_is_not_rerun_as_a_crash(workers, redis, json_queue):
    workers.start_worker()
    job = json_queue.enqueue("tests.fixtures.run_until_released", "release:never", job_timeout=120)
    wait_for(lambda: job.get_status(refresh=True) == JobStatus.STARTED, what="the job to start")

    job.refresh()
    send_kill_horse_command(redis, job.worker_name)

    assert ended(job).get_status() == JobStatus.FAILED
    assert attempts(job) == [("failed", "killed on request (kill-horse command)")]
    assert "crash_reruns" not in job.meta


@pytest.mark.e2e
def test_a_job_hung_past_its_timeout_is_killed_and_fails_timed_out_without_a_rerun(workers, json_queue):
    workers.start_worker(env=FAST)
    job = json_queue.enqueue("tests.fixtures.ignore_timeout", "release:never", 300, job_timeout=1)

    # RQ kills a work horse that outlived its timeout by 60 s (SIGALRM never reached this one).
    assert ended(job, timeout=120).get_status() == JobStatus.FAILED
    assert attempts(job) == [("failed", "timed out after 1 s")]
    assert "crash_reruns" not in job.meta


# --------------------------------------------------------------------------- retried writes


def own_queue_name() -> str:
    """A queue no other test's worker listens on: a worker of an earlier test that is still
    shutting down (a loaded CI machine) must not take this test's job past the proxy."""
    return f"edges-{uuid.uuid4().hex[:8]}"


def test_a_start_retried_after_redis_dropped_its_reply_records_one_attempt(proxy, redis, signals):
    # redis-py's own retries resend the same bytes; with them off (or used up) Offload's retry rebuilds them.
    through_proxy = Redis.from_url(proxy.url, retry=Retry(NoBackoff(), 0))
    queue = OffloadQueue(own_queue_name(), connection=through_proxy, serializer=JSONSerializer)
    job = queue.enqueue("tests.fixtures.report_pid")
    proxy.drop_reply_of_transaction_with(b"PERSIST")  # the job process's "started" write

    OffloadWorker([queue]).work(burst=True)

    job = Job.fetch(job.id, connection=redis, serializer=JSONSerializer)
    assert proxy.dropped == 1
    assert job.get_status() == JobStatus.FINISHED
    assert [outcome for outcome, _ in attempts(job)] == ["finished"]


@pytest.mark.parametrize("queues", [1, 2], ids=["one queue", "several queues"])
@pytest.mark.parametrize("resend", ["redis-py resends", "Offload retries"])
def test_a_take_whose_reply_redis_dropped_is_taken_again_not_lost(proxy, redis, signals, queues, resend):
    # Redis popped the job and the connection went before its reply (a restart, a network cut):
    # the job is in no queue, and no worker knows it has it.
    retry = Retry(NoBackoff(), 1 if resend == "redis-py resends" else 0)
    through_proxy = Redis.from_url(proxy.url, retry=retry)
    names = [own_queue_name() for _ in range(queues)]
    first, *others = (OffloadQueue(name, connection=through_proxy, serializer=JSONSerializer) for name in names)
    job, later = (first.enqueue("tests.fixtures.record_run", first.name) for _ in range(2))
    redis.script_load(TAKE_JOB)  # the reply dropped is the script's, not a NOSCRIPT before it ran
    proxy.drop_reply_of_transaction_with(b"RQ:SUSPENDED")  # the take script checks the suspension flag

    worker = OffloadWorker([first, *others])
    worker.work(burst=True)

    assert proxy.dropped == 1
    # The worker's note of its takes goes with it.
    assert not redis.exists(taken_key(worker.name)) and not redis.sismember(TAKERS_KEY, worker.name)
    for taken in (job, later):
        taken = Job.fetch(taken.id, connection=redis, serializer=JSONSerializer)
        assert taken.get_status() == JobStatus.FINISHED
        assert [outcome for outcome, _ in attempts(taken)] == ["finished"]
    assert redis.hlen(f"{first.name}:runs") == 2  # each ran once
    assert redis.llen(first.intermediate_queue_key) == 0


@pytest.mark.parametrize("where", ["popped, in no queue", "back in its queue"])
def test_a_job_an_earlier_worker_of_the_same_name_took_runs_once(redis, signals, where):
    # An earlier worker of this name took the job; it was killed before the job started, or it
    # put the job back (a paused queue, a task it did not know).
    queue = OffloadQueue(own_queue_name(), connection=redis, serializer=JSONSerializer)
    job = queue.enqueue("tests.fixtures.record_run", queue.name)
    if where == "popped, in no queue":
        assert redis.lpop(queue.key) == job.id.encode()
    name = f"edges-{uuid.uuid4().hex[:8]}"
    redis.set(taken_key(name), f"{job.id} {queue.key}", ex=60)

    OffloadWorker([queue], name=name).work(burst=True)

    job = Job.fetch(job.id, connection=redis, serializer=JSONSerializer)
    assert job.get_status() == JobStatus.FINISHED
    assert redis.hlen(f"{queue.name}:runs") == 1  # run once (a finished run reads as one attempt however often)
    assert redis.llen(queue.key) == 0


@pytest.mark.parametrize("queues", [1, 2], ids=["one queue", "several queues"])
def test_a_job_a_dead_worker_took_but_never_started_is_put_back_and_runs_once(redis, signals, queues):
    names = [own_queue_name() for _ in range(queues)]
    first, *others = (OffloadQueue(name, connection=redis, serializer=JSONSerializer) for name in names)
    job = first.enqueue("tests.fixtures.record_run", first.name)
    # A worker killed between its take and the job's start: the job is popped (into the
    # intermediate queue when it had one queue, as RQ's dequeue does), noted under its name.
    dead = f"edges-dead-{uuid.uuid4().hex[:8]}"
    if queues == 1:
        redis.lmove(first.key, first.intermediate_queue_key)
    else:
        redis.lpop(first.key)
    redis.set(taken_key(dead), f"{job.id} {first.key}", ex=60)
    redis.sadd(TAKERS_KEY, dead)
    # A live worker's take is left alone: it hands the job over itself.
    live = f"edges-live-{uuid.uuid4().hex[:8]}"
    kept = first.enqueue("tests.fixtures.record_run", first.name)
    redis.lpop(first.key)
    redis.set(taken_key(live), f"{kept.id} {first.key}", ex=60)
    redis.sadd(TAKERS_KEY, live)
    redis.hset(f"rq:worker:{live}", "state", "busy")

    OffloadWorker([first, *others]).work(burst=True)  # its first maintenance pass puts the job back

    assert Job.fetch(job.id, connection=redis, serializer=JSONSerializer).get_status() == JobStatus.FINISHED
    assert redis.hlen(f"{first.name}:runs") == 1
    assert redis.llen(first.intermediate_queue_key) == 0
    assert not redis.exists(taken_key(dead)) and not redis.sismember(TAKERS_KEY, dead)
    assert Job.fetch(kept.id, connection=redis, serializer=JSONSerializer).get_status() == JobStatus.QUEUED
    assert redis.get(taken_key(live)) == f"{kept.id} {first.key}".encode() and redis.sismember(TAKERS_KEY, live)
    redis.delete(f"rq:worker:{live}", taken_key(live))
    redis.srem(TAKERS_KEY, live)


def test_a_success_retried_after_redis_dropped_its_reply_is_written_once(proxy, redis, signals):
    queue = OffloadQueue(own_queue_name(), connection=Redis.from_url(proxy.url), serializer=JSONSerializer)
    job = queue.enqueue("tests.fixtures.report_pid")
    proxy.drop_reply_of_transaction_with(b"XADD")  # RQ's success write stores the result

    worker = OffloadWorker([queue])
    worker.work(burst=True)

    job = Job.fetch(job.id, connection=redis, serializer=JSONSerializer)
    assert proxy.dropped == 1
    assert job.get_status() == JobStatus.FINISHED
    assert len(job.results()) == 1
    assert int(redis.hget(worker.key, "successful_job_count")) == 1


# --------------------------------------------------------------------------- the job process


def test_a_job_process_reaped_elsewhere_is_not_taken_for_a_success(json_queue, signals):
    job = json_queue.enqueue("tests.fixtures.exit_abruptly")
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps children: wait4 finds none

    OffloadWorker([json_queue]).work(burst=True)

    assert job.get_status(refresh=True) == JobStatus.FAILED


def test_an_alarm_while_a_report_is_read_neither_splits_nor_loses_it(redis, signals):
    worker = OffloadWorker(["default"], connection=redis)

    def alarm(signum, frame):
        raise HorseMonitorTimeoutException("RQ's monitor: time for a heartbeat")

    signal.signal(signal.SIGALRM, alarm)  # before the fork: the job process signals the worker
    parent_end, child_end = Pipe()
    pid = os.fork()
    if pid == 0:  # a job process whose report arrives in two parts, the alarm between them
        try:
            payload = json.dumps({"status": 0, "retire": False}).encode()
            os.write(child_end.fileno(), struct.pack("!i", len(payload)))
            # The worker's end is readable here too: once its queue is empty, the worker has read
            # the header and is waiting for the rest of the report.
            try:
                wait_for(
                    lambda: fcntl.ioctl(parent_end.fileno(), termios.FIONREAD, b"\0" * 4) == b"\0" * 4,
                    timeout=10,
                    interval=0.01,
                    what="the worker to read the report's header",
                )
            except TimeoutError:
                os._exit(8)  # the worker never read the header: the test fails, it does not hang
            os.kill(os.getppid(), signal.SIGALRM)
            os.write(child_end.fileno(), payload)
            child_end.poll(10)  # alive (not retiring) until the test kills it; a split report fails in 10 s
        finally:
            os._exit(7)
    child_end.close()
    worker._job_process = JobProcess(pid=pid, connection=parent_end)

    outcomes, alarms = [], 0
    try:
        while not outcomes:  # as RQ's monitor_work_horse loops
            try:
                outcomes.append(worker.wait_for_horse())
            except HorseMonitorTimeoutException:
                alarms += 1
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
        if worker._job_process is not None:
            os.waitpid(pid, 0)

    assert alarms == 1
    assert outcomes == [(pid, 0, None)]


# --------------------------------------------------------------------------- a worker cut off


@pytest.mark.e2e
def test_a_worker_cut_off_from_redis_past_the_heartbeat_ttl_gives_its_job_up_so_it_never_runs_twice_at_once(
    workers, redis, proxy
):
    workers.start_worker("a", env={**FAST, "REDIS_URL": proxy.url})
    ledger = Ledger(redis, "cutoff")
    [job_id] = ledger.submit(1, seconds=12)
    first = wait_for(lambda: ledger.in_progress(60), what="the job to start on worker a")
    workers.start_worker("b", env=FAST)

    proxy.cut()  # worker a and its job process lose Redis; worker b does not
    wait_for(lambda: ledger.runs().get(job_id) == 2, timeout=30, what="worker b to take the job for abandoned")
    first_still_running = alive(first.pid)
    proxy.restore()
    wait_for(ledger.settled, timeout=60, interval=0.5, what="the job to end")

    assert not first_still_running, "the job ran on two workers at once"
    assert ledger.done() == {job_id: 1}
    job = ledger.fetch(job_id)
    assert job.get_status() == JobStatus.FINISHED
    assert [outcome for outcome, _ in attempts(job)] == ["crashed", "finished"]


def test_an_end_write_that_reaches_redis_when_the_lease_is_over_or_nearly_so_writes_nothing(redis, json_queue):
    """The job process's end write checks the lease in Redis itself (the worker's watchdog lets a
    job whose work is done write its end, however late Redis answers): only while it holds."""
    job = json_queue.enqueue("tests.fixtures.report_pid")
    with redis.pipeline() as pipeline:
        execution = Execution.create(job, 4, pipeline=pipeline, worker_name="w")  # a lease of 4 s
        pipeline.execute()
    finish = [("HSET", job.key, "status", "finished"), ("DEL", execution.key)]
    registry = job.started_job_registry

    assert commit_if_no_dependents(job, execution, finish, lease_margin=5.0) == 3  # 4 s left, 5 needed
    redis.zrem(registry.key, execution.composite_key)  # another worker took it for abandoned
    assert commit_if_no_dependents(job, execution, finish, lease_margin=1.0) == 3
    assert job.get_status(refresh=True) == JobStatus.QUEUED and redis.exists(execution.key)

    redis.zadd(registry.key, {execution.composite_key: time.time() + 4})
    assert commit_if_no_dependents(job, execution, finish, lease_margin=1.0) == 1
    assert job.get_status(refresh=True) == JobStatus.FINISHED
    assert commit_if_no_dependents(job, execution, finish, lease_margin=1.0) == 2  # resent: it ran already
    redis.hset(job.key, "status", JobStatus.STARTED)  # its execution expired while it still ran
    assert commit_if_no_dependents(job, execution, finish, lease_margin=1.0) == 3


# --------------------------------------------------------------------------- the scheduler process


def test_a_stop_signal_as_the_scheduler_process_starts_still_releases_its_locks(redis, signals, monkeypatch):
    work = SleepingScheduler.work
    started, signalled = multiprocessing.Event(), multiprocessing.Event()

    def slow_start(scheduler):  # imports and logging take a while in a real start
        started.set()
        signalled.wait(10)
        work(scheduler)

    monkeypatch.setattr(SleepingScheduler, "work", slow_start)
    worker = OffloadWorker(["default"], connection=redis)
    worker._start_scheduler()  # what `rq worker --with-scheduler` does first
    process = worker.scheduler._process
    assert redis.exists("rq:scheduler-lock:default")

    assert started.wait(10), "the scheduler process did not start"
    os.kill(process.pid, signal.SIGTERM)  # before the new process has its handlers
    signalled.set()
    process.join(10)

    assert process.exitcode == 0
    assert not redis.exists("rq:scheduler-lock:default"), "the scheduler died holding its lock"


_SIGNALLED_AS_IT_STARTS = """
import os, signal, sys
from redis import Redis
from offload.worker import OffloadWorker

worker = OffloadWorker(["default"], connection=Redis.from_url(sys.argv[1]))
start_scheduler = worker._start_scheduler

def signalled_meanwhile(*args, **kwargs):  # registered; RQ's loop has not installed its handlers
    os.kill(os.getpid(), signal.SIGTERM)
    start_scheduler(*args, **kwargs)

worker._start_scheduler = signalled_meanwhile
worker.work(with_scheduler=True, logging_level="INFO")  # what `rq worker --with-scheduler` runs
"""


def test_a_stop_signal_between_registering_and_rqs_loop_is_a_warm_stop(redis_url, redis):
    # Killed outright there, the worker left its registration (and its scheduler's locks) to expire.
    run = subprocess.run(
        [sys.executable, "-c", _SIGNALLED_AS_IT_STARTS, redis_url],
        env=process_env(redis_url),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
    )

    assert run.returncode == 0, run.stdout
    assert "warm shut down requested" in run.stdout
    assert not Worker.all(connection=redis), "the worker is still registered"
    assert not list(redis.scan_iter("rq:scheduler*")), "its scheduler left its locks or registration"
