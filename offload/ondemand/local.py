"""The ``local`` on-demand backend: each worker a subprocess of the process that enqueued."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from offload.ondemand.drain import WORKER_ID_ENV, burst_command


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
