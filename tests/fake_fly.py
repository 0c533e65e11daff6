"""A local stand-in for the parts of Fly's Machines API that ``ondemand.FlyBackend`` uses.

Speaks the documented protocol over real HTTP (bearer token, JSON bodies, status codes),
and runs each created Machine's ``config.init.cmd`` as a real subprocess, so a Machine lives
exactly as long as its command. Its environment is what a Machine created through the API gets on
Fly, and nothing else: the image's environment (``image_env``), what Fly sets on every Machine
(``FLY_APP_NAME``, ``FLY_IMAGE_REF``, ``FLY_REGION``, and its id, see :meth:`FakeFly.environment`),
``config.env`` and the app's ``secrets``. fly.toml's ``[env]`` is not in it: flyctl writes that
only into the ``config.env`` of the Machines ``fly deploy`` makes (:meth:`FakeFly.deploy`, with
the ``FLY_PROCESS_GROUP`` and ``PRIMARY_REGION`` flyctl adds).

- ``POST /v1/apps/{app}/machines``: create and start; ``auto_destroy`` destroys it on exit;
- ``GET /v1/apps/{app}/machines?metadata.KEY=VALUE``: list, filtered by metadata;
- ``GET /v1/apps/{app}/machines/{id}``: one Machine;
- ``GET /v1/apps/{app}/machines/{id}/wait?state=...&timeout=...``: 200 once it reached that
  state, or 408 on timeout;
- ``POST /v1/apps/{app}/machines/{id}/stop``: send its ``stop_config.signal`` (SIGINT if none);
- ``DELETE /v1/apps/{app}/machines/{id}?force=true``: kill and destroy.

``answers`` scripts error replies (429, 412, 503, ...) that the next requests get first.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.jsonhttp import JSONHandler

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Machine:
    id: str
    config: dict[str, Any]
    state: str = "created"
    reached: set[str] = field(default_factory=lambda: {"created"})
    process: subprocess.Popen | None = None
    instance_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def view(self) -> dict[str, Any]:
        return {"id": self.id, "instance_id": self.instance_id, "state": self.state, "config": self.config}


class FakeFly:
    """The fake API server and its Machines; ``url`` is its base address."""

    def __init__(
        self,
        app_name: str,
        token: str,
        secrets: dict[str, str],
        logs: Path,
        image_env: dict[str, str] | None = None,
        region: str = "ord",
    ) -> None:
        self.app_name, self.token, self.secrets, self.logs = app_name, token, secrets, logs
        self.image_env = dict(image_env or {})
        self.region = region  # the app's primary region: where a Machine created without one runs
        self.machines: dict[str, Machine] = {}  # created through the API
        self.deployed: dict[str, Machine] = {}  # made by `fly deploy` (deploy)
        self.requests: list[tuple[str, str]] = []
        self.answers: dict[str, deque[tuple[int, dict[str, Any], dict[str, str]]]] = {}
        self.stuck = 0  # the next N created Machines never start (a host that cannot run them)
        self.changed = threading.Condition()  # a machine reached a state (``wait`` listens)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer_next(self, route: str, *replies: tuple[int, dict[str, Any], dict[str, str]]) -> None:
        """Make the next requests to ``route`` ("POST /machines", ...) get these replies first."""
        self.answers.setdefault(route, deque()).extend(replies)

    def deploy(self, env: dict[str, str], group: str = "app") -> Machine:
        """A Machine of process group ``group`` as ``fly deploy`` makes it, fly.toml's ``[env]``
        being ``env``: listed and readable through the API; its process is the test's own."""
        config = {
            "image": "registry.fly.io/offload-test:deployment-1",
            "env": {**env, "FLY_PROCESS_GROUP": group, "PRIMARY_REGION": self.region},
            "metadata": {"fly_process_group": group, "fly_platform_version": "v2"},
        }
        machine = Machine(id=uuid.uuid4().hex[:14], config=config, state="started", reached={"created", "started"})
        self.deployed[machine.id] = machine
        return machine

    def created(self) -> list[Machine]:
        return list(self.machines.values())

    def close(self) -> None:
        self.server.shutdown()
        for machine in self.machines.values():
            if machine.process and machine.process.poll() is None:
                machine.process.kill()
                machine.process.wait()

    # ----------------------------------------------------------------- machine lifecycle

    def environment(self, machine: Machine, region: str) -> dict[str, str]:
        """The environment of ``machine``'s command. Its id goes under its Offload name only
        (``OFFLOAD_FLY_MACHINE_ID``): ``FLY_MACHINE_ID`` tells ``WORKER_SLOTS=0`` it runs on Fly,
        which would run a slot per CPU of this machine, not of the Machine's size."""
        runtime = {
            "FLY_APP_NAME": self.app_name,
            "FLY_IMAGE_REF": machine.config["image"],
            "FLY_REGION": region,
            "OFFLOAD_FLY_MACHINE_ID": machine.id,
        }
        return {**self.image_env, **runtime, **machine.config.get("env", {}), **self.secrets}

    def _create(self, body: dict[str, Any]) -> Machine:
        machine = Machine(id=uuid.uuid4().hex[:14], config=body["config"])
        self.machines[machine.id] = machine
        if self.stuck:
            self.stuck -= 1
        else:
            command = list(machine.config["init"]["cmd"])
            command[0] = shutil.which(command[0], path=str(Path(sys.executable).parent)) or command[0]
            log = open(self.logs / f"machine-{machine.id}.log", "ab")  # noqa: SIM115 - closed below
            machine.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=self.environment(machine, body.get("region") or self.region),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            log.close()
            self._reach(machine, "started")
            threading.Thread(target=self._supervise, args=(machine,), daemon=True).start()
        return machine

    def _supervise(self, machine: Machine) -> None:
        assert machine.process is not None
        machine.process.wait()
        with self.changed:  # a reentrant lock: _reach takes it again
            if machine.state != "destroyed":
                self._reach(machine, "stopped", "destroyed" if machine.config.get("auto_destroy") else "stopped")

    def _reach(self, machine: Machine, *states: str) -> None:
        """Move ``machine`` through ``states`` (the last is where it stays) and wake the waiters."""
        with self.changed:
            machine.reached.update(states)
            machine.state = states[-1]
            self.changed.notify_all()

    def _wait(self, machine: Machine, state: str, timeout: float) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: state in machine.reached, timeout)

    def _stop(self, machine: Machine) -> None:
        signal_name = (machine.config.get("stop_config") or {}).get("signal", "SIGINT")
        if machine.process and machine.process.poll() is None:
            machine.process.send_signal(getattr(signal, signal_name))

    def _destroy(self, machine: Machine) -> None:
        if machine.process and machine.process.poll() is None:
            machine.process.kill()
        self._reach(machine, "stopped", "destroyed")

    # ----------------------------------------------------------------- HTTP

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(JSONHandler):
            def _route(self, method: str) -> None:
                url = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                match = re.fullmatch(rf"/v1/apps/{fake.app_name}/machines(?:/(\w+))?(/wait|/stop)?", url.path)
                route = (
                    f"{method} /machines" + ("/{id}" if match and match[1] else "") + (match[2] or "" if match else "")
                )
                fake.requests.append((method, self.path))
                if self.headers.get("Authorization") != f"Bearer {fake.token}":
                    return self.answer(401, {"error": "You must be authenticated to view this."})
                if match is None:
                    return self.answer(404, {"error": "app not found"})
                if fake.answers.get(route):
                    return self.answer(*fake.answers[route].popleft())
                machine = fake.machines.get(match[1] or "") or fake.deployed.get(match[1] or "")
                if match[1] and machine is None:
                    return self.answer(404, {"error": "machine not found"})
                if route == "POST /machines":
                    length = int(self.headers.get("Content-Length", 0))
                    return self.answer(200, fake._create(json.loads(self.rfile.read(length))).view())
                if route == "GET /machines":
                    wanted = {k.removeprefix("metadata."): v for k, v in query.items() if k.startswith("metadata.")}
                    listed = [
                        m.view()
                        for m in (*fake.deployed.values(), *fake.machines.values())
                        if m.state != "destroyed"
                        and all(m.config.get("metadata", {}).get(k) == v for k, v in wanted.items())
                    ]
                    return self.answer(200, listed)
                if route == "GET /machines/{id}":
                    return self.answer(200, machine.view())
                if route == "GET /machines/{id}/wait":
                    if fake._wait(machine, query.get("state", "started"), float(query.get("timeout", 60))):
                        return self.answer(200, {"ok": True})
                    return self.answer(408, {"error": "deadline_exceeded: machine did not reach state"})
                if route == "POST /machines/{id}/stop":
                    fake._stop(machine)
                    return self.answer(200, {"ok": True})
                if route == "DELETE /machines/{id}":
                    if machine.state == "started" and query.get("force") != "true":
                        return self.answer(412, {"error": "machine still active, refusing to delete"})
                    fake._destroy(machine)
                    return self.answer(200, {"ok": True})
                return self.answer(404, {"error": f"no route {route}"})

            def do_GET(self) -> None:
                self._route("GET")

            def do_POST(self) -> None:
                self._route("POST")

            def do_DELETE(self) -> None:
                self._route("DELETE")

        return Handler
