"""On-demand workers: a job on an on-demand queue starts ``rq worker --burst`` for it.

The local backend runs for real (subprocesses). The fly backend talks HTTP to
``tests.fake_fly``, which implements the Machines API endpoints it uses, answers their
errors on cue, and runs each Machine's command as a real process.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from redis import Redis
from rq import Queue, Retry
from rq.job import Job
from rq.serializers import JSONSerializer

from offload import ondemand, settings
from offload.ondemand import (
    WORKER_ID_ENV,
    FlyBackend,
    LocalBackend,
    burst_command,
    ensure_worker,
    leave_if_drained,
    lock_key,
    make_backend,
    workers_key,
)
from tasks import offload
from tests.conftest import OPERATOR_ACCOUNT, ended, process_env, wait_for
from tests.fake_fly import FakeFly

TASKS = offload.tasks


pytestmark = pytest.mark.e2e

QUEUE = "ondemand"
IMAGE = "registry.fly.io/offload-test:deployment-01TEST"
TOKEN = "fly-test-token"
APP_SECRET_KEY = "a-fly-secret-key-for-the-on-demand-tests-0123456789"


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


def image_env(redis_url: str) -> dict[str, str]:
    """The environment the image gives every Machine (the Dockerfile's ENV; this virtualenv's rq on
    PATH): none of the tests' settings, secrets or Fly variables, which a Machine gets only from Fly."""
    base = {
        name: value
        for name, value in process_env(redis_url).items()
        if not (
            name.startswith(("OFFLOAD_", "FLY_", "RQ_"))
            or name in settings.DEFAULTS
            or name in ("SECRET_KEY", "FLASK_APP")
        )
    }
    return {**base, "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1", "OFFLOAD_ENV": "production"}


@pytest.fixture
def fly(redis_url: str, tmp_path: Path) -> Iterator[FakeFly]:
    """The Machines API, whose Machines get what Fly gives one created through the API: the image's
    environment, Fly's own variables, ``config.env`` and the app's secrets (docs/deploy.md), never
    fly.toml's ``[env]`` (ONDEMAND_BACKEND, FLY_API_URL, ...), which only ``fly deploy``'s Machines get."""
    secrets = {
        "REDIS_URL": redis_url,
        "SECRET_KEY": APP_SECRET_KEY,
        "FLY_API_TOKEN": TOKEN,
        "OPERATOR_USERNAME": OPERATOR_ACCOUNT["OFFLOAD_OPERATOR_USERNAME"],
        "OPERATOR_PASSWORD_HASH": OPERATOR_ACCOUNT["OFFLOAD_OPERATOR_PASSWORD_HASH"],
    }
    fake = FakeFly("offload-test", TOKEN, secrets=secrets, logs=tmp_path, image_env=image_env(redis_url))
    try:
        yield fake
    finally:
        fake.close()
        for log in sorted(tmp_path.glob("machine-*.log")):
            print(f"----- {log.name} -----\n{log.read_text(errors='replace')[-3000:]}")
    for machine in fake.created():  # a Machine's config is shown to whoever reads it: no secret in it
        env = machine.config.get("env", {})
        leaked = [name for name, value in env.items() if value in secrets.values() or name in secrets]
        assert not leaked, f"secrets in the config.env of Machine {machine.id}: {leaked}"


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
    """The backend the web makes from its settings (those of the tests' environment), ``options`` changed."""
    config = {
        **settings.from_environ(),
        "OFFLOAD_ONDEMAND_BACKEND": "fly",
        "OFFLOAD_FLY_API_URL": fly.url,
        "OFFLOAD_FLY_API_TOKEN": TOKEN,
        "OFFLOAD_FLY_APP_NAME": "offload-test",
        "OFFLOAD_FLY_IMAGE_REF": IMAGE,
    }
    settings.apply_defaults(config)
    backend = make_backend(config)
    assert isinstance(backend, FlyBackend)
    for name, value in options.items():
        setattr(backend, name, value)
    return backend


def enqueue_and_start_a_machine(fly_client, queue: Queue, function: str, *args: object) -> Job:
    """Enqueue ``function(*args)`` on the on-demand queue and have the web start a Machine for it, as
    a submit does; return the job once the Machine was asked for."""
    job = queue.enqueue(function, *args)
    with fly_client.application.app_context():
        started = ondemand.job_enqueued(QUEUE, job.id)
    assert started is not None
    started.result(timeout=60)
    return job


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


