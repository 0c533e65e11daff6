"""On-demand workers: a job on an on-demand queue starts ``rq worker --burst`` for it.

The local backend runs for real (subprocesses). The fly backend talks HTTP to
``tests.fake_fly``, which implements the Machines API endpoints it uses, answers their
errors on cue, and runs each Machine's command as a real process.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue, Retry
from rq.job import Job
from rq.serializers import JSONSerializer

from offload import ondemand
from offload.ondemand import (
    FlyBackend,
    LocalBackend,
    burst_command,
    ensure_worker,
    leave_if_drained,
    lock_key,
    workers_key,
)
from tasks import offload
from tests.conftest import ended, process_env, wait_for
from tests.fake_fly import FakeFly

TASKS = offload.tasks


pytestmark = pytest.mark.e2e

QUEUE = "ondemand"
IMAGE = "registry.fly.io/offload-test:deployment-01TEST"
TOKEN = "fly-test-token"


@pytest.fixture
def ondemand_task(monkeypatch):
    """crunch_numbers, registered a second time on the on-demand queue."""
    task = dataclasses.replace(TASKS["crunch_numbers"], name="crunch_on_demand", queue=QUEUE, retry=None)
    monkeypatch.setitem(TASKS, task.name, task)
    return task


@pytest.fixture
def queue(redis: Redis) -> Queue:
    return Queue(QUEUE, connection=redis, serializer=JSONSerializer)


@pytest.fixture(autouse=True)
def no_worker_left(redis: Redis) -> Iterator[None]:
    """Every on-demand worker a test started has exited by its end (a leftover is killed and fails it)."""
    yield
    pids = [int(pid) for pid in redis.hvals(workers_key(QUEUE)) if pid.isdigit()]
    leftover = [pid for pid in pids if _running(pid)]
    for pid in leftover:
        os.kill(pid, 9)
    assert not leftover, "on-demand workers still running at the end of the test"


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def status(redis: Redis, job_id: str) -> str:
    return Job.fetch(job_id, connection=redis, serializer=JSONSerializer).get_status(refresh=True)


def drained(redis: Redis) -> bool:
    return redis.hlen(workers_key(QUEUE)) == 0


# --------------------------------------------------------------------------- local backend


def test_job_on_an_ondemand_queue_starts_a_burst_worker_that_exits_once_drained(client, redis, ondemand_task):
    created = client.post("/api/jobs", json={"task": "crunch_on_demand", "params": {"limit": 1_000_000}})
    assert created.status_code == 202
    (pid,) = [int(pid) for pid in wait_for(lambda: redis.hvals(workers_key(QUEUE)), what="a worker to start")]

    job = wait_for(lambda: (view := client.get(created.headers["Location"]).get_json())["ended"] and view, what="job")
    assert job["status"] == "finished" and job["result"]["primes_below_limit"] == 78498
    assert job["queue"] == QUEUE
    wait_for(lambda: drained(redis) and not _running(pid), what="the burst worker to leave and exit")


def test_a_job_scheduled_on_an_ondemand_queue_runs_on_time_on_a_worker_started_for_it(workers, redis):
    from datetime import UTC, datetime, timedelta

    from offload.queues import OffloadQueue

    workers.start_worker()  # the README's worker, with the scheduler; it listens on other queues
    queue = OffloadQueue(QUEUE, connection=redis, serializer=JSONSerializer)
    due = datetime.now(UTC) + timedelta(seconds=3)
    job = queue.enqueue_at(due, "tests.fixtures.echo", "later")
    assert status(redis, job.id) == "scheduled" and not redis.hlen(workers_key(QUEUE))

    (pid,) = [int(pid) for pid in wait_for(lambda: redis.hvals(workers_key(QUEUE)), what="a worker once it is due")]

    finished = ended(job, timeout=60)
    assert finished.get_status() == "finished" and finished.return_value() == "later"
    started = finished.started_at.replace(tzinfo=UTC)
    assert due <= started + timedelta(seconds=1) and started - due < timedelta(seconds=15), (due, started)
    wait_for(lambda: drained(redis) and not _running(pid), what="the burst worker to leave and exit")


def test_workers_start_only_for_work_nobody_drains_and_never_beyond_the_limit(redis, redis_url, queue):
    backend = LocalBackend(process_env(redis_url))
    first = queue.enqueue("tests.fixtures.run_until_released", "release")
    assert ensure_worker(redis, backend, QUEUE, max_workers=2)
    wait_for(lambda: status(redis, first.id) == "started", what="the first worker to take the job")

    jobs = [queue.enqueue("tests.fixtures.run_until_released", "release")]
    assert ensure_worker(redis, backend, QUEUE, max_workers=2) is None, "one waiting job, one worker draining"
    jobs.append(queue.enqueue("tests.fixtures.run_until_released", "release"))
    assert ensure_worker(redis, backend, QUEUE, max_workers=2), "two waiting jobs, one worker"
    jobs.append(queue.enqueue("tests.fixtures.run_until_released", "release"))
    assert ensure_worker(redis, backend, QUEUE, max_workers=2) is None, "at the limit"
    assert redis.hlen(workers_key(QUEUE)) == 2

    redis.set("release", 1)
    for job in [first, *jobs]:
        wait_for(lambda job=job: status(redis, job.id) == "finished", what=f"job {job.id}")
    wait_for(lambda: drained(redis), what="both workers to leave")


def test_a_leaving_worker_stays_for_a_job_that_just_arrived(redis, queue):
    redis.hset(workers_key(QUEUE), "w1", "1")
    queue.enqueue("tests.fixtures.burn_cpu", 0)

    assert leave_if_drained(redis, [QUEUE], "w1") is False
    assert redis.hkeys(workers_key(QUEUE)) == [b"w1"]
    queue.empty()
    assert leave_if_drained(redis, [QUEUE], "w1") is True
    assert drained(redis)


def test_a_worker_that_died_silently_is_forgotten_and_replaced(redis, redis_url, queue):
    ghost = subprocess.Popen(["true"])
    ghost.wait()
    redis.hset(workers_key(QUEUE), "ghost", str(ghost.pid))
    job = queue.enqueue("tests.fixtures.burn_cpu", 0)

    new = ensure_worker(redis, LocalBackend(process_env(redis_url)), QUEUE, max_workers=1)

    assert new and b"ghost" not in redis.hkeys(workers_key(QUEUE))
    wait_for(lambda: status(redis, job.id) == "finished", what="the new worker to run the job")
    wait_for(lambda: drained(redis), what="the new worker to leave")


def test_a_worker_stopped_with_work_left_hands_it_to_a_new_worker(redis, redis_url, queue):
    backend = LocalBackend(process_env(redis_url))
    running = queue.enqueue("tests.fixtures.run_until_released", "release")
    ensure_worker(redis, backend, QUEUE, max_workers=1)
    wait_for(lambda: status(redis, running.id) == "started", what="the worker to take the job")
    (pid,) = [int(pid) for pid in wait_for(lambda: redis.hvals(workers_key(QUEUE)), what="a worker to start")]
    left = queue.enqueue("tests.fixtures.burn_cpu", 0)
    assert ensure_worker(redis, backend, QUEUE, max_workers=1) is None

    os.kill(pid, 15)  # SIGTERM: finish the current job, take no other
    redis.set("release", 1)

    wait_for(lambda: status(redis, left.id) == "finished", what="another worker to run the job left behind")
    assert status(redis, running.id) == "finished"
    wait_for(lambda: drained(redis), what="the workers to leave")


def test_a_task_with_delayed_retries_is_refused_on_an_ondemand_queue(monkeypatch, redis_url):
    from app import create_app

    task = dataclasses.replace(TASKS["crunch_numbers"], name="delayed", queue=QUEUE, retry=Retry(max=2, interval=10))
    monkeypatch.setitem(TASKS, task.name, task)
    with pytest.raises(RuntimeError, match="'delayed' is on on-demand queue 'ondemand' but retries after"):
        create_app({"OFFLOAD_REDIS_URL": redis_url})


# --------------------------------------------------------------------------- fly backend


@pytest.fixture
def fly(redis_url: str, tmp_path: Path) -> Iterator[FakeFly]:
    app_env = {
        "ONDEMAND_BACKEND": "fly",
        "FLY_API_TOKEN": TOKEN,
        "FLY_APP_NAME": "offload-test",
        "FLY_IMAGE_REF": IMAGE,
    }
    fake = FakeFly("offload-test", TOKEN, secrets={**process_env(redis_url), **app_env}, logs=tmp_path)
    fake.secrets["FLY_API_URL"] = fake.url  # what an on-demand worker hands leftover work on with
    try:
        yield fake
    finally:
        fake.close()
        for log in sorted(tmp_path.glob("machine-*.log")):
            print(f"----- {log.name} -----\n{log.read_text(errors='replace')[-3000:]}")


@pytest.fixture
def fly_client(fly: FakeFly, redis_url: str, ondemand_task):
    from app import create_app

    app = create_app(
        {
            "TESTING": True,
            "OFFLOAD_REDIS_URL": redis_url,
            "OFFLOAD_ONDEMAND_BACKEND": "fly",
            "OFFLOAD_FLY_API_URL": fly.url,
            "OFFLOAD_FLY_API_TOKEN": TOKEN,
            "OFFLOAD_FLY_APP_NAME": "offload-test",
            "OFFLOAD_FLY_IMAGE_REF": IMAGE,
            "OFFLOAD_FLY_REGION": "ord",
        }
    )
    return app.test_client()


def fly_backend(fly: FakeFly, **options) -> FlyBackend:
    return FlyBackend(api_url=fly.url, token=TOKEN, app_name="offload-test", image=IMAGE, **options)


def submit(client) -> str:
    created = client.post("/api/jobs", json={"task": "crunch_on_demand", "params": {"limit": 1_000_000}})
    assert created.status_code == 202
    return created.get_json()["id"]


def test_a_job_starts_a_machine_of_the_running_image_that_drains_the_queue_and_is_destroyed(fly, fly_client, redis):
    job_id = submit(fly_client)

    (machine,) = wait_for(fly.created, what="a Machine to be created")
    config = machine.config
    assert config["image"] == IMAGE
    assert config["init"]["cmd"] == burst_command(QUEUE)
    assert config["auto_destroy"] is True and config["restart"] == {"policy": "no"}
    assert config["metadata"]["offload_queue"] == QUEUE
    # Recorded once the API answered (the fake Fly lists the Machine as soon as it is asked for); the
    # Machine cannot leave before that: leaving takes the queue's lock, held until it is recorded.
    wait_for(
        lambda: redis.hget(workers_key(QUEUE), config["metadata"]["offload_worker"]) == machine.id.encode(),
        what="the Machine to be recorded as the queue's worker",
    )
    wait_for(lambda: status(redis, job_id) == "finished", what="the Machine to run the job")
    wait_for(lambda: machine.state == "destroyed" and drained(redis), what="the Machine to exit and be destroyed")


def test_rate_limits_and_capacity_errors_are_retried_until_a_machine_starts(fly, fly_client, redis):
    fly.answer_next(
        "POST /machines",
        (429, {"error": "rate limit exceeded"}, {"Retry-After": "0"}),
        (412, {"error": "insufficient resources available to fulfill request"}, {}),
        (503, {"error": "service unavailable"}, {}),
    )
    job_id = submit(fly_client)

    wait_for(fly.created, what="a Machine to be created")
    assert [r for r in fly.requests if r[0] == "POST"].__len__() == 4
    assert len(fly.created()) == 1
    wait_for(lambda: status(redis, job_id) == "finished", what="the Machine to run the job")


def test_a_refused_token_leaves_the_job_queued_and_says_why(fly, fly_client, redis, caplog):
    fly.token = "another-token"
    with caplog.at_level(logging.ERROR, logger="offload.ondemand"):
        job_id = submit(fly_client)
        wait_for(lambda: "401" in caplog.text, what="the refusal to be logged")

    assert status(redis, job_id) == "queued"
    assert not fly.created()
    assert f"job {job_id} waits on queue ondemand" in caplog.text and "401" in caplog.text


def test_a_submit_never_waits_for_the_queues_lock_or_the_machines_api(fly, fly_client, redis):
    """Starting a worker takes the queue's lock (up to 20 s) and the Machines API (up to 15 s): not in the request."""
    held = redis.lock(lock_key(QUEUE), timeout=60)
    assert held.acquire(blocking=False)
    try:
        job_id = submit(fly_client)  # answered while the lock is held elsewhere
        assert status(redis, job_id) == "queued" and not fly.created()
    finally:
        held.release()
    wait_for(fly.created, what="the Machine started once the lock was free")
    wait_for(lambda: status(redis, job_id) == "finished", what="the Machine to run the job")


