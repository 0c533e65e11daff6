"""fly.toml, the Dockerfile and .dockerignore say what docs/deploy.md says, and fly.toml's own
commands, run here as Fly would run them, serve a real job.

No Docker engine and no Fly account exist here: these tests read the files and run the
same commands on this machine, which is as close as the repository can get to a deploy.
"""

from __future__ import annotations

import fnmatch
import os
import re
import runpy
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx
import pytest
from dockerfile_parse import DockerfileParser
from redis import Redis

import dev
from tasks import offload
from tests.conftest import ROOT, Stack, process_env, wait_for
from tests.faults import redis_with

TASKS = offload.tasks


FLY = tomllib.loads((ROOT / "fly.toml").read_text())
SECRETS = ("REDIS_URL", "SECRET_KEY", "METRICS_TOKEN", "FLY_API_TOKEN")

SHUTDOWN_MARGIN = 30
"""Seconds a job needs after its timeout fires to record the failure and let its worker exit."""


def seconds(value: int | str) -> int:
    """A fly.toml duration (``300``, ``"300s"``, ``"5m"``) in seconds."""
    if isinstance(value, int):
        return value
    number, unit = re.fullmatch(r"(\d+)([sm]?)", value).groups()
    return int(number) * (60 if unit == "m" else 1)


def fly_argv(group: str) -> list[str]:
    """The argv Fly runs for a process group: the command split on whitespace, no shell."""
    return FLY["processes"][group].split()


def for_group(table: list[dict], group: str) -> list[dict]:
    return [entry for entry in table if group in entry.get("processes", [group])]


def gunicorn_settings(**env: str) -> dict:
    """gunicorn.conf.py's values as gunicorn reads them, under ``env`` only."""
    with pytest.MonkeyPatch.context() as patch:
        for name in (
            "PORT",
            "GUNICORN_BIND",
            "WEB_CONCURRENCY",
            "GUNICORN_WORKER_CONNECTIONS",
            "GUNICORN_MAX_REQUESTS",
            "GUNICORN_MAX_REQUESTS_JITTER",
            "GUNICORN_GRACEFUL_TIMEOUT",
        ):
            patch.delenv(name, raising=False)
        for name, value in env.items():
            patch.setenv(name, value)
        return runpy.run_path(str(ROOT / "gunicorn.conf.py"))


# --------------------------------------------------------------------------- fly.toml


def test_fly_runs_gunicorn_and_the_readme_worker_command_as_two_groups():
    assert set(FLY["processes"]) == {"app", "worker"}
    assert fly_argv("app") == ["gunicorn", "app:app"]
    assert FLY["processes"]["worker"] == dev.WORKER_COMMAND
    assert "--burst" not in fly_argv("worker")


@pytest.mark.parametrize("group", ["app", "worker"])
def test_process_commands_mean_the_same_without_a_shell(group):
    command = FLY["processes"][group]
    assert not set(command) & set("$`'\"\\|&;<>(){}*?~"), f"{group}: Fly splits without a shell: {command!r}"
    assert shlex.split(command) == command.split()


def test_the_web_listens_where_fly_s_proxy_sends_traffic():
    service = FLY["http_service"]
    assert service["processes"] == ["app"]
    assert service["internal_port"] == 8080
    assert gunicorn_settings()["bind"] == "0.0.0.0:8080"
    assert [check["path"] for check in service["checks"]] == ["/healthz"]
    assert all(seconds(check["timeout"]) < seconds(check["interval"]) for check in service["checks"])


def test_deploys_drain_with_sigterm_before_the_kill():
    assert FLY["kill_signal"] == "SIGTERM"
    kill_timeout = seconds(FLY["kill_timeout"])
    assert kill_timeout <= 300, "Fly's maximum"
    assert int(gunicorn_settings()["graceful_timeout"]) < kill_timeout


@pytest.mark.parametrize("task", TASKS.values(), ids=lambda task: task.name)
def test_every_task_ends_before_the_kill_timeout(task):
    kill_timeout = seconds(FLY["kill_timeout"])
    assert task.timeout + SHUTDOWN_MARGIN <= kill_timeout, (
        f"{task.name} may run {task.timeout} s: a deploy would kill it mid-job; "
        f"keep timeouts at most {kill_timeout - SHUTDOWN_MARGIN} s or make the task safe to rerun and shorter"
    )


def test_the_worker_group_restarts_even_after_a_clean_exit():
    assert [entry["policy"] for entry in for_group(FLY["restart"], "worker")] == ["always"]


@pytest.mark.parametrize("group", ["app", "worker"])
def test_each_group_has_its_own_vm_size(group):
    vms = [vm for vm in FLY["vm"] if group in vm["processes"]]
    assert len(vms) == 1 and (vms[0].get("size") or vms[0].get("memory"))


