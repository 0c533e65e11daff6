"""Fixtures on real parts: a Redis (or Valkey) server of the tests' own, the app, and the
production processes (gunicorn and the stock ``rq worker`` CLI) in subprocesses."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from redis import Redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer
from werkzeug.security import generate_password_hash

import dev
from dev import wait_for
from offload.connection import redact

if TYPE_CHECKING:
    from flask import Flask
from tests.figures import figures, pytest_terminal_summary  # noqa: F401 - the suite's figures, printed at the end

ROOT = Path(__file__).resolve().parent.parent

# Workers built in the tests' own process run their jobs inside the reference app, as `rq worker -c worker` does.
os.environ.setdefault("OFFLOAD_APP", "app:create_app")
# Workers run only registered tasks, and the functions of the modules this names: the tests enqueue
# their fixtures (tests/fixtures.py) by path. Every worker and app the tests start reads it.
os.environ.setdefault("OFFLOAD_UNREGISTERED_JOB_MODULES", "tests.fixtures")
# The tests submit hundreds of jobs from one address; the per-client quotas have their own tests
# (tests/test_quotas.py), which turn them on in their apps.
for _quota in ("QUOTA_ACTIVE_JOBS", "QUOTA_CPU_SECONDS_PER_HOUR", "QUOTA_BYTES_PER_HOUR"):
    os.environ.setdefault(f"OFFLOAD_{_quota}", "0")

OPERATOR_USERNAME = "operator"
OPERATOR_PASSWORD = "correct horse battery staple"  # the tests' own account
OPERATOR_ACCOUNT = {
    "OFFLOAD_OPERATOR_USERNAME": OPERATOR_USERNAME,
    # pbkdf2 with few rounds keeps logins fast in tests; `python -m offload.web.auth` makes scrypt hashes.
    "OFFLOAD_OPERATOR_PASSWORD_HASH": generate_password_hash(OPERATOR_PASSWORD, method="pbkdf2:sha256:1000"),
}
"""The operator account every test app and test stack is configured with."""


def refreshed(job: Job) -> Job:
    """Return ``job`` with its fields and meta read again from Redis."""
    job.refresh()
    return job


def ended(job: Job, timeout: float = 30) -> Job:
    """Wait until ``job`` is finished, failed or stopped; return it refreshed."""
    ends = (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED)
    wait_for(lambda: job.get_status(refresh=True) in ends, timeout=timeout, what=f"job {job.id} to end")
    job.refresh()
    return job


# --------------------------------------------------------------------------- redis


@pytest.fixture(scope="session")
def redis_servers() -> Iterator[Callable[[str | None], str]]:
    """Return a function giving the URL of a test server of a kind (``redis``/``valkey``).

    Servers start once per session on free ports. When ``REDIS_URL`` is set, it is used for
    every kind instead, and refused unless its database is empty (nothing real is flushed).
    """
    given = os.environ.get("REDIS_URL")
    if given:
        if Redis.from_url(given).dbsize():
            pytest.exit(f"REDIS_URL={redact(given)} holds keys; the tests flush it, so give them an empty one")
        yield lambda kind=None: given
        return
    started: dict[str, str] = {}
    with ExitStack() as stack:

        def server(kind: str | None = None) -> str:
            key = kind or "default"
            if key not in started:
                port = dev.free_port()
                stack.enter_context(dev.redis_server(dev.find_redis_server(kind), port))
                started[key] = f"redis://127.0.0.1:{port}/0"
            return started[key]

        yield server


@pytest.fixture
def redis_url(request: pytest.FixtureRequest, redis_servers) -> Iterator[str]:
    """A flushed test Redis; parametrize indirectly with ``"redis"`` or ``"valkey"`` to pick one."""
    url = redis_servers(getattr(request, "param", None))
    connection = Redis.from_url(url)
    connection.flushdb()
    yield url
    connection.flushdb()


@pytest.fixture
def redis(redis_url: str) -> Redis:
    return Redis.from_url(redis_url)


def queued_job_count(redis: Redis) -> int:
    """Jobs anywhere in Redis (queued, scheduled or in any registry), but the periodic ones a
    stack's scheduler enqueues by itself when it starts."""
    return sum(1 for key in redis.scan_iter("rq:job:*") if not key.startswith(b"rq:job:periodic-"))


@pytest.fixture
def queue(redis: Redis) -> Queue:
    return Queue("default", connection=redis, serializer=JSONSerializer)


# --------------------------------------------------------------------------- app


