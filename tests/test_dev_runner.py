"""README command 1 (`python3 dev.py`): starts Redis when none answers, runs web + worker,
and Ctrl-C leaves no process behind; a task added to tasks.py is listed and run without a restart."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
from redis import Redis
from rq import Queue, Worker
from rq.job import JobStatus
from rq.serializers import JSONSerializer

import dev
from tests.conftest import ROOT, process_env, wait_for


def test_dev_command_starts_its_own_redis_runs_a_job_and_ctrl_c_stops_everything(tmp_path: Path):
    redis_port, web_port = dev.free_port(), dev.free_port()
    env = {**os.environ, "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0", "PORT": str(web_port)}
    env.pop("THIRD_PARTY_URL", None)  # dev.py starts its own
    log = open(tmp_path / "dev.log", "wb")  # noqa: SIM115
    runner = subprocess.Popen(
        [sys.executable, "dev.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    spawned: list[psutil.Process] = []
    try:
        base = f"http://127.0.0.1:{web_port}"
        wait_for(lambda: _answers(base + "/healthz"), timeout=60, what="the dev web server")
        spawned = psutil.Process(runner.pid).children(recursive=True)
        assert any("redis" in " ".join(p.cmdline()) or "valkey" in " ".join(p.cmdline()) for p in spawned)

        created = httpx.post(base + "/api/jobs", json={"task": "crunch_numbers", "params": {"limit": 100000}})
        job = wait_for(
            lambda: (j := httpx.get(base + created.headers["Location"]).json())["ended"] and j,
            timeout=60,
            what="the job to end",
        )
        assert job["status"] == "finished" and job["result"]["primes_below_limit"] == 9592
        # call_api's default target is the local flaky API dev.py started (offline-safe): its first
        # call fails 503 and the retry gets through.
        assert any("flaky-api" in " ".join(p.cmdline()) for p in spawned)
        created = httpx.post(base + "/api/jobs", json={"task": "call_api", "params": {}})
        job = wait_for(
            lambda: (j := httpx.get(base + created.headers["Location"]).json())["ended"] and j,
            timeout=90,
            what="call_api to end",
        )
        assert job["status"] == "finished", job
        assert [attempt["outcome"] for attempt in job["attempts"]] == ["failed", "finished"], job["attempts"]
        assert "503" in job["attempts"][0]["error"]

        os.killpg(runner.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        runner.wait(30)
        wait_for(lambda: not any(p.is_running() and p.status() != "zombie" for p in spawned), what="all to exit")
        assert not _answers(base + "/healthz")
        assert not dev.redis_answers(env["REDIS_URL"], timeout=0.2)
    finally:
        for process in spawned:
            if process.is_running():
                process.kill()
        if runner.poll() is None:
            runner.kill()
        log.close()
        print((tmp_path / "dev.log").read_text(errors="replace")[-4000:])


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


# --------------------------------------------------------------------------- the add-a-task loop

NEW_TASK = '''

@offload.task(title="Say hello", queue="default", timeout=30)
def say_hello(name: Annotated[str, Field(max_length=50, title="Name")] = "world") -> str:
    """Greet ``name``."""
    return f"hello, {name}"
'''
"""What the README's "Add a task" has a user append to tasks.py."""


def _project_copy(tmp_path: Path) -> Path:
    """A copy of the reference project (and the tests' job fixtures) that a test may edit."""
    project = tmp_path / "project"
    project.mkdir()
    for name in ("app.py", "tasks.py", "worker.py", "dev.py", "gunicorn.conf.py"):
        shutil.copy2(ROOT / name, project / name)
    shutil.copytree(ROOT / "offload", project / "offload", ignore=shutil.ignore_patterns("__pycache__"))
    (project / "tests").mkdir()
    for name in ("__init__.py", "fixtures.py"):
        shutil.copy2(ROOT / "tests" / name, project / "tests" / name)
    return project


def test_a_task_added_to_tasks_py_is_listed_and_run_without_a_restart_and_a_running_job_finishes(
    tmp_path: Path, redis_url: str, redis: Redis
):
    project = _project_copy(tmp_path)
    env = {**process_env(redis_url), "WEB_CONCURRENCY": "1"}
    port = dev.free_port()
    base = f"http://127.0.0.1:{port}"
    logs = {name: open(tmp_path / f"{name}.log", "wb") for name in ("worker", "web")}  # noqa: SIM115
    # What `python3 dev.py` runs (dev.RELOADING_WORKER_COMMAND, dev.WEB_COMMAND), in the copy.
    runner = subprocess.Popen(
        [sys.executable, "dev.py", "worker"],
        cwd=project,
        env=env,
        stdout=logs["worker"],
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    web = subprocess.Popen(
        shlex.split(dev.WEB_COMMAND.format(port=port)),
        cwd=project,
        env=env,
        stdout=logs["web"],
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    spawned: list[psutil.Process] = []
    try:
        wait_for(lambda: _answers(base + "/healthz"), timeout=60, what="the web")
        first = wait_for(lambda: _worker_pids(redis), timeout=60, what="the worker to register")
        spawned = psutil.Process(runner.pid).children(recursive=True)
        # A job is running when the code changes: the worker is restarted only once it is done.
        running = Queue("default", connection=redis, serializer=JSONSerializer).enqueue(
            "tests.fixtures.block_until_released", "release"
        )
        wait_for(lambda: running.get_status(refresh=True) == JobStatus.STARTED, what="the job to start")

        with open(project / "tasks.py", "a") as tasks_py:
            tasks_py.write(NEW_TASK)

        # The web: the next page load lists it (gunicorn --reload; its master imported none of the app).
        wait_for(lambda: "say_hello" in _task_names(base), timeout=30, what="the web to list the new task")
        assert "Say hello" in httpx.get(base + "/").text
        created = httpx.post(base + "/api/jobs", json={"task": "say_hello", "params": {"name": "loop"}})
        assert created.status_code == 202, created.text
        # The worker: told to restart, it waits for its job (warm shutdown), then a fresh one runs the new task.
        wait_for(lambda: b"restarting the worker" in (tmp_path / "worker.log").read_bytes(), what="the restart")
        assert running.get_status(refresh=True) == JobStatus.STARTED and _worker_pids(redis) == first
        redis.lpush("release", "go")
        job = wait_for(
            lambda: (j := httpx.get(base + created.headers["Location"]).json())["ended"] and j,
            timeout=60,
            what="the new task's job to end",
        )
        assert job["status"] == "finished" and job["result"] == "hello, loop"
        assert running.get_status(refresh=True) == JobStatus.FINISHED and running.return_value() == "released"
        assert _worker_pids(redis).isdisjoint(first)

        spawned = psutil.Process(runner.pid).children(recursive=True)
        os.killpg(runner.pid, signal.SIGINT)  # Ctrl-C: a warm shutdown of the worker, then the runner exits
        assert runner.wait(30) == 0
        wait_for(lambda: not any(_alive(p) for p in spawned), what="the worker and its children to exit")
        assert not _worker_pids(redis)
    finally:
        for process in spawned:
            if _alive(process):
                process.kill()
        for process in (runner, web):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(30)
        for name, log in logs.items():
            log.close()
            print(f"----- {name} -----\n" + (tmp_path / f"{name}.log").read_text(errors="replace")[-4000:])


def _worker_pids(redis: Redis) -> set[int]:
    return {worker.pid for worker in Worker.all(connection=redis)}


def _task_names(base: str) -> list[str]:
    return [task["name"] for task in httpx.get(base + "/api/tasks").json()["tasks"]]


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