def test_metrics_are_scraped_from_the_internal_port_the_web_serves_them_on():
    assert FLY["metrics"]["path"] == "/metrics"
    assert FLY["metrics"]["port"] == int(FLY["env"]["METRICS_PORT"])
    assert FLY["metrics"]["port"] != FLY["http_service"]["internal_port"], "would make them public"


def test_secrets_stay_out_of_fly_toml():
    text = (ROOT / "fly.toml").read_text()
    for name in SECRETS:
        assert name not in FLY.get("env", {})
        assert not re.search(rf"^\s*{name}\s*=", text, re.MULTILINE)


# --------------------------------------------------------------------------- Dockerfile


def dockerfile() -> list[dict]:
    return [i for i in DockerfileParser(str(ROOT / "Dockerfile")).structure if i["instruction"] != "COMMENT"]


def final_stage() -> list[dict]:
    instructions = dockerfile()
    start = max(n for n, i in enumerate(instructions) if i["instruction"] == "FROM")
    return instructions[start:]


def test_every_stage_builds_on_slim_python_3_11():
    for image in DockerfileParser(str(ROOT / "Dockerfile")).parent_images:
        assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", image), image


def test_the_image_installs_only_the_pinned_runtime_requirements_from_wheels():
    runs = " ".join(i["value"] for i in dockerfile() if i["instruction"] == "RUN")
    assert "requirements-dev" not in runs
    assert re.search(r"pip install .*--only-binary=:all: .*-r \S*requirements\.txt", runs)
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        assert not line or re.fullmatch(r"[A-Za-z0-9_.\[\]-]+==[\w.]+", line), f"not pinned: {line!r}"


BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|clang|make|build-essential|[\w.+-]+-dev|pip install)\b")


def test_the_final_stage_has_no_build_tools_and_runs_as_a_non_root_user():
    stage = final_stage()
    runs = " ".join(i["value"] for i in stage if i["instruction"] == "RUN")
    assert not BUILD_TOOLS.search(runs), BUILD_TOOLS.search(runs)
    if "apt-get install" in runs:
        assert "--no-install-recommends" in runs and "rm -rf /var/lib/apt/lists" in runs
    users = [i["value"] for i in stage if i["instruction"] == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert users[-1] in runs, "the user is created in the image"


def test_the_command_is_exec_form_so_signals_reach_gunicorn():
    cmd = [i["value"] for i in dockerfile() if i["instruction"] == "CMD"][-1]
    assert cmd.startswith("["), "shell form would put /bin/sh between Fly's signal and gunicorn"
    assert not any(i["instruction"] == "ENTRYPOINT" for i in dockerfile()), "fly.toml commands replace CMD only"


def test_dockerignore_keeps_the_repository_s_private_parts_out_of_the_image():
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip()]
    patterns = [p for p in patterns if not p.startswith("#")]
    for path in (".git", ".venv", "tests", ".dev", "requirements-dev.txt"):
        assert any(fnmatch.fnmatch(path, pattern) for pattern in patterns), path
    for path in ("app.py", "worker.py", "tasks.py", "gunicorn.conf.py", "requirements.txt", "templates", "static"):
        assert not any(fnmatch.fnmatch(path, pattern) for pattern in patterns), path


# --------------------------------------------------------------------------- the commands, run


@pytest.fixture
def fly_stack(redis_url: str, tmp_path: Path):
    """fly.toml's [env] plus test secrets, with only the ports moved (env, never argv)."""
    secrets = {"REDIS_URL": redis_url, "SECRET_KEY": "test-secret-key-" + "x" * 32, "METRICS_TOKEN": "test-token"}
    env = {**process_env(redis_url), **FLY["env"], **secrets}
    env.update(PORT=str(dev.free_port()), METRICS_PORT=str(dev.free_port()))
    stack = Stack(redis_url=redis_url, logs=tmp_path, env=env, base_url=f"http://127.0.0.1:{env['PORT']}")
    try:
        yield stack
    finally:
        stack.close()
        for name in ("app", "worker"):
            print(f"----- {name} log -----\n{stack.log(name)[-5000:]}")


