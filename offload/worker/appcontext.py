"""The host Flask app around jobs: built once per worker process (``host.load_host_app``), its
worker-startup hooks run before the job process forks (so it inherits what they load), and its
app context, with the job's log capture, pushed around every job."""

from __future__ import annotations

import time
from typing import Any

from flask import Flask

from offload import joblog
from offload.state import State, get_state
from offload.worker.base import WorkerBase


class HostAppContext(WorkerBase):
    """Worker mixin: the host app's preload hooks and its context around every job."""

    flask_app: Flask

    @property
    def offload(self) -> State:
        """The host app's Offload: its tasks and worker hooks."""
        return get_state(self.flask_app)

    def bootstrap(self, *args: Any, **kwargs: Any) -> None:
        if self.slot > 1:  # forked from slot 1 after its hooks ran: what they loaded is here (slots.py)
            super().bootstrap(*args, **kwargs)
            return
        started = time.perf_counter()
        for hook in self.offload.worker_startup:  # the job process inherits what these load (copy-on-write)
            with self.flask_app.app_context():
                hook()
        self.log.info(
            "Worker %s: preloaded libraries and models in %.2f s",
            self.name,
            time.perf_counter() - started,
        )
        super().bootstrap(*args, **kwargs)

    def perform_job(self, job, queue, execution) -> bool:
        with self.flask_app.app_context(), joblog.capture(job, self.connection):
            return super().perform_job(job, queue, execution)
