"""The production app with two benchmark-only endpoints, for ``gunicorn 'bench.webapp:create_bench_app()'``.

Nothing here is reachable in production: ``app.py`` never imports this module. The app is
``app.create_app()`` itself (same settings, hooks and error handlers), with:

- ``POST /bench/noop``: reads the JSON body and answers 202 with a small JSON document,
  touching nothing else: the floor the submit path is compared with.
- ``POST /bench/fanout``: ``{"task": name, "params": [{...}, ...]}`` validates every item
  with the task's own model and enqueues them all in one pipelined ``enqueue_many``, with
  the options ``jobs.submit_job`` gives a single job: a generic bulk submit, until the
  newsletter's own submit lands (bench/fanout.py plugs either in).

It also registers the ``noop`` task (``bench.jobs.noop``), so bulk submits enqueue the
same no-op jobs as the bare ``enqueue_many`` baseline.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, abort, current_app, jsonify, request
from pydantic import ValidationError
from rq import Queue

from app import create_app
from bench import jobs as bench_jobs
from offload import jobs
from offload.registry import field_errors
from offload.state import get_task
from tasks import offload

if offload.tasks.get("noop") is None:
    offload.task(title="No-op", description="Does nothing; for benchmarks.", queue="default", timeout=60)(
        bench_jobs.noop
    )

bp = Blueprint("bench", __name__, url_prefix="/bench")


@bp.post("/noop")
def noop():
    """Parse the JSON body and answer 202, as the submit path does, without doing anything."""
    body: Any = request.get_json(silent=True)
    if not isinstance(body, dict):
        abort(400, "Send a JSON object.")
    return jsonify(accepted=True, keys=sorted(body)), 202


@bp.post("/fanout")
def fanout():
    """Validate every params object for the task and enqueue them all in one pipeline."""
    body: Any = request.get_json(silent=True) or {}
    named = get_task(str(body.get("task", "")))
    if named is None:
        abort(404, "There is no such task.")
    items = body.get("params")
    if not isinstance(items, list):
        abort(400, "params must be a list of objects.")
    try:
        validated = [named.params.model_validate(item) for item in items]
    except ValidationError as exc:
        return jsonify(error="Some parameters are invalid.", fields=field_errors(exc)), 400
    config = current_app.config
    prepared = [
        Queue.prepare_data(
            named.path,
            kwargs=params.model_dump(mode="json"),
            timeout=named.timeout,
            result_ttl=named.result_ttl if named.result_ttl is not None else config["OFFLOAD_RESULT_TTL"],
            failure_ttl=config["OFFLOAD_FAILURE_TTL"],
            ttl=config["OFFLOAD_JOB_TTL"],
            retry=named.retry,
            description=named.title,
            meta={"task": named.name, "progress": 0},
        )
        for params in validated
    ]
    enqueued = jobs.get_queue(named.queue).enqueue_many(prepared)
    return jsonify(enqueued=len(enqueued)), 202


def create_bench_app() -> Flask:
    """Return the production app with the benchmark endpoints mounted."""
    app = create_app()
    app.register_blueprint(bp)
    app.extensions["csrf"].exempt(bp)
    return app
