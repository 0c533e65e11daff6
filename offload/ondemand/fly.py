"""The ``fly`` on-demand backend: a Fly Machine per worker, through the Machines API.

A Machine created through the API gets the image's environment, what Fly sets on every Machine,
the app's secrets and its ``config.env``, but not fly.toml's ``[env]``, which flyctl writes only
into the ``config.env`` of the Machines ``fly deploy`` makes. So an on-demand Machine's
``config.env`` is the one of the Machine that starts it (read once through the API: fly.toml's
``[env]``, the host app's own variables included), with the starting process's Offload settings
over it.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from offload.ondemand.drain import WORKER_ID_ENV, OnDemandError, burst_command
from offload.settings import PREFIX, is_secret

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("offload.ondemand")


SET_BY_FLY = frozenset({"FLY_APP_NAME", "FLY_IMAGE_REF", "FLY_REGION", "FLY_MACHINE_ID"})
"""Settings Fly sets on every Machine itself (the app, the image it runs, where it runs, its id):
never in a Machine's ``config.env``."""


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
        machine_id: str = "",
    ) -> None:
        missing = [
            name
            for name, value in (("FLY_API_TOKEN", token), ("FLY_APP_NAME", app_name), ("FLY_IMAGE_REF", image))
            if not value
        ]
        if missing:
            raise OnDemandError(f"the fly on-demand backend needs {', '.join(missing)} (docs/deploy.md)")
        secrets = sorted(name for name, value in (env or {}).items() if is_secret(name, value))
        if secrets:
            # A Machine's config is shown to whoever reads the Machine; secrets reach it as Fly secrets.
            raise OnDemandError(f"secrets never go in an on-demand Machine's config.env: {', '.join(secrets)}")
        self.app_name = app_name
        self.image = image
        self.region = region
        self.guest = {"cpu_kind": "shared", "cpus": cpus, "memory_mb": memory_mb}
        self.kill_timeout = kill_timeout
        self.budget = budget
        self.start_timeout = start_timeout
        self.env = dict(env or {})
        self.machine_id = machine_id
        self._deployed_env: dict[str, str] | None = None
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

    def deployed_env(self, deadline: float) -> dict[str, str]:
        """The ``config.env`` of the Machine this process runs on (``FLY_MACHINE_ID``), as
        ``fly deploy`` wrote it from fly.toml's ``[env]``, less what Fly sets itself (``FLY_*``,
        such as the starting Machine's process group), the worker id and any secret. Read once;
        ``{}`` off Fly, and, logged, while the API does not answer (the next start reads it again)."""
        if not self.machine_id:
            return {}
        if self._deployed_env is None:
            try:
                response = self._request("GET", f"/machines/{self.machine_id}", deadline)
                if not response.is_success:
                    raise FlyAPIError(f"{response.status_code}: {_error_text(response)}", response.status_code)
            except OnDemandError as exc:
                log.warning(
                    "could not read Machine %s's config.env (%s): fly.toml's [env] is not handed on",
                    self.machine_id,
                    exc,
                )
                return {}
            env: dict[str, str] = (response.json().get("config") or {}).get("env") or {}
            self._deployed_env = {
                name: value
                for name, value in env.items()
                if not (
                    name.startswith("FLY_")
                    or name.removeprefix(PREFIX) in SET_BY_FLY
                    or name == WORKER_ID_ENV
                    or is_secret(name, value)
                )
            }
        return self._deployed_env

    def machine_config(self, queue: str, worker_id: str, deployed_env: dict[str, str] | None = None) -> dict[str, Any]:
        return {
            "image": self.image,
            "init": {"cmd": burst_command(queue)},
            "auto_destroy": True,
            "restart": {"policy": "no"},
            "guest": self.guest,
            "env": {**(deployed_env or {}), **self.env, WORKER_ID_ENV: worker_id},
            "metadata": {"offload_role": "ondemand-worker", "offload_queue": queue, "offload_worker": worker_id},
            # A Machine stopped by Fly drains like a deploy: SIGTERM, then the job's time to finish.
            "stop_config": {"signal": "SIGTERM", "timeout": f"{self.kill_timeout}s"},
        }

    def start(self, queue: str, worker_id: str) -> str:
        deadline = time.monotonic() + self.budget
        body: dict[str, Any] = {"config": self.machine_config(queue, worker_id, self.deployed_env(deadline))}
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