def test_a_machine_runs_with_the_settings_of_the_web_that_started_it_and_none_of_its_secrets(fly, fly_client, redis):
    web = fly_client.application.config
    job_id = submit(fly_client)

    (machine,) = wait_for(fly.created, what="a Machine to be created")
    env = machine.config["env"]
    # fly.toml's [env] reaches only the Machines `fly deploy` makes: this is all a Machine created
    # through the API knows of it.
    assert env["OFFLOAD_ONDEMAND_BACKEND"] == "fly" and env["OFFLOAD_FLY_API_URL"] == fly.url
    assert env["OFFLOAD_ENV"] == web["OFFLOAD_ENV"] == "development"  # not the image's production
    assert env["OFFLOAD_QUEUES"] == ",".join(web["OFFLOAD_QUEUES"])
    assert env["OFFLOAD_UNREGISTERED_JOB_MODULES"] == "tests.fixtures"
    assert env["OFFLOAD_APP"] == os.environ["OFFLOAD_APP"]
    assert env["OFFLOAD_ONDEMAND_MAX_WORKERS"] == str(web["OFFLOAD_ONDEMAND_MAX_WORKERS"])
    # Secrets reach the Machine as the app's Fly secrets; Fly names the app, image and region itself.
    for name in (*settings.SECRET_SETTINGS, *ondemand.SET_BY_FLY, "SECRET_KEY"):
        assert name not in env and settings.key(name) not in env, name
    assert TOKEN not in env.values() and web["OFFLOAD_REDIS_URL"] not in env.values()
    wait_for(lambda: status(redis, job_id) == "finished", what="the Machine to run the job")


def test_a_machine_runs_with_the_env_of_fly_toml_that_the_starting_machine_was_deployed_with(
    fly, fly_client, redis, queue
):
    """fly.toml's [env] reaches only the Machines `fly deploy` makes: an on-demand Machine gets it
    from the config.env of the Machine that starts it, the host app's own variables included, under
    the starting process's Offload settings, and without Fly's own variables or a misplaced secret."""
    web = fly.deploy(
        {
            "GREETING": "Hi",  # the host app's own, read by its tasks
            "OFFLOAD_ENV": "production",  # the web process's own settings win over fly.toml's
            "THIRD_PARTY_TOKEN": "put-in-env-by-mistake",  # a secret: Fly secrets carry those
        }
    )
    fly_client.application.config["OFFLOAD_FLY_MACHINE_ID"] = web.id
    job = enqueue_and_start_a_machine(fly_client, queue, "tests.fixtures.environment_variable", "GREETING")

    (machine,) = fly.created()
    env = machine.config["env"]
    assert env["GREETING"] == "Hi" and env["PRIMARY_REGION"] == fly.region
    assert env["OFFLOAD_ENV"] == "development"
    assert "FLY_PROCESS_GROUP" not in env and "THIRD_PARTY_TOKEN" not in env
    wait_for(lambda: status(redis, job.id) == "finished", what="the Machine to run the job")
    assert Job.fetch(job.id, connection=redis, serializer=JSONSerializer).return_value() == "Hi"
    assert ("GET", f"/v1/apps/offload-test/machines/{web.id}") in fly.requests
    wait_for(lambda: machine.state == "destroyed" and drained(redis), what="the Machine to exit and be destroyed")


def test_a_machine_starts_without_the_deployed_env_when_the_api_cannot_read_it(fly, redis, queue, caplog):
    """Reading the starting Machine's config.env is no reason to leave a job waiting: the Machine
    starts with the Offload settings alone, the failure is logged, and the next start reads again."""
    web = fly.deploy({"GREETING": "Hi"})
    backend = fly_backend(fly, machine_id=web.id)
    fly.answer_next("GET /machines/{id}", (503, {"error": "internal error"}, {}))
    with caplog.at_level(logging.WARNING, logger="offload.ondemand"):
        first = backend.machine_config(QUEUE, "w1", backend.deployed_env(time.monotonic() + 5))
    assert "GREETING" not in first["env"] and first["env"]["OFFLOAD_ONDEMAND_BACKEND"] == "fly"
    assert f"could not read Machine {web.id}'s config.env (503" in caplog.text
    assert backend.deployed_env(time.monotonic() + 5)["GREETING"] == "Hi"