@pytest.mark.e2e
def test_fly_toml_commands_serve_a_job_end_to_end(fly_stack, redis):
    app = fly_stack.spawn("app", fly_argv("app"))
    wait_for(lambda: app.poll() is not None or _ok(fly_stack.base_url + "/healthz"), what="the app group to answer")
    assert app.poll() is None, fly_stack.log("app")
    worker = fly_stack.spawn("worker", fly_argv("worker"))

    with httpx.Client(base_url=fly_stack.base_url, timeout=10) as http:
        created = http.post("/api/jobs", json={"task": "crunch_numbers", "params": {"limit": 1_000_000}})
        assert created.status_code == 202, created.text
        job = wait_for(lambda: (view := http.get(created.headers["Location"]).json())["ended"] and view, what="the job")
        assert job["status"] == "finished", job
        assert job["result"]["primes_below_limit"] == 78498

        # Production settings: /metrics needs the token on the public port...
        assert http.get("/metrics").status_code == 401
        public = http.get("/metrics", headers={"Authorization": "Bearer test-token"}).text
    assert 'offload_jobs_finished_total{task="crunch_numbers"} 1.0' in public
    # ...and gunicorn's master serves the same on METRICS_PORT, for Fly's scraper.
    internal = httpx.get(f"http://127.0.0.1:{fly_stack.env['METRICS_PORT']}/metrics", timeout=5).text
    assert 'offload_jobs_finished_total{task="crunch_numbers"} 1.0' in internal
    assert "offload_workers_alive 1.0" in internal

    # The worker's liveness check, as an operator or docker-compose runs it on its host.
    check = subprocess.run(
        ["python", "-m", "offload.liveness"], cwd=ROOT, env=fly_stack.env, capture_output=True, text=True, timeout=30
    )
    assert check.returncode == 0, check.stderr
    assert f"pid {worker.pid}" in check.stdout

    assert fly_stack.stop(worker) == 0
    assert fly_stack.stop(app) == 0
    assert not Redis.from_url(fly_stack.redis_url).smembers("rq:workers")


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


# --------------------------------------------------------------------------- docker-compose.yml


def test_docker_compose_runs_fly_toml_s_commands_on_a_redis_that_never_evicts():
    import yaml

    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert services["web"]["command"] == fly_argv("app")
    assert services["worker"]["command"] == fly_argv("worker")
    assert services["worker"]["stop_signal"] == FLY["kill_signal"]
    assert seconds(services["worker"]["stop_grace_period"]) == seconds(FLY["kill_timeout"])
    assert services["worker"]["healthcheck"]["test"] == ["CMD", "python", "-m", "offload.liveness"]
    valkey = services["valkey"]["command"]
    assert valkey[valkey.index("--maxmemory-policy") + 1] == "noeviction"


def test_docker_compose_has_no_secret_key_of_its_own():
    # Its old fallback ran OFFLOAD_ENV=production with a key printed in this file; the settings
    # refuse that key now, and compose asks its user for one instead of starting with it.
    import yaml

    environment = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["x-offload"]["environment"]
    assert environment["OFFLOAD_ENV"] == "production"
    assert re.fullmatch(r"\$\{SECRET_KEY:\?[^$}]+\}", environment["SECRET_KEY"])


def test_web_processes_collect_garbage_less_often_once_the_app_is_loaded():
    check = (
        "import gc, runpy; conf = runpy.run_path('gunicorn.conf.py'); conf['post_worker_init'](None); "
        "print(gc.get_threshold()[0], gc.get_freeze_count() > 1000)"
    )
    env = {**os.environ, "GUNICORN_GC_THRESHOLD": "12345"}
    done = subprocess.run([sys.executable, "-c", check], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["12345", "True"]


@pytest.mark.e2e
def test_the_metrics_port_answers_503_in_one_line_while_redis_is_frozen(tmp_path: Path):
    with redis_with() as server:
        env = {**process_env(server.url), **FLY["env"], "REDIS_URL": server.url, "SECRET_KEY": "k" * 40}
        env.update(PORT=str(dev.free_port()), METRICS_PORT=str(dev.free_port()))
        stack = Stack(redis_url=server.url, logs=tmp_path, env=env, base_url=f"http://127.0.0.1:{env['PORT']}")
        internal = f"http://127.0.0.1:{env['METRICS_PORT']}/metrics"
        try:
            app = stack.spawn("app", fly_argv("app"))
            wait_for(lambda: app.poll() is not None or _ok(stack.base_url + "/healthz"), what="the app to answer")
            assert httpx.get(internal, timeout=5).status_code == 200

            server.freeze()
            try:
                frozen = [httpx.get(internal, timeout=10) for _ in range(2)]
            finally:
                server.thaw()

            assert [response.status_code for response in frozen] == [503, 503]
            assert frozen[0].headers["Retry-After"] == "5"
            assert httpx.get(internal, timeout=5).status_code == 200
            assert "Traceback" not in stack.log("app")
            assert stack.log("app").count("internal metrics: Redis does not answer") == 2
        finally:
            stack.close()
