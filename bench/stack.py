"""The processes a scenario runs on: its own Redis server, gunicorn and ``rq worker``.

Each scenario (and each variant in it) gets a Redis server of its own on a free port, so
``INFO commandstats`` counts only what that scenario's processes sent.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import astuple, dataclass
from pathlib import Path

import httpx
from redis import Redis
from rq import Queue, Worker
from rq.serializers import JSONSerializer
from werkzeug.security import generate_password_hash

import dev

ROOT = dev.ROOT

PRODUCTION_WORKER = dev.WORKER_COMMAND
"""Offload's worker, exactly as deployed (README, fly.toml)."""

_STOCK = "rq worker --serializer json --url {redis_url} high default low"
STOCK_FORKING_WORKER = _STOCK
"""RQ's default worker: a forked work horse per job."""
STOCK_SIMPLE_WORKER = _STOCK + " --worker-class rq.worker.SimpleWorker"
"""RQ's in-process worker: jobs run in the worker process itself."""
STOCK_SCHEDULER_WORKER = _STOCK + " --with-scheduler"
"""RQ's default worker with RQ's scheduler, as most RQ deployments run it."""

WEB_APP = "bench.webapp:create_bench_app()"
"""The production app plus the benchmark-only endpoints, for gunicorn."""

NOOP = "bench.jobs.noop"

OPERATOR = "bench"
"""The operator account the bench's web app gets (Stack.log_in)."""


ONE_CLIENT_LIMITS = {
    # One client sends every request: raise its submit budget (the check still runs).
    "SUBMIT_RATE_LIMIT": "1000000000 per minute",
    # ... and its quotas (web/quotas.py): its CPU and bytes are still charged, one script a job.
    "QUOTA_ACTIVE_JOBS": "0",
    "QUOTA_CPU_SECONDS_PER_HOUR": "1000000000",
    "QUOTA_BYTES_PER_HOUR": "1000000000000",
}
"""The web's per-client limits, raised for a benchmark's single client (every check still runs)."""


def command_counts(redis: Redis) -> Counter[str]:
    """Return how many times each command ran on the server (INFO commandstats), by name."""
    return Counter({name: values["calls"] for name, values in _command_stats(redis.info("commandstats")).items()})


def _command_stats(info: dict) -> dict[str, dict]:
    """The ``cmdstat_*`` entries of an INFO reply (its calls, usec...), by command name."""
    return {
        name.removeprefix("cmdstat_"): values
        for name, values in info.items()
        if name.startswith("cmdstat_") and isinstance(values, dict)
    }


WRAPPERS = frozenset({"exec", "eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro"})
"""Commands whose INFO commandstats time includes the commands they run, which are counted again
under their own names (checked on Redis 7.0: EXEC of 50 HSETs, and EVALSHA of a script calling them)."""


@dataclass(frozen=True)
class RedisCost:
    """What a Redis server has done so far: commands run, requests read, CPU seconds spent."""

    commands: int
    round_trips: int
    """Read events (INFO stats ``total_reads_processed``): one per request or pipeline a client sends."""
    cpu_seconds: float
    """``used_cpu_user`` + ``used_cpu_sys`` (INFO cpu): the server's own CPU time."""
    command_seconds: float = 0.0
    """The time the commands themselves took (INFO commandstats ``usec``, WRAPPERS left out): what
    the data written costs, before reading requests, writing replies and running scripts."""

    def __add__(self, other: RedisCost) -> RedisCost:
        return RedisCost(*(mine + theirs for mine, theirs in zip(astuple(self), astuple(other), strict=True)))

    def __sub__(self, other: RedisCost) -> RedisCost:
        return RedisCost(*(mine - theirs for mine, theirs in zip(astuple(self), astuple(other), strict=True)))

    def scaled(self, factor: float) -> RedisCost:
        """This cost times ``factor`` (a cost per second times a run's length, say)."""
        return RedisCost(*(value * factor for value in astuple(self)))  # type: ignore[arg-type]

    def per(self, count: int, less: RedisCost | None = None) -> RedisCost:
        """This cost, minus ``less`` (a fixed overhead), spread over ``count`` jobs."""
        cost = self - less if less is not None else self
        return RedisCost(*(value / count for value in astuple(cost)))  # type: ignore[arg-type]


def redis_cost(redis: Redis) -> RedisCost:
    """Return the server's :class:`RedisCost` so far (one INFO round trip, counted in it too)."""
    info = redis.info("all")
    stats = _command_stats(info)
    return RedisCost(
        sum(values["calls"] for values in stats.values()),
        info["total_reads_processed"],
        info["used_cpu_user"] + info["used_cpu_sys"],
        sum(values["usec"] for name, values in stats.items() if name not in WRAPPERS) / 1e6,
    )


