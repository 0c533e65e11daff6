"""What a Fly deploy does to workers, done for real: SIGTERM (fly.toml kill_signal) to the
stock ``rq worker`` process, then, kill_timeout later, SIGKILL to everything on the Machine.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue, Retry
from rq.job import Job
from rq.serializers import JSONSerializer

from offload.jobs import attempts as job_attempts
from tests.conftest import wait_for

pytestmark = pytest.mark.e2e

FAST_ABANDON = {
    # Seconds, instead of a deploy's 10 and 20: the same code path, quicker to watch.
    "WORKER_HEARTBEAT_INTERVAL": "1",
    "WORKER_MAINTENANCE_INTERVAL": "1",
}


def status(redis: Redis, job_id: str) -> str:
    return Job.fetch(job_id, connection=redis, serializer=JSONSerializer).get_status(refresh=True)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (the work horse has its own process group, so killpg misses it)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            found += [int(child), *descendants(int(child))]
    return found


def kill_machine(pid: int) -> None:
    """What Fly does at kill_timeout: SIGKILL to the worker and everything it started."""
    for victim in [pid, *descendants(pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)


def test_sigterm_mid_job_finishes_the_job_then_the_worker_exits(workers, redis):
    queue = Queue("default", connection=redis, serializer=JSONSerializer)
    worker = workers.start_worker("a")
    running = queue.enqueue("tests.fixtures.run_until_released", "release:running")
    wait_for(lambda: status(redis, running.id) == "started", what="the job to start")
    waiting = queue.enqueue("tests.fixtures.run_until_released", "release:waiting")

    worker.send_signal(signal.SIGTERM)
    wait_for(lambda: "warm shut down requested" in workers.log("a"), what="the worker to begin draining")

    assert worker.poll() is None, "the worker left while its job ran"
    assert status(redis, running.id) == "started"
    redis.set("release:running", 1)
    assert worker.wait(30) == 0
    assert status(redis, running.id) == "finished"
    assert Job.fetch(running.id, connection=redis, serializer=JSONSerializer).return_value() == "released"
    assert status(redis, waiting.id) == "queued", "a draining worker took a new job"


def test_job_killed_at_the_kill_timeout_is_retried_by_another_worker(workers, redis):
    queue = Queue("default", connection=redis, serializer=JSONSerializer)
    doomed = workers.start_worker("a", env=FAST_ABANDON)
    job = queue.enqueue("tests.fixtures.hang_on_first_attempt", retry=Retry(max=1), meta={"max_retries": 1})
    wait_for(lambda: status(redis, job.id) == "started", what="the job to start on worker a")
    survivor = workers.start_worker("b", env=FAST_ABANDON)

    doomed.send_signal(signal.SIGTERM)
    wait_for(lambda: "warm shut down requested" in workers.log("a"), what="worker a to begin draining")
    assert doomed.poll() is None
    kill_machine(doomed.pid)  # the job did not end within kill_timeout

    wait_for(lambda: status(redis, job.id) == "finished", timeout=60, what="another worker to retry the job")
    done = Job.fetch(job.id, connection=redis, serializer=JSONSerializer)
    assert done.return_value() == "done on attempt 2"
    first, second = job_attempts(done)
    assert first["worker"] != second["worker"]
    assert second["outcome"] == "finished"
    assert survivor.poll() is None
