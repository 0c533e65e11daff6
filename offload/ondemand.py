"""On-demand workers (the guide's option 2): a job sent to an on-demand queue starts a worker
for that queue, which runs ``rq worker --burst`` and exits when the queue is empty.

The worker is the project's own (``-c worker``, with :class:`OnDemandWorker`, a subclass of
``worker.OffloadWorker``), started by one of two backends behind :class:`Backend`:

- ``local``: a subprocess of the process that enqueued (laptop, tests, a single box);
- ``fly``: a Fly Machine created through the Machines API from the image the app runs
  (``FLY_IMAGE_REF``), with ``auto_destroy`` and restart policy ``no``: it exists only while
  it drains the queue. Metadata on the Machine says which queue and worker it is.

Who drains a queue is recorded in Redis (``offload:ondemand:<queue>:workers``, worker id ->
pid or Machine id) and changed only under a per-queue Redis lock: by the submitter
(:func:`ensure_worker`, after the job is enqueued) and by the worker itself when it finds the
queue empty. A job enqueued while the last worker is leaving is therefore either seen by
that worker, which goes on, or finds no worker recorded and starts one. The backend's own
view (the process is alive; the Machine is listed in a live state) drops records of workers
that died without saying so. At most ``ONDEMAND_MAX_WORKERS`` drain a queue at once, and a new
one starts only while queued jobs outnumber the workers already draining.

Jobs on an on-demand queue must not wait for a delayed retry: once the queue is empty its
worker exits, and no scheduler would move the retry back. :func:`check_tasks` refuses such
tasks at start-up.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from flask import current_app
from redis import Redis
from redis.exceptions import LockError, RedisError
from redis.lock import Lock
from rq import Queue

from offload.settings import APP_ENV
from offload.state import get_redis

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("offload.ondemand")

EXTENSION_KEY = "offload_ondemand"
WORKER_ID_ENV = "OFFLOAD_ONDEMAND_WORKER"
"""Environment variable that tells an on-demand worker its id (its key in the workers hash)."""

LOCK_TIMEOUT = 60
"""Seconds a decision may hold a queue's lock before Redis frees it (its holder died)."""
LOCK_WAIT = 20
"""Seconds a submitter waits for a queue's lock; starting a Machine takes a second or two."""


class OnDemandError(RuntimeError):
    """An on-demand worker could not be started; the message says why."""


def burst_command(queue: str) -> list[str]:
    """The command an on-demand worker runs: the stock worker, in burst mode, on ``queue`` only.

    It needs no settings module of the app's: rq reads ``REDIS_URL`` from the environment, and
    the worker loads the host app ``OFFLOAD_APP`` names (:func:`worker_env`)."""
    return ["rq", "worker", "-w", "offload.worker.ondemand.OnDemandWorker", "--burst", queue]


def worker_env(config: Mapping[str, Any]) -> dict[str, str]:
    """The environment an on-demand worker needs beyond the app's own: its Redis and its host app
    (``OFFLOAD_APP`` if set, else the current app's import name, which ``flask --app`` resolves)."""
    app_path = os.environ.get(APP_ENV) or os.environ.get("FLASK_APP")
    if not app_path:
        app_path = current_app.import_name
    return {"REDIS_URL": config["OFFLOAD_REDIS_URL"], APP_ENV: app_path}


def workers_key(queue: str) -> str:
    return f"offload:ondemand:{queue}:workers"


def lock_key(queue: str) -> str:
    return f"offload:ondemand:{queue}:lock"


class Backend(Protocol):
    """Starts on-demand workers and tells which are still alive."""

    def start(self, queue: str, worker_id: str) -> str:
        """Start a burst worker for ``queue`` that knows itself as ``worker_id``; return its handle."""
        ...

    def alive(self, queue: str, handles: dict[str, str]) -> set[str]:
        """Of ``handles`` (worker id -> handle), return the ids whose worker is starting or running."""
        ...


# --------------------------------------------------------------------------- deciding


