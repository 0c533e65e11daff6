"""A job's life in three Redis round trips, with RQ's data as RQ writes it, and a finished job's
compact footprint (FINISHED_JOB_FOOTPRINT), read back through RQ's own API. The worker is the
production command on a real Redis; round trips are Redis's own count of the reads it served."""

from __future__ import annotations

import subprocess

import pytest
from redis import Redis
from rq.job import Job, JobStatus
from rq.results import Result
from rq.serializers import JSONSerializer

from offload.jobs import attempt_time
from offload.jobs import attempts as job_attempts
from offload.queues import OffloadQueue

pytestmark = pytest.mark.e2e

WORKER = ["rq", "worker", "-c", "worker", "-w", "offload.worker.OffloadWorker", "--burst", "default"]


@pytest.fixture
def queue(redis: Redis) -> OffloadQueue:
    return OffloadQueue("default", connection=redis, serializer=JSONSerializer)


def drain(workers, queue: OffloadQueue, count: int, **env: str) -> tuple[list[Job], int]:
    """Enqueue ``count`` jobs, drain them with one burst worker; return them and Redis's reads meanwhile."""
    jobs = [queue.enqueue("tests.fixtures.echo", index, result_ttl=600) for index in range(count)]
    before = queue.connection.info("stats")["total_reads_processed"]
    worker = workers.spawn("worker", WORKER, **env)
    try:
        assert worker.wait(120) == 0, workers.log("worker")
    except subprocess.TimeoutExpired:
        raise AssertionError(workers.log("worker")) from None
    reads = queue.connection.info("stats")["total_reads_processed"] - before
    return [Job.fetch(job.id, connection=queue.connection, serializer=JSONSerializer) for job in jobs], reads


@pytest.mark.parametrize("redis_url", ["redis", "valkey"], indirect=True)  # Valkey runs the scripts too
def test_a_job_takes_three_round_trips_and_rq_sees_it_as_it_always_did(workers, queue, redis):
    _, few = drain(workers, queue, 10)
    jobs, many = drain(workers, queue, 50)

    # Starting and stopping cost the same in both runs: the difference is 40 jobs' worth.
    assert (many - few) / 40 <= 3.2
    for index, job in enumerate(jobs):
        assert job.get_status() == JobStatus.FINISHED
        assert job.return_value() == index
        assert job.latest_result().type == Result.Type.SUCCESSFUL
        assert [attempt["outcome"] for attempt in job_attempts(job)] == ["finished"]
        assert job.started_at <= job.ended_at
    assert set(queue.finished_job_registry.get_job_ids()) >= {job.id for job in jobs}
    assert queue.started_job_registry.get_job_ids() == []
    assert not list(redis.scan_iter("rq:execution:*"))
    # The worker's own counts, as `rq info` and rq-dashboard read them (its hash outlives it a minute).
    counts = [redis.hget(key, "successful_job_count") for key in redis.scan_iter("rq:worker:*")]
    assert b"50" in counts


def _bytes_kept(redis: Redis, job: Job) -> int:
    """MEMORY USAGE of every key named after ``job``."""
    return sum(redis.memory_usage(key, samples=0) or 0 for key in redis.scan_iter(f"*{job.id}*"))


@pytest.mark.parametrize("redis_url", ["redis", "valkey"], indirect=True)
def test_a_finished_job_keeps_under_half_of_what_rq_leaves_and_reads_the_same(workers, queue, redis):
    [rq_layout], _ = drain(workers, queue, 1, FINISHED_JOB_FOOTPRINT="rq")
    [compact], _ = drain(workers, queue, 1)

    assert _bytes_kept(redis, compact) * 2 < _bytes_kept(redis, rq_layout)
    for job in (rq_layout, compact):
        assert job.return_value() == 0
        assert [result.return_value for result in job.results()] == [0]
        assert 500 <= redis.ttl(Result.get_key(job.id)) <= 600  # kept for its result_ttl
        assert 500 <= redis.ttl(job.key) <= 600
    for attribute in ("_status", "origin", "description", "result_ttl", "failure_ttl", "timeout", "ttl"):
        assert getattr(compact, attribute) == getattr(rq_layout, attribute)
    assert compact._success_callback_name is None and compact.group_id is None
    # Every value of its hash fits Redis's compact hash encoding, for the whole of its life: a run
    # that finished first time is the job's own fields, not a record in its meta.
    assert redis.object("encoding", compact.key) == b"listpack"
    assert "attempts" not in compact.meta and compact.last_heartbeat is None
    [run] = job_attempts(compact)
    assert run["outcome"] == "finished" and run["worker"] == compact.worker_name
    assert run["started_at"] <= run["ended_at"]


def test_runs_recorded_by_an_earlier_release_read_as_they_were(redis):
    # Earlier releases recorded every run in the job's meta, the running and the finishing one too.
    job = Job.create("tests.fixtures.echo", args=[1], connection=redis, serializer=JSONSerializer)
    job.started_at = job.ended_at = job.created_at
    job.worker_name = "w1"
    failed = {"started_at": "2026-01-01T00:00:00.000Z", "ended_at": "2026-01-01T00:00:01.000Z", "outcome": "failed"}
    finished = {"started_at": "2026-01-01T00:00:02.000Z", "ended_at": "2026-01-01T00:00:03.000Z", "outcome": "finished"}
    running = {**finished, "ended_at": None, "outcome": None}
    for status, recorded in ((JobStatus.FINISHED, [failed, finished]), (JobStatus.STARTED, [failed, running])):
        job.set_status(status, pipeline=redis.pipeline())  # sets the cached status only
        job.meta = {"attempts": recorded}
        assert job_attempts(job) == recorded
    # Now: the failed run is recorded, the one under way is the job's own fields.
    job.meta = {"attempts": [failed]}
    assert [run["outcome"] for run in job_attempts(job)] == ["failed", None]
    assert job_attempts(job)[-1]["worker"] == "w1"


def test_a_run_that_has_just_failed_reads_as_one_ended_run_until_its_retry_is_written(redis):
    # The failed run's record is written as the task raises; the job stays "started" until the
    # worker writes the retry (or the failure) a moment later. One run, not a phantom second one.
    job = Job.create("tests.fixtures.echo", args=[1], connection=redis, serializer=JSONSerializer)
    job.started_at = job.created_at
    job.worker_name = "w1"
    failed = {"started_at": attempt_time(job.started_at), "ended_at": attempt_time(job.created_at), "outcome": "failed"}
    job.set_status(JobStatus.STARTED, pipeline=redis.pipeline())  # sets the cached status only
    job.meta = {"attempts": [failed]}

    assert job_attempts(job) == [failed]