def noop_jobs(count: int) -> list:
    """Return ``count`` no-op jobs ready for ``Queue.enqueue_many``, kept an hour."""
    return [
        Queue.prepare_data(NOOP, result_ttl=3600, failure_ttl=3600, ttl=3600, description="No-op") for _ in range(count)
    ]


def queue(redis: Redis, name: str = "default") -> Queue:
    return Queue(name, connection=redis, serializer=JSONSerializer)


class Stack:
    """Processes started for one scenario on its own Redis server; all stopped on close."""

    def __init__(self, exits: ExitStack, redis_url: str, logs: Path) -> None:
        self.redis_url = redis_url
        self.redis = Redis.from_url(redis_url, socket_timeout=60)
        self.logs = logs
        self.processes: list[subprocess.Popen] = []
        self.web: subprocess.Popen | None = None
        self.operator_password = secrets.token_urlsafe(16)
        self.env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "REDIS_URL": redis_url,
            "OFFLOAD_ENV": "production",
            "SECRET_KEY": secrets.token_hex(32),
            **ONE_CLIENT_LIMITS,
            # An operator account, for what only signed-in users may submit (the newsletter): log_in().
            "OPERATOR_USERNAME": OPERATOR,
            "OPERATOR_PASSWORD_HASH": generate_password_hash(self.operator_password),
            "PYTHONUNBUFFERED": "1",
            # Workers run only registered tasks and the functions of these modules (NOOP's).
            "UNREGISTERED_JOB_MODULES": "bench.jobs",
        }
        exits.callback(self.close)

    def spawn(self, name: str, command: str, **env: str) -> subprocess.Popen:
        with open(self.logs / f"{name}.log", "ab") as log:
            process = subprocess.Popen(
                shlex.split(command.format(redis_url=self.redis_url)),
                cwd=ROOT,
                env={**self.env, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(process)
        return process

    def start_web(self, name: str = "web", app: str = WEB_APP) -> str:
        """Start gunicorn with the production settings (gunicorn.conf.py); return its base URL."""
        port = dev.free_port()
        self.web = self.spawn(name, f"gunicorn {shlex.quote(app)}", GUNICORN_BIND=f"127.0.0.1:{port}")
        base_url = f"http://127.0.0.1:{port}"
        dev.wait_for(
            lambda: self.web.poll() is not None or _answers(base_url + "/healthz"), timeout=30, what="gunicorn"
        )
        self.check_alive(self.web, name)
        return base_url

    def start_worker(self, command: str, name: str = "worker", wait: bool = True) -> subprocess.Popen:
        """Start an ``rq worker`` command; with ``wait``, return once it has registered."""
        process = self.spawn(name, command)
        if wait:
            dev.wait_for(
                lambda: (
                    process.poll() is not None
                    or any(worker.pid == process.pid for worker in Worker.all(connection=self.redis))
                ),
                timeout=30,
                what=f"{name} to register",
            )
            self.check_alive(process, name)
        return process

    def log_in(self, http: httpx.Client) -> None:
        """Sign ``http`` (based on the web's URL) in as the operator, as a browser would (login form, CSRF)."""
        page = http.get("/login")
        carry_cookies(http, page)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        if token is None:
            raise RuntimeError(f"no CSRF token on the login page ({page.status_code})")
        form = {"username": OPERATOR, "password": self.operator_password, "csrf_token": token.group(1)}
        answer = http.post("/login", data=form)
        if answer.status_code >= 400 or not answer.cookies:
            raise RuntimeError(f"the bench operator could not log in ({answer.status_code})")
        carry_cookies(http, answer)

    def check_alive(self, process: subprocess.Popen, name: str) -> None:
        if process.poll() is not None:
            log = (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{log}")

    def close(self) -> None:
        for process in reversed(self.processes):
            stop(process)


def stop(process: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM ``process`` (warm shutdown) and wait; SIGKILL its group if it hangs."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextmanager
def stack() -> Iterator[Stack]:
    """A fresh Redis server on a free port, and a :class:`Stack` on it."""
    with ExitStack() as exits:
        port = dev.free_port()
        exits.enter_context(dev.redis_server(dev.find_redis_server(), port))
        logs = Path(exits.enter_context(tempfile.TemporaryDirectory(prefix="offload-bench-")))
        yield Stack(exits, f"redis://127.0.0.1:{port}/0", logs)


def carry_cookies(http: httpx.Client, response: httpx.Response) -> None:
    """Keep ``response``'s cookies in ``http``."""
    # Production cookies are Secure, and the bench talks plain HTTP to 127.0.0.1: carried by hand.
    for name, value in response.cookies.items():
        http.cookies.set(name, value)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