def test_no_second_machine_starts_for_work_one_is_draining(fly, redis, queue):
    backend = fly_backend(fly)
    first = queue.enqueue("tests.fixtures.run_until_released", "release")
    ensure_worker(redis, backend, QUEUE, max_workers=3)
    wait_for(lambda: status(redis, first.id) == "started", what="the Machine to take the job")
    second = queue.enqueue("tests.fixtures.burn_cpu", 0)

    assert ensure_worker(redis, backend, QUEUE, max_workers=3) is None
    assert ("GET", f"/v1/apps/offload-test/machines?metadata.offload_queue={QUEUE}") in fly.requests
    assert len(fly.created()) == 1
    redis.set("release", 1)
    wait_for(lambda: status(redis, second.id) == "finished", what="the same Machine to run the second job")


def test_a_machine_that_never_starts_is_destroyed_and_another_created(fly, redis, queue):
    fly.stuck = 1
    job = queue.enqueue("tests.fixtures.burn_cpu", 0)

    ensure_worker(redis, fly_backend(fly, start_timeout=1), QUEUE, max_workers=1)

    stuck, _started = fly.created()
    assert ("DELETE", f"/v1/apps/offload-test/machines/{stuck.id}?force=true") in fly.requests
    assert stuck.state == "destroyed"
    wait_for(lambda: status(redis, job.id) == "finished", what="the second Machine to run the job")


def test_a_machine_gone_from_the_list_is_forgotten_and_replaced(fly, redis, queue):
    redis.hset(workers_key(QUEUE), "vanished", "machine-that-is-gone")
    job = queue.enqueue("tests.fixtures.burn_cpu", 0)

    assert ensure_worker(redis, fly_backend(fly), QUEUE, max_workers=1)

    assert b"vanished" not in redis.hkeys(workers_key(QUEUE))
    wait_for(lambda: status(redis, job.id) == "finished", what="the new Machine to run the job")


def test_missing_fly_settings_are_named(redis_url):
    with pytest.raises(ondemand.OnDemandError, match="FLY_API_TOKEN, FLY_IMAGE_REF"):
        FlyBackend(api_url="http://127.0.0.1:1", token="", app_name="offload", image="")
