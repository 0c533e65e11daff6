"""The production worker (``rq worker -c worker -w worker.OffloadWorker --with-scheduler``) on real
processes: jobs run in a reused job process, and whatever a job does, the worker goes on."""

from __future__ import annotations

import signal
import threading
from collections import Counter
from datetime import timedelta

import psutil
import pytest
from redis import Redis
from rq import Callback, Retry
from rq.command import send_stop_job_command
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from offload.jobs import attempts as job_attempts
from offload.queues import WAKE_CHANNEL, OffloadQueue
from tests.conftest import ended, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def queue(redis: Redis) -> OffloadQueue:
    return OffloadQueue("default", connection=redis, serializer=JSONSerializer)


def test_jobs_run_one_after_another_in_one_job_process_apart_from_the_worker(workers, queue):
    worker = workers.start_worker()

    pids = [ended(queue.enqueue("tests.fixtures.report_pid")).return_value() for _ in range(3)]

    assert len(set(pids)) == 1
    assert pids[0] != worker.pid


@pytest.mark.parametrize("crash", ["tests.fixtures.segfault", "tests.fixtures.exit_abruptly"])
def test_a_job_that_kills_its_process_fails_and_the_next_jobs_still_run(workers, queue, crash):
    worker = workers.start_worker()

    crashed = ended(queue.enqueue(crash))
    after = [ended(queue.enqueue("tests.fixtures.report_pid")) for _ in range(2)]

    assert crashed.get_status() == JobStatus.FAILED
    assert "terminated unexpectedly" in crashed.latest_result().exc_string
    assert [job.get_status() for job in after] == [JobStatus.FINISHED, JobStatus.FINISHED]
    assert worker.poll() is None


def test_a_job_past_its_timeout_fails_timed_out_and_the_worker_goes_on(workers, queue):
    workers.start_worker()

    slow = ended(queue.enqueue("tests.fixtures.burn_cpu", 30, job_timeout=1))
    after = ended(queue.enqueue("tests.fixtures.report_pid"))

    assert slow.get_status() == JobStatus.FAILED
    assert job_attempts(slow)[-1]["error"] == "timed out after 1 s"
    assert after.get_status() == JobStatus.FINISHED


def test_a_failed_run_reads_as_one_attempt_before_and_after_rq_decides_its_retry(workers, queue, redis):
    """Between the failed run's record and RQ's failure write (held open here by the job's failure
    callback), a reader sees the one run, failed, and not a second run under way (an API client
    polling a retried job saw two attempts and no retry spent)."""
    workers.start_worker()
    job = queue.enqueue(
        "tests.fixtures.fail_with",
        "boom",
        retry=Retry(max=2, interval=600),
        on_failure=Callback("tests.fixtures.wait_in_failure_callback", timeout=60),
    )
    wait_for(lambda: redis.exists(f"{job.id}:failing"), what="the failure callback to run")

    during = Job.fetch(job.id, connection=redis, serializer=JSONSerializer)
    redis.rpush(f"{job.id}:go-on", 1)
    wait_for(lambda: job.get_status(refresh=True) == JobStatus.SCHEDULED, what="the retry to be scheduled")

    assert during.get_status(refresh=False) == JobStatus.STARTED  # RQ has not written the failure yet
    assert [(run["outcome"], run.get("error")) for run in job_attempts(during)] == [("failed", "RuntimeError: boom")]
    job.refresh()
    assert job_attempts(job) == job_attempts(during)
    assert job.retries_left == 1


def test_stopping_a_running_job_stops_it_and_the_worker_goes_on(workers, queue, redis):
    worker = workers.start_worker()
    running = queue.enqueue("tests.fixtures.burn_cpu", 60)
    wait_for(lambda: running.get_status(refresh=True) == JobStatus.STARTED, what="the job to start")

    send_stop_job_command(redis, running.id, serializer=JSONSerializer)

    assert ended(running).get_status() == JobStatus.STOPPED
    assert ended(queue.enqueue("tests.fixtures.report_pid")).get_status() == JobStatus.FINISHED
    assert worker.poll() is None


def test_sigterm_lets_the_running_job_finish_then_the_worker_exits_with_its_children(workers, queue):
    worker = workers.start_worker()
    running = queue.enqueue("tests.fixtures.burn_cpu", 2)
    wait_for(lambda: running.get_status(refresh=True) == JobStatus.STARTED, what="the job to start")
    children = psutil.Process(worker.pid).children()  # the job process and the scheduler
    assert len(children) == 2

    assert workers.stop(worker, signal.SIGTERM) == 0

    assert ended(running).get_status() == JobStatus.FINISHED
    assert not [child for child in children if _running(child)], "a child of the worker outlived it"


