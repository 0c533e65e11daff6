"""Worker slots (``WORKER_SLOTS=2``) on the production worker command: two jobs at once, each in
a slot of its own, and timeouts, stop commands, SIGTERM and crashes handled for every slot."""

from __future__ import annotations

import os
import signal
import subprocess

import psutil
import pytest
from redis import Redis
from rq import Worker
from rq.command import send_stop_job_command
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from offload.jobs import attempts as job_attempts
from offload.queues import OffloadQueue
from tests.conftest import ended, refreshed, wait_for

pytestmark = pytest.mark.e2e

TWO_SLOTS = {"WORKER_SLOTS": "2"}
FAST = {**TWO_SLOTS, "WORKER_HEARTBEAT_INTERVAL": "1", "WORKER_MAINTENANCE_INTERVAL": "1"}


@pytest.fixture
def queue(redis: Redis) -> OffloadQueue:
    return OffloadQueue("default", connection=redis, serializer=JSONSerializer)


def started(*jobs: Job) -> list[Job]:
    """Wait until every job runs; return them refreshed."""
    wait_for(
        lambda: all(job.get_status(refresh=True) == JobStatus.STARTED for job in jobs),
        timeout=30,
        what="the jobs to run at once",
    )
    for job in jobs:
        job.refresh()
    return list(jobs)


def slot_workers(redis: Redis, count: int = 2) -> list[Worker]:
    return wait_for(  # type: ignore[return-value]
        lambda: (found := Worker.all(connection=redis, serializer=JSONSerializer)) and len(found) == count and found,
        what=f"{count} slot workers",
    )


def test_two_slots_run_two_jobs_at_once_each_in_its_own_worker_and_job_process(workers, queue, redis):
    main = workers.start_worker(env=TWO_SLOTS)
    jobs = [queue.enqueue("tests.fixtures.run_until_released", "release:both") for _ in range(2)]

    first, second = started(*jobs)

    assert first.worker_name != second.worker_name
    assert {worker.name for worker in slot_workers(redis)} == {first.worker_name, second.worker_name}
    # `rq info` lists each slot as a busy worker.
    info = subprocess.run(
        ["rq", "info", "--url", workers.redis_url, "-S", "json", "-W"],
        capture_output=True,
        text=True,
        timeout=60,
        env=workers.env,
    )
    busy = [line for line in info.stdout.splitlines() if " busy" in line]
    assert {name for name in (first.worker_name, second.worker_name) if any(name in line for line in busy)} == {
        first.worker_name,
        second.worker_name,
    }, info.stdout + info.stderr
    redis.set("release:both", 1)
    assert [ended(job).get_status() for job in jobs] == [JobStatus.FINISHED, JobStatus.FINISHED]
    assert main.poll() is None


def test_a_timeout_in_one_slot_fails_its_job_while_the_other_slot_runs_on(workers, queue, redis):
    workers.start_worker(env=TWO_SLOTS)
    other = queue.enqueue("tests.fixtures.run_until_released", "release:other")
    started(other)

    slow = ended(queue.enqueue("tests.fixtures.burn_cpu", 30, job_timeout=1))

    assert slow.get_status() == JobStatus.FAILED
    assert job_attempts(slow)[-1]["error"] == "timed out after 1 s"
    assert other.get_status(refresh=True) == JobStatus.STARTED
    redis.set("release:other", 1)
    assert ended(other).get_status() == JobStatus.FINISHED


def test_stopping_a_job_in_either_slot_stops_only_that_job(workers, queue, redis):
    main = workers.start_worker(env=TWO_SLOTS)
    first, second = started(*[queue.enqueue("tests.fixtures.run_until_released", "release:never") for _ in range(2)])

    send_stop_job_command(redis, second.id, serializer=JSONSerializer)
    assert ended(second).get_status() == JobStatus.STOPPED
    assert first.get_status(refresh=True) == JobStatus.STARTED

    send_stop_job_command(redis, first.id, serializer=JSONSerializer)
    assert ended(first).get_status() == JobStatus.STOPPED
    after = [queue.enqueue("tests.fixtures.report_pid") for _ in range(2)]
    assert [ended(job).get_status() for job in after] == [JobStatus.FINISHED, JobStatus.FINISHED]
    assert main.poll() is None


def test_sigterm_lets_both_slots_finish_their_jobs_then_every_process_exits(workers, queue):
    main = workers.start_worker(env=TWO_SLOTS)
    jobs = started(*[queue.enqueue("tests.fixtures.burn_cpu", 2) for _ in range(2)])
    tree = psutil.Process(main.pid).children(recursive=True)  # the other slot, job processes, the scheduler
    assert len(tree) >= 4

    # workers.stop SIGKILLs (return code -9) if the worker is not gone within 30 s; fly.toml's
    # kill_timeout is 300 s.
    assert workers.stop(main, signal.SIGTERM) == 0

    assert [ended(job).get_status() for job in jobs] == [JobStatus.FINISHED, JobStatus.FINISHED]
    assert not [process for process in tree if _running(process)], "a process of the worker outlived it"


def test_a_killed_slot_is_started_again_and_its_job_runs_again(workers, queue, redis):
    main = workers.start_worker(env=FAST)
    jobs = started(*[queue.enqueue("tests.fixtures.run_until_released", "release:after-kill") for _ in range(2)])
    victim = next(job for job in jobs if _worker_pid(redis, job.worker_name) != main.pid)
    victim_pid = _worker_pid(redis, victim.worker_name)

    os.kill(victim_pid, signal.SIGKILL)

    # Slot 1 starts the slot again; the killed slot's job is found abandoned and runs again.
    wait_for(
        lambda: {w.pid for w in Worker.all(connection=redis)} - {main.pid, victim_pid},
        timeout=60,
        what="the killed slot's worker started again",
    )
    wait_for(lambda: len(job_attempts(refreshed(victim))) == 2, timeout=60, what="a re-run")
    redis.set("release:after-kill", 1)
    assert [ended(job).get_status() for job in jobs] == [JobStatus.FINISHED, JobStatus.FINISHED]
    assert [attempt["outcome"] for attempt in job_attempts(victim)] == ["crashed", "finished"]
    assert main.poll() is None


def _worker_pid(redis: Redis, name: str | None) -> int | None:
    worker = Worker.find_by_key(f"{Worker.redis_worker_namespace_prefix}{name}", connection=redis)
    return worker.pid if worker else None


def _running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_flask_offload_worker_takes_the_slots_option(workers, queue, redis):
    main = workers.spawn("worker", ["flask", "--app", "app", "offload", "worker", "--slots", "2"])
    slot_workers(redis)
    jobs = started(*[queue.enqueue("tests.fixtures.run_until_released", "release:cli") for _ in range(2)])

    assert len({job.worker_name for job in jobs}) == 2
    redis.set("release:cli", 1)
    assert workers.stop(main, signal.SIGTERM) == 0


def test_flask_offload_worker_refuses_slots_that_are_not_a_number(workers):
    bad = workers.spawn("bad", ["flask", "--app", "app", "offload", "worker", "--slots", "many"])

    assert bad.wait(60) == 2
    assert "--slots must be a whole number" in workers.log("bad")