def ensure_worker(redis: Redis, backend: Backend, queue: str, max_workers: int) -> str | None:
    """Start a worker for ``queue`` unless the ones draining it already cover its queued jobs.

    Returns the new worker's id, or None when none was needed. Call it after enqueueing.
    """
    try:
        with redis.lock(lock_key(queue), timeout=LOCK_TIMEOUT, blocking_timeout=LOCK_WAIT):
            handles = {k.decode(): v.decode() for k, v in redis.hgetall(workers_key(queue)).items()}
            if handles:
                gone = set(handles) - backend.alive(queue, handles)
                if gone:
                    log.warning("on-demand workers %s of queue %s died without leaving; forgotten", gone, queue)
                    redis.hdel(workers_key(queue), *gone)
                    handles = {k: v for k, v in handles.items() if k not in gone}
            waiting = redis.llen(Queue(queue, connection=redis).key)
            if len(handles) >= min(max_workers, waiting):
                return None
            worker_id = uuid.uuid4().hex
            handle = backend.start(queue, worker_id)
            redis.hset(workers_key(queue), worker_id, handle)
            log.info(
                "started on-demand worker %s (%s) for queue %s, %d job(s) waiting", worker_id, handle, queue, waiting
            )
            return worker_id
    except LockError as exc:
        raise OnDemandError(f"could not take the on-demand lock of queue {queue!r}: {exc}") from exc


def leave_if_drained(redis: Redis, queue_names: Iterable[str], worker_id: str) -> bool:
    """Forget ``worker_id`` and return True if its queues are empty; else False (it goes on)."""
    names = list(queue_names)
    locks: list[Lock] = []
    for name in names:
        lock = redis.lock(lock_key(name), timeout=LOCK_TIMEOUT, blocking_timeout=LOCK_WAIT)
        if not lock.acquire():
            for held in reversed(locks):
                held.release()
            raise LockError(f"could not take the on-demand lock of queue {name!r}")
        locks.append(lock)
    try:
        if any(redis.llen(Queue(name, connection=redis).key) for name in names):
            return False
        for name in names:
            redis.hdel(workers_key(name), worker_id)
        return True
    finally:
        for lock in reversed(locks):
            lock.release()


# --------------------------------------------------------------------------- local backend


class LocalBackend:
    """Runs each on-demand worker as a subprocess of this process, with this environment."""

    def __init__(self, env: dict[str, str] | None = None, cwd: str | None = None) -> None:
        self.env = dict(os.environ if env is None else env)
        self.cwd = cwd or os.getcwd()

    def start(self, queue: str, worker_id: str) -> str:
        command = burst_command(queue)
        # The rq next to this Python (same virtualenv), else the one on PATH.
        beside = Path(sys.executable).with_name("rq")
        rq = str(beside) if beside.exists() else shutil.which("rq", path=self.env.get("PATH")) or "rq"
        # In the working directory the host app runs from: rq worker imports ``-c worker`` and the jobs'
        # modules from there (its ``--path .``), as the stock workers started there do. Not the package's
        # own directory, which holds no host app (and is site-packages once Offload is installed).
        process = subprocess.Popen(
            [rq, *command[1:]], cwd=self.cwd, env={**self.env, WORKER_ID_ENV: worker_id}, start_new_session=True
        )
        # Reap it when it exits, so its pid disappears (alive() looks the pid up).
        threading.Thread(target=process.wait, name=f"reap-{process.pid}", daemon=True).start()
        return str(process.pid)

    def alive(self, queue: str, handles: dict[str, str]) -> set[str]:
        alive = set()
        for worker_id, pid in handles.items():
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                continue
            except PermissionError:
                pass  # exists, owned by someone else
            alive.add(worker_id)
        return alive


# --------------------------------------------------------------------------- Fly backend


LIVE_STATES = frozenset({"created", "starting", "started"})
"""Machine states of a worker that has not exited yet (stopping/stopped/destroyed ones have)."""