def test_a_machine_stopped_with_work_left_hands_it_to_a_new_machine(fly, fly_client, redis, queue):
    """The successor of an on-demand Machine is another Machine, created through the Machines API, not a
    subprocess of the Machine being stopped (which would die with it): the Machine knows
    ONDEMAND_BACKEND and FLY_API_URL only from the config.env the web sent."""
    running = enqueue_and_start_a_machine(fly_client, queue, "tests.fixtures.run_until_released", "release")
    (first,) = fly.created()
    wait_for(lambda: status(redis, running.id) == "started", what="the Machine to take the job")
    left = queue.enqueue("tests.fixtures.burn_cpu", 0)  # waits for the Machine (no second one asked for)

    stop = httpx.post(
        f"{fly.url}/v1/apps/offload-test/machines/{first.id}/stop", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert stop.status_code == 200  # SIGTERM (its stop_config): it finishes its job and takes no other
    redis.set("release", 1)

    wait_for(lambda: status(redis, left.id) == "finished", timeout=60, what="a successor to run the job left behind")
    assert status(redis, running.id) == "finished"
    creates = [path for method, path in fly.requests if method == "POST" and path.endswith("/machines")]
    assert len(creates) == 2, f"the successor was not created as a Machine: {fly.requests}"
    _, successor = fly.created()
    assert successor.config["init"]["cmd"] == burst_command(QUEUE)
    assert {**successor.config["env"], WORKER_ID_ENV: ""} == {**first.config["env"], WORKER_ID_ENV: ""}
    wait_for(lambda: successor.state == "destroyed" and drained(redis), what="the successor to drain and go")
    assert left.id in (fly.logs / f"machine-{successor.id}.log").read_text(), "the successor Machine ran the job"


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


def test_a_secret_is_refused_in_a_machines_config():
    """A Machine's config is shown to whoever can read the app's Machines; secrets reach it as Fly secrets."""
    env = {
        "OFFLOAD_QUEUES": "default",
        "REDIS_URL": "redis://:pw@redis",
        "OFFLOAD_FLY_API_TOKEN": "t",
        "SECRET_KEY": "k",
    }
    with pytest.raises(ondemand.OnDemandError, match="OFFLOAD_FLY_API_TOKEN, REDIS_URL, SECRET_KEY"):
        FlyBackend(api_url="http://127.0.0.1:1", token=TOKEN, app_name="offload", image=IMAGE, env=env)


# --------------------------------------------------------------------------- the worker's command


def test_the_burst_command_is_the_one_docs_deploy_md_shows():
    docs = (Path(__file__).resolve().parent.parent / "docs" / "deploy.md").read_text()
    shown = [line.split() for line in docs.splitlines() if line.startswith("rq worker") and "--burst" in line]
    assert shown == [burst_command(QUEUE)]


def test_an_ondemand_worker_logs_as_the_worker_group_does_without_advice_on_the_queues_it_leaves_out(
    redis, redis_url, queue
):
    """Before, it ran without a settings module: RQ's own log lines (no date, no level), and the stock
    command's warning that it leaves out the app's queues high, default, low, with the wrong advice."""
    job = queue.enqueue("tests.fixtures.burn_cpu", 0)
    redis.hset(workers_key(QUEUE), "w1", "started-by-this-test")
    command = burst_command(QUEUE)
    rq = str(Path(sys.executable).with_name(command[0]))

    ran = subprocess.run(
        [rq, *command[1:]],
        cwd=Path(__file__).resolve().parent.parent,
        env={**process_env(redis_url), WORKER_ID_ENV: "w1"},
        capture_output=True,
        text=True,
        timeout=120,
    )

    log = ran.stdout + ran.stderr
    assert ran.returncode == 0, log
    assert status(redis, job.id) == "finished" and drained(redis)
    assert re.search(rf"^\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ INFO rq\.worker: .*{job.id}", log, re.MULTILINE), log
    assert "leaves out" not in log, log
