"""A worker runs only registered tasks (offload/worker/unknown_tasks.py): a job of a task it does not
know (an older release during a rolling deploy) is put back, without spending its retries, for a
worker that knows it; when none takes it within UNKNOWN_TASK_GRACE it fails, saying so. Real
``rq worker`` processes (the README's command) on a real Redis."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from redis import Redis
from rq import Retry, Worker
from rq.job import JobStatus
from rq.serializers import JSONSerializer

from offload.jobs import attempts as job_attempts
from offload.queues import OffloadQueue
from offload.registry import TaskRegistry
from offload.worker.unknown_tasks import PUT_BACK, SINCE, is_known
from tests.conftest import ended, log_in, wait_for

NEW_TASK = "tests.newer_release.added_in_newer_release"
NEWER_RELEASE = {"OFFLOAD_APP": "tests.newer_release:create_app"}


@pytest.fixture
def queue(redis: Redis) -> OffloadQueue:
    return OffloadQueue("default", connection=redis, serializer=JSONSerializer)


def test_only_registered_tasks_and_the_listed_modules_are_known():
    from tasks import offload

    config = {"OFFLOAD_UNREGISTERED_JOB_MODULES": ["tests.fixtures"]}
    assert is_known("tasks.crunch_numbers", offload.tasks, config)
    assert is_known("tests.fixtures.echo", offload.tasks, config)
    assert not is_known("tests.fixtures.echo", offload.tasks, {"OFFLOAD_UNREGISTERED_JOB_MODULES": []})
    assert not is_known("tests.fixtures_evil.echo", offload.tasks, config)
    assert not is_known(NEW_TASK, offload.tasks, config)
    assert not is_known("os.system", offload.tasks, config)
    assert not is_known("tests", TaskRegistry(), {"OFFLOAD_UNREGISTERED_JOB_MODULES": [""]})


@pytest.mark.e2e
def test_a_job_of_a_task_the_worker_lacks_waits_for_a_worker_that_has_it_with_its_retries_unspent(
    workers, queue, redis
):
    workers.start_worker("old")  # the reference app: it has no such task
    job = queue.enqueue(NEW_TASK, key="runs", retry=Retry(max=2, interval=1))

    wait_for(lambda: job.get_status(refresh=True) == JobStatus.SCHEDULED, what="the old worker to put the job back")
    # It does not spin on the job meanwhile: put back once, to be queued again seconds from now.
    put_back_at = datetime.now(UTC)
    assert queue.scheduled_job_registry.get_scheduled_time(job) - put_back_at > timedelta(seconds=2)
    job.refresh()
    assert job.meta[PUT_BACK] == 1
    assert job.retries_left == 2 and not job_attempts(job)
    assert redis.get("runs") is None

    new = workers.start_worker("new", env=NEWER_RELEASE)
    job = ended(job)

    assert job.get_status() == JobStatus.FINISHED and job.return_value() == "ran"
    assert redis.get("runs") == b"1"
    assert job.retries_left == 2
    assert [attempt["outcome"] for attempt in job_attempts(job)] == ["finished"]
    assert job_attempts(job)[0]["worker"] == next(w.name for w in Worker.all(connection=redis) if w.pid == new.pid)
    assert "which this worker does not know" in workers.log("old")


@pytest.mark.e2e
@pytest.mark.parametrize("kind", ["newer task", "os.system"])
def test_a_job_no_worker_knows_fails_after_the_grace_time_saying_so_and_never_runs(
    workers, queue, redis, client, tmp_path: Path, kind
):
    workers.start_worker(env={"UNKNOWN_TASK_GRACE": "2"})
    marker = tmp_path / "ran"
    if kind == "os.system":  # issue 14: a job written to a queue by hand runs nothing
        job = queue.enqueue("os.system", f"touch {marker}", retry=Retry(max=2, interval=1))
        name = "os.system"
    else:
        job = queue.enqueue(NEW_TASK, key="runs", retry=Retry(max=2, interval=1))
        name = NEW_TASK
    enqueued = time.monotonic()

    job = ended(job)

    assert time.monotonic() - enqueued >= 2
    assert job.get_status() == JobStatus.FAILED
    assert f"no worker knows task {name};" in job.latest_result().exc_string
    assert job.retries_left == 2, "its retries were spent"
    assert not job_attempts(job) and job.meta[SINCE] and job.meta[PUT_BACK] >= 1
    assert redis.get("runs") is None and not marker.exists()
    assert log_in(client).status_code == 303  # a job of no registered task is the operator's to read
    view = client.get(f"/api/jobs/{job.id}").get_json()
    assert view["status"] == "failed"
    assert view["error"].startswith(f"no worker knows task {name};")


@pytest.mark.e2e
def test_on_an_on_demand_queue_which_no_scheduler_serves_the_job_goes_back_to_the_queue_itself(workers, redis):
    workers.start_worker(extra=["ondemand"], env={"UNKNOWN_TASK_GRACE": "2"})
    queue = OffloadQueue("ondemand", connection=redis, serializer=JSONSerializer)
    job = queue.enqueue(NEW_TASK, key="runs", retry=Retry(max=1))

    job = ended(job)

    assert job.get_status() == JobStatus.FAILED
    assert f"no worker knows task {NEW_TASK};" in job.latest_result().exc_string
    assert 2 <= job.meta[PUT_BACK] <= 4, "put back at the end of the queue, a pause apart"
    assert redis.zcard(queue.scheduled_job_registry.key) == 0
    assert job.retries_left == 1 and redis.get("runs") is None