class FlyAPIError(OnDemandError):
    """The Machines API refused a request; ``status`` is its HTTP status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class FlyBackend:
    """Creates a Fly Machine per on-demand worker with the Machines API.

    Answers 429 (rate limit: about one create a second, burst 3) are retried after their
    ``Retry-After``; capacity errors (412/409 "insufficient resources", 5xx) are retried with
    backoff, and a Machine that does not reach ``started`` in time is destroyed and tried
    again, all within ``budget`` seconds. 401/403 and other 4xx are not retried.
    """

    def __init__(
        self,
        *,
        api_url: str,
        token: str,
        app_name: str,
        image: str,
        region: str = "",
        cpus: int = 1,
        memory_mb: int = 1024,
        kill_timeout: int = 300,
        budget: float = 15.0,
        start_timeout: int = 10,
        env: dict[str, str] | None = None,
    ) -> None:
        missing = [
            name
            for name, value in (("FLY_API_TOKEN", token), ("FLY_APP_NAME", app_name), ("FLY_IMAGE_REF", image))
            if not value
        ]
        if missing:
            raise OnDemandError(f"the fly on-demand backend needs {', '.join(missing)} (docs/deploy.md)")
        self.app_name = app_name
        self.image = image
        self.region = region
        self.guest = {"cpu_kind": "shared", "cpus": cpus, "memory_mb": memory_mb}
        self.kill_timeout = kill_timeout
        self.budget = budget
        self.start_timeout = start_timeout
        self.env = dict(env or {})
        import httpx  # here, not at import: the web loads this module but only Fly's workers need it

        self.client = httpx.Client(
            base_url=api_url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(10.0, connect=5.0),
        )

    def _request(self, method: str, path: str, deadline: float, **kwargs: Any) -> httpx.Response:
        """Send one API request, waiting out 429s (Retry-After) until ``deadline``."""
        import httpx

        delay = 0.5
        while True:
            try:
                response = self.client.request(method, f"/v1/apps/{self.app_name}{path}", **kwargs)
            except httpx.TransportError as exc:
                if time.monotonic() + delay > deadline:
                    raise OnDemandError(f"the Machines API is unreachable: {exc}") from exc
            else:
                if response.status_code != 429:
                    return response
                delay = _retry_after(response, delay)
                if time.monotonic() + delay > deadline:
                    raise FlyAPIError("the Machines API kept answering 429 Too Many Requests", 429)
                log.info("Machines API rate limit: retrying %s %s in %.1f s", method, path, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)

    def machine_config(self, queue: str, worker_id: str) -> dict[str, Any]:
        return {
            "image": self.image,
            "init": {"cmd": burst_command(queue)},
            "auto_destroy": True,
            "restart": {"policy": "no"},
            "guest": self.guest,
            "env": {**self.env, WORKER_ID_ENV: worker_id},
            "metadata": {"offload_role": "ondemand-worker", "offload_queue": queue, "offload_worker": worker_id},
            # A Machine stopped by Fly drains like a deploy: SIGTERM, then the job's time to finish.
            "stop_config": {"signal": "SIGTERM", "timeout": f"{self.kill_timeout}s"},
        }

    def start(self, queue: str, worker_id: str) -> str:
        deadline = time.monotonic() + self.budget
        body: dict[str, Any] = {"config": self.machine_config(queue, worker_id)}
        if self.region:
            body["region"] = self.region
        delay = 1.0
        while True:
            response = self._request("POST", "/machines", deadline, json=body)
            if response.is_success:
                machine = response.json()
                if self._wait_started(machine, deadline):
                    return machine["id"]
                problem = f"Machine {machine['id']} did not start"
            elif _is_capacity_error(response):
                problem = f"no capacity ({response.status_code}: {_error_text(response)})"
            else:
                raise FlyAPIError(
                    f"the Machines API refused to create a worker ({response.status_code}: {_error_text(response)})",
                    response.status_code,
                )
            if time.monotonic() + delay > deadline:
                raise OnDemandError(f"could not start an on-demand worker for {queue!r} in time: {problem}")
            log.warning("on-demand worker for %s: %s; retrying in %.0f s", queue, problem, delay)
            time.sleep(delay)
            delay = min(delay * 2, 8.0)

    def _wait_started(self, machine: dict[str, Any], deadline: float) -> bool:
        """Wait for the new Machine to start; destroy it and return False if it does not."""
        seconds = max(1, min(self.start_timeout, int(deadline - time.monotonic())))
        params = {"state": "started", "timeout": seconds, "instance_id": machine.get("instance_id", "")}
        response = self._request("GET", f"/machines/{machine['id']}/wait", deadline + seconds, params=params)
        if response.is_success:
            return True
        if response.status_code == 408:
            # A burst worker with nothing to do may have started and gone already.
            current = self._request("GET", f"/machines/{machine['id']}", deadline + seconds)
            if not current.is_success or current.json().get("state") not in ("created", "starting"):
                return True
        else:
            log.info("waiting for Machine %s answered %s; leaving it", machine["id"], response.status_code)
            return True
        self._request("DELETE", f"/machines/{machine['id']}", deadline + 10, params={"force": "true"})
        return False

    def alive(self, queue: str, handles: dict[str, str]) -> set[str]:
        response = self._request(
            "GET", "/machines", time.monotonic() + self.budget, params={"metadata.offload_queue": queue}
        )
        if not response.is_success:
            raise FlyAPIError(
                f"the Machines API refused to list workers ({response.status_code}: {_error_text(response)})",
                response.status_code,
            )
        return {
            ((machine.get("config") or {}).get("metadata") or {}).get("offload_worker", "")
            for machine in response.json()
            if machine.get("state") in LIVE_STATES
        } & set(handles)


def _retry_after(response: httpx.Response, default: float) -> float:
    try:
        return min(max(float(response.headers.get("Retry-After", default)), 0.0), 30.0)
    except ValueError:
        return default


def _error_text(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error", response.text))[:300]
    except ValueError:
        return response.text[:300]


def _is_capacity_error(response: httpx.Response) -> bool:
    if response.status_code >= 500:
        return True
    text = _error_text(response).lower()
    return response.status_code in (409, 412) and any(word in text for word in ("capacity", "insufficient"))


# --------------------------------------------------------------------------- the app's side


def make_backend(config: Mapping[str, Any]) -> Backend:
    """The backend ``ONDEMAND_BACKEND`` names, configured from settings."""
    if config["OFFLOAD_ONDEMAND_BACKEND"] == "fly":
        return FlyBackend(
            api_url=config["OFFLOAD_FLY_API_URL"],
            token=config["OFFLOAD_FLY_API_TOKEN"],
            app_name=config["OFFLOAD_FLY_APP_NAME"],
            image=config["OFFLOAD_FLY_IMAGE_REF"],
            region=config["OFFLOAD_FLY_REGION"],
            cpus=config["OFFLOAD_ONDEMAND_VM_CPUS"],
            memory_mb=config["OFFLOAD_ONDEMAND_VM_MEMORY_MB"],
            # REDIS_URL comes from the app's Fly secrets, which every Machine of the app gets.
            env={APP_ENV: worker_env(config)[APP_ENV]},
        )
    return LocalBackend({**os.environ, **worker_env(config)})


class Starter:
    """Starts on-demand workers off the request's thread: a submit never waits for the queue's
    lock or for the Machines API (up to ``LOCK_WAIT`` plus the Fly backend's budget, ~35 s).

    One thread per web process does the starting. Submits to a queue while a start for it is
    waiting coalesce into that one; a submit that arrives while a start runs asks for another
    after it, so the last job is always looked at."""

    def __init__(self, redis: Redis, backend: Backend, max_workers: int) -> None:
        self.redis, self.backend, self.max_workers = redis, backend, max_workers
        self._waiting: dict[str, str] = {}  # queue -> id of the job that asked
        self._guard = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="offload-ondemand")

    def request(self, queue: str, job_id: str) -> Future[None] | None:
        """Ask for a worker for ``queue`` (job ``job_id`` waits there); return the pending start, if new."""
        with self._guard:
            if queue in self._waiting:
                return None
            self._waiting[queue] = job_id
        return self._executor.submit(self._start, queue)

    def _start(self, queue: str) -> None:
        with self._guard:
            job_id = self._waiting.pop(queue)
        try:
            ensure_worker(self.redis, self.backend, queue, self.max_workers)
        except (OnDemandError, RedisError) as exc:
            # The job is safely queued; the next submit to the queue tries again.
            log.error("job %s waits on queue %s: no on-demand worker could be started: %s", job_id, queue, exc)
        except Exception:
            log.exception("job %s waits on queue %s: starting an on-demand worker failed", job_id, queue)


def job_enqueued(queue: str, job_id: str) -> Future[None] | None:
    """After a job lands on ``queue``: have an on-demand worker started for it, without waiting."""
    config = current_app.config
    if queue not in config["OFFLOAD_ONDEMAND_QUEUES"]:
        return None
    starter = current_app.extensions.get(EXTENSION_KEY)
    if starter is None:
        try:
            backend = make_backend(config)
        except OnDemandError as exc:
            log.error("job %s waits on queue %s: no on-demand worker could be started: %s", job_id, queue, exc)
            return None
        starter = Starter(get_redis(), backend, config["OFFLOAD_ONDEMAND_MAX_WORKERS"])
        starter = current_app.extensions.setdefault(EXTENSION_KEY, starter)  # one per app, whichever thread won
    return starter.request(queue, job_id)
