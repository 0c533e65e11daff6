"""The host app of a newer release, for tests/test_unknown_tasks.py: it has a task the reference app
(the release still running) lacks. Its workers run with ``OFFLOAD_APP=tests.newer_release:create_app``;
the tests' own process never imports it, so the reference app's registry stays as it is."""

from __future__ import annotations

from typing import Annotated

from flask import Flask
from pydantic import Field
from rq import get_current_job

from offload import Offload, settings

offload = Offload()


@offload.task(title="Added in the newer release", queue="default", timeout=30)
def added_in_newer_release(key: Annotated[str, Field(max_length=100)]) -> str:
    """Count this run in Redis ``key``; return "ran"."""
    get_current_job().connection.incr(key)
    return "ran"


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.from_mapping(settings.from_environ())
    offload.init_app(app)
    return app
