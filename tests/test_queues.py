"""OffloadQueue (queues.py) stores the same jobs as RQ's Queue, with fewer writes, and wakes the scheduler."""

from __future__ import annotations

from datetime import timedelta

import pytest
from redis import Redis
from rq import Queue, Retry
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from offload.queues import WAKE_CHANNEL, OffloadQueue
from tests.conftest import wait_for

OPTIONS = {
    "job_timeout": 60,
    "result_ttl": 600,
    "failure_ttl": 700,
    "ttl": 800,
    "description": "A job",
    "meta": {"task": "x", "progress": 0},
    "retry": Retry(max=2, interval=[1, 2]),
}
MOMENTS = {b"created_at", b"enqueued_at"}


@pytest.fixture
def queues(redis: Redis) -> tuple[Queue, OffloadQueue]:
    return (
        Queue("default", connection=redis, serializer=JSONSerializer),
        OffloadQueue("default", connection=redis, serializer=JSONSerializer),
    )


def stored(redis: Redis, job: Job) -> dict[bytes, bytes]:
    return {key: value for key, value in redis.hgetall(job.key).items() if key not in MOMENTS}


def command_count(redis: Redis) -> int:
    return sum(stats["calls"] for stats in redis.info("commandstats").values())


def test_a_job_is_stored_exactly_as_rq_stores_it(redis, queues):
    theirs, ours = queues

    rq_job = theirs.enqueue("tests.fixtures.report_pid", **OPTIONS)
    our_job = ours.enqueue("tests.fixtures.report_pid", **OPTIONS)

    assert stored(redis, our_job) == stored(redis, rq_job)
    assert redis.ttl(our_job.key) == pytest.approx(redis.ttl(rq_job.key), abs=1)
    assert redis.lrange("rq:queue:default", 0, -1) == [rq_job.id.encode(), our_job.id.encode()]
    assert redis.smembers("rq:queues") == {b"rq:queue:default"}


def test_a_new_job_takes_one_transaction_of_six_commands(redis, queues):
    _, ours = queues
    ours.enqueue("tests.fixtures.report_pid", **OPTIONS)  # the first asks the server's version once
    before = command_count(redis)

    job = ours.enqueue("tests.fixtures.report_pid", **OPTIONS)

    # MULTI, SADD rq:queues, HSET job, EXPIRE job, RPUSH queue, EXEC (RQ: two transactions, 11 commands).
    assert command_count(redis) - before - 1 == 6  # the INFO that counts
    assert Job.fetch(job.id, connection=redis, serializer=JSONSerializer).get_status() == JobStatus.QUEUED


def test_many_jobs_are_stored_as_rq_stores_them(redis, queues):
    theirs, ours = queues
    options = {("timeout" if name == "job_timeout" else name): value for name, value in OPTIONS.items()}

    rq_jobs = theirs.enqueue_many([Queue.prepare_data("tests.fixtures.report_pid", **options) for _ in range(3)])
    our_jobs = ours.enqueue_many([Queue.prepare_data("tests.fixtures.report_pid", **options) for _ in range(3)])

    assert [stored(redis, job) for job in our_jobs] == [stored(redis, job) for job in rq_jobs]
    assert all(redis.ttl(job.key) > 0 for job in our_jobs)
    assert redis.llen("rq:queue:default") == 6


def test_a_job_with_a_dependency_waits_for_it(redis, queues):
    _, ours = queues
    first = ours.enqueue("tests.fixtures.report_pid")

    second = ours.enqueue("tests.fixtures.report_pid", depends_on=first, ttl=800)

    assert second.get_status(refresh=True) == JobStatus.DEFERRED
    assert redis.smembers(first.dependents_key) == {second.id.encode()}


def test_scheduling_a_job_wakes_the_scheduler(redis, queues):
    _, ours = queues
    listener = redis.pubsub(ignore_subscribe_messages=True)
    listener.subscribe(WAKE_CHANNEL)
    wait_for(lambda: dict(redis.pubsub_numsub(WAKE_CHANNEL))[WAKE_CHANNEL.encode()], what="the subscription")

    job = ours.enqueue_in(timedelta(minutes=5), "tests.fixtures.report_pid")

    message = wait_for(lambda: listener.get_message(timeout=0.1), what="a wake message")
    assert message["data"] == b"default"
    assert job.get_status(refresh=True) == JobStatus.SCHEDULED
    listener.close()
