"""Paused queues and quiet workers, against the README's ``rq worker`` in a subprocess."""

from __future__ import annotations

import re

import pytest
from redis import Redis
from rq import Queue, Worker
from rq.job import Job
from rq.serializers import JSONSerializer

from offload import holds
from tests.conftest import ended, form_token, log_in, wait_for


def _worker_named(redis: Redis, pid: int) -> str:
    return next(w.name for w in Worker.all(connection=redis) if w.pid == pid)


def _status(job: Job) -> str:
    return job.get_status(refresh=True).value


def test_a_paused_queues_job_is_not_taken_until_the_queue_resumes(workers, redis):
    holds.pause_queue(redis, "default")
    workers.start_worker()
    default = Queue("default", connection=redis, serializer=JSONSerializer)
    low = Queue("low", connection=redis, serializer=JSONSerializer)
    held = default.enqueue("tests.fixtures.echo", "held")
    # A job on a queue that is not paused runs: the worker is up and taking jobs, only "default" is skipped.
    assert ended(low.enqueue("tests.fixtures.echo", "free")).get_status() == "finished"
    for _ in range(3):  # three more jobs through "low" (each after a full dequeue cycle) and still nothing taken
        ended(low.enqueue("tests.fixtures.echo", "free"))
    assert _status(held) == "queued" and default.count == 1

    holds.resume_queue(redis, "default")

    assert ended(held).return_value() == "held"


def test_a_queue_paused_while_the_worker_waits_keeps_its_next_job(workers, redis):
    workers.start_worker()
    default = Queue("default", connection=redis, serializer=JSONSerializer)
    ended(default.enqueue("tests.fixtures.echo", "before"))  # the worker is blocked waiting on the queues now

    holds.pause_queue(redis, "default")
    held = default.enqueue("tests.fixtures.echo", "held")
    low = Queue("low", connection=redis, serializer=JSONSerializer)
    ended(low.enqueue("tests.fixtures.echo", "free"))
    ended(low.enqueue("tests.fixtures.echo", "free"))

    assert _status(held) == "queued" and default.get_job_ids() == [held.id]
    holds.resume_queue(redis, "default")
    assert ended(held).return_value() == "held"


def test_a_quiet_worker_finishes_its_job_and_takes_no_more(workers, redis):
    process = workers.start_worker()
    name = _worker_named(redis, process.pid)
    default = Queue("default", connection=redis, serializer=JSONSerializer)
    running = default.enqueue("tests.fixtures.block_until_released", "release-quiet")
    wait_for(lambda: _status(running) == "started", what="the job to start")

    holds.quiet_worker(redis, name)
    redis.rpush("release-quiet", "go")
    waiting = default.enqueue("tests.fixtures.echo", "after")

    assert ended(running).return_value() == "released"
    # Still alive and registered, idle, with the next job left on the queue.
    other = Queue("high", connection=redis, serializer=JSONSerializer)
    probe = other.enqueue("tests.fixtures.echo", "probe")
    wait_for(
        lambda: any(w.name == name and w.get_state() == "idle" for w in Worker.all(connection=redis)),
        what="the quiet worker to be idle",
    )
    assert process.poll() is None
    assert _status(waiting) == "queued" and _status(probe) == "queued"

    holds.wake_worker(redis, name)

    assert ended(waiting).return_value() == "after"
    assert ended(probe).return_value() == "probe"


def test_a_second_worker_takes_what_a_quiet_one_leaves(workers, redis):
    first = workers.start_worker("first")
    holds.quiet_worker(redis, _worker_named(redis, first.pid))
    second = workers.start_worker("second")

    jobs = [
        Queue("default", connection=redis, serializer=JSONSerializer).enqueue("tests.fixtures.echo", n)
        for n in range(5)
    ]

    assert {ended(job).worker_name for job in jobs} == {_worker_named(redis, second.pid)}


def _operator(http) -> str:
    token = re.search(r'name="csrf_token" value="([^"]+)"', http.get("/login").text).group(1)
    log_in(http, csrf_token=token)
    token = form_token(http)
    return token


@pytest.mark.e2e
def test_an_operator_quiets_wakes_and_stops_a_worker_from_the_queues_page(stack, http, redis):
    token = _operator(http)
    worker_process = stack.processes[-1][1]
    name = _worker_named(redis, worker_process.pid)
    assert f'action="/operator/workers/{name}/quiet"' in http.get("/operator/queues").text

    assert http.post(f"/operator/workers/{name}/quiet", data={"csrf_token": token}).status_code == 303
    page = http.get("/operator/queues").text
    assert re.search(rf'<tr data-worker="{name}">.*?>quiet<', page, re.DOTALL)
    job = Queue("default", connection=redis, serializer=JSONSerializer).enqueue("tests.fixtures.echo", "later")
    assert job.get_status(refresh=True) == "queued"
    assert http.post(f"/operator/workers/{name}/wake", data={"csrf_token": token}).status_code == 303
    assert ended(job).return_value() == "later"

    asked = http.post(f"/operator/workers/{name}/stop", data={"csrf_token": token})
    assert asked.status_code == 200 and f"Stop worker {name}?" in asked.text and worker_process.poll() is None
    http.post(f"/operator/workers/{name}/stop", data={"csrf_token": token, "confirmed": "yes"})

    wait_for(lambda: worker_process.poll() is not None, what="the worker to exit")
    log = http.get("/operator/log").text
    assert "quiet worker" in log and "wake worker" in log and "stop worker" in log


def test_a_burst_worker_leaves_a_paused_queues_jobs_and_does_not_spin(redis):
    """`rq worker --burst` (an on-demand worker) on a paused queue: nothing taken, and it asks again
    only every hold_poll_interval, not in a busy loop."""
    from offload.worker import OffloadWorker

    holds.pause_queue(redis, "default")
    default = Queue("default", connection=redis, serializer=JSONSerializer)
    held = default.enqueue("tests.fixtures.echo", "held")
    worker = OffloadWorker([default], connection=redis)
    worker.hold_poll_interval = 1
    before = redis.info("commandstats").get("cmdstat_sismember", {}).get("calls", 0)  # only the holds read uses it

    assert worker.dequeue_job_and_maintain_ttl(None) is None

    assert _status(held) == "queued" and default.count == 1
    assert redis.info("commandstats")["cmdstat_sismember"]["calls"] - before == 1  # one read of the holds