def reference_app(redis_url: str, **config: Any) -> Flask:
    """The reference app on ``redis_url`` for tests (no CSRF, the operator account), ``config`` on top."""
    from app import create_app

    return create_app(
        {"TESTING": True, "OFFLOAD_REDIS_URL": redis_url, "WTF_CSRF_ENABLED": False, **OPERATOR_ACCOUNT, **config}
    )


@pytest.fixture
def app(redis_url: str):
    return reference_app(redis_url)


@pytest.fixture
def client(app):
    return app.test_client()


# --------------------------------------------------------------------------- processes


@dataclass
class Stack:
    """gunicorn and ``rq worker`` processes started exactly as production starts them."""

    redis_url: str
    logs: Path
    env: dict[str, str]
    base_url: str = ""
    processes: list[tuple[str, subprocess.Popen]] = field(default_factory=list)

    def spawn(self, name: str, command: list[str], **env: str) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(
            command, cwd=ROOT, env={**self.env, **env}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self.processes.append((name, process))
        return process

    def start_web(self) -> str:
        port = dev.free_port()
        self.spawn("web", ["gunicorn", "app:app"], GUNICORN_BIND=f"127.0.0.1:{port}", WEB_CONCURRENCY="2")
        self.base_url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _answers(self.base_url + "/healthz"), what="gunicorn to answer")
        return self.base_url

    def start_worker(
        self, name: str = "worker", extra: list[str] | None = None, env: dict[str, str] | None = None
    ) -> subprocess.Popen:
        """Start the README's worker command (dev.WORKER_COMMAND), with ``extra`` arguments and ``env``."""
        command = shlex.split(dev.WORKER_COMMAND) + (extra or [])
        process = self.spawn(name, command, **(env or {}))
        redis = Redis.from_url(self.redis_url)
        wait_for(
            lambda: process.poll() is not None or any(w.pid == process.pid for w in _workers(redis)),
            what=f"{name} to register",
        )
        assert process.poll() is None, self.log(name)
        return process

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        return process.returncode

    def close(self) -> None:
        for _, process in reversed(self.processes):
            self.stop(process)


def _workers(redis: Redis):
    from rq import Worker

    return Worker.all(connection=redis)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code < 500
    except httpx.HTTPError:
        return False


def process_env(redis_url: str) -> dict[str, str]:
    venv_bin = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        "REDIS_URL": redis_url,
        "OFFLOAD_ENV": "development",
        "PYTHONUNBUFFERED": "1",
        **OPERATOR_ACCOUNT,
    }


@pytest.fixture
def stack_env() -> dict[str, str]:
    """Extra environment (settings) for the stack's processes; override it in a test module."""
    return {}


@pytest.fixture
def stack(redis_url: str, tmp_path: Path, stack_env: dict[str, str]) -> Iterator[Stack]:
    """A running web (gunicorn) and one worker (``rq worker``), on the test Redis."""
    with _test_stack(redis_url, tmp_path, stack_env) as stack:
        stack.start_web()
        stack.start_worker()
        yield stack


@pytest.fixture
def workers(redis_url: str, tmp_path: Path, stack_env: dict[str, str]) -> Iterator[Stack]:
    """Workers only (no web), started by the test with ``start_worker``: the README's command."""
    with _test_stack(redis_url, tmp_path, stack_env) as stack:
        yield stack


@contextmanager
def _test_stack(redis_url: str, logs: Path, stack_env: dict[str, str]) -> Iterator[Stack]:
    """A :class:`Stack` with ``stack_env``; on exit its processes stop and the end of each one's
    log is printed (pytest shows it when the test failed)."""
    stack = Stack(redis_url=redis_url, logs=logs, env={**process_env(redis_url), **stack_env})
    try:
        yield stack
    finally:
        stack.close()
        for name in dict.fromkeys(name for name, _ in stack.processes):
            print(f"----- {name} log -----\n{stack.log(name)[-5000:]}")


@pytest.fixture
def http(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.base_url, timeout=10) as client:
        yield client


def form_token(client, path: str = "/operator/queues") -> str:
    """The CSRF token of the form on ``path`` (a test client or an httpx client): a new one after a
    login or a logout, which replace the session's token."""
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).text).group(1)


def log_in(client, username: str = OPERATOR_USERNAME, password: str = OPERATOR_PASSWORD, **form: str):
    """Post the operator login form with the test client; return the response."""
    return client.post("/login", data={"username": username, "password": password, **form})