def test_a_warm_shutdown_during_a_job_takes_no_scheduler_lock_and_starts_no_scheduler_again(workers, queue, redis):
    # A tester's report: SIGTERM stopped the scheduler (its locks released); once the job ended, the
    # worker's maintenance found the locks free, took all four again and started a new scheduler,
    # which enqueued periodic jobs, only to stop it at once and exit.
    worker = workers.start_worker(env={"WORKER_MAINTENANCE_INTERVAL": "1"})  # maintenance right after the job
    wait_for(lambda: list(redis.scan_iter("rq:scheduler:*")), what="the scheduler to register")
    running = queue.enqueue("tests.fixtures.burn_cpu", 3)
    wait_for(lambda: running.get_status(refresh=True) == JobStatus.STARTED, what="the job to start")

    assert workers.stop(worker, signal.SIGTERM) == 0

    assert ended(running).get_status() == JobStatus.FINISHED
    log = workers.log("worker")
    assert log.count("Acquired scheduler lock for default") == 1, log  # at start only
    assert log.count("Scheduler stopping") == 1, log
    assert not list(redis.scan_iter("rq:scheduler-lock:*"))


def test_a_killed_worker_leaves_no_scheduler_behind_holding_its_locks(workers, redis):
    # SIGKILL: the OOM killer, or a stop signal before the worker could handle one. A scheduler
    # left running would keep its queues' locks, and the next worker's scheduler none.
    worker = workers.start_worker()
    wait_for(lambda: list(redis.scan_iter("rq:scheduler:*")), what="the scheduler to register")
    [key] = redis.scan_iter("rq:scheduler:*")
    scheduler = psutil.Process(int(redis.hget(key, "pid")))
    assert scheduler.ppid() == worker.pid

    worker.kill()
    worker.wait()

    scheduler.wait(timeout=10)  # psutil.TimeoutExpired if it outlived its worker


def test_the_job_process_is_replaced_after_its_job_limit(workers, queue):
    worker = workers.start_worker(env={"JOB_PROCESS_MAX_JOBS": "2"})

    pids = [ended(queue.enqueue("tests.fixtures.report_pid")).return_value() for _ in range(5)]

    # The periodic jobs a fresh scheduler enqueues may take some of the slots too.
    assert max(Counter(pids).values()) <= 2
    assert len(set(pids)) >= 3
    assert worker.poll() is None


def test_the_job_process_is_replaced_once_its_memory_passed_the_limit(workers, queue):
    workers.start_worker(env={"JOB_PROCESS_MAX_MEMORY_MB": "200"})

    small = ended(queue.enqueue("tests.fixtures.report_pid")).return_value()
    big = ended(queue.enqueue("tests.fixtures.hold_memory", 250)).return_value()
    after = ended(queue.enqueue("tests.fixtures.report_pid")).return_value()

    assert small == big != after


def test_a_job_scheduled_a_second_ahead_runs_though_the_scheduler_sleeps_a_minute(workers, queue, redis):
    workers.start_worker()
    wait_for(lambda: dict(redis.pubsub_numsub(WAKE_CHANNEL))[WAKE_CHANNEL.encode()], what="the scheduler to listen")
    wait_for(lambda: list(redis.scan_iter("rq:scheduler:*")), what="the scheduler's first read")

    job = queue.enqueue_in(timedelta(seconds=1), "tests.fixtures.report_pid")

    # The scheduler's own sleep is MAX_SLEEP (60 s); the queue woke it.
    assert ended(job, timeout=20).get_status() == JobStatus.FINISHED


def _running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_delayed_retry_is_written_in_the_failure_transaction_and_not_before_it(workers, queue, redis):
    """RQ wrote a delayed retry's "scheduled" status on a round trip of its own before the failure's
    transaction: until that committed, a reader saw a scheduled job still in the started registry,
    its retry not yet counted. MONITOR shows what each client sent, in order."""
    seen: list[tuple[str, str]] = []  # (client, command)

    def watch() -> None:
        with Redis.from_url(workers.redis_url).monitor() as monitor:
            for entry in monitor.listen():
                seen.append((f"{entry['client_address']}:{entry['client_port']}", entry["command"]))
                if entry["command"] == "ECHO monitor-done":
                    return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    wait_for(lambda: any(client["cmd"] == "monitor" for client in redis.client_list()), what="MONITOR to start")
    workers.start_worker()
    job = queue.enqueue("tests.fixtures.fail_with", "boom", retry=Retry(max=1, interval=600))
    wait_for(lambda: job.get_status(refresh=True) == JobStatus.SCHEDULED, what="the retry to be scheduled")
    redis.echo("monitor-done")
    watcher.join(10)

    writes = [
        i
        for i, (_, command) in enumerate(seen)
        if command.startswith(f"HSET {job.key} ") and " status scheduled" in command
    ]
    assert writes, seen
    for index in writes:
        client = seen[index][0]
        before = [command for who, command in seen[:index] if who == client]
        opened = next((command for command in reversed(before) if command in ("MULTI", "EXEC")), None)
        assert opened == "MULTI", f"{seen[index][1]!r} sent outside a transaction: {[c[:60] for c in before[-3:]]}"
    job.refresh()
    assert job.retries_left == 0
