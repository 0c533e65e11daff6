"""rq-dashboard 0.9.0 at ``/rq``: operators only, on the app's Redis and RQ's JSON serializer.

rq-dashboard has no authentication, no CSRF protection, a "requeue all" that also takes
GET, a ``workers.json`` that answers 500 with the JSON serializer while a worker is busy,
and a job view that prints job fields unescaped (issue #526). Mounted here, without
forking it:

- every request to its blueprint passes ``auth.refuse_unless_operator`` first (an app-level
  ``before_request`` run ahead of all others; its blueprint takes none after registration);
- its POST routes are checked by the app's CSRFProtect like ours: its own ``dashboard.js``
  sends the ``_csrf_token`` cookie back as ``X-CSRFToken``, so its pages set that cookie.
  GET on a route that also takes POST (its "requeue all") is 405;
- ``workers.json`` is answered by :func:`list_workers` (same endpoint), reading each
  worker's current job with the JSON serializer;
- the job view's data (``job_info``) is HTML-escaped, since its template prints it raw;
- its pages carry a Content-Security-Policy that allows only its own inline script (by
  hash) and same-origin files, so markup that slipped in still could not run.
"""

from __future__ import annotations

import base64
import hashlib
import re
from enum import Enum
from typing import Any

import rq_dashboard
import rq_dashboard.web
from flask import Response, abort, current_app, jsonify, render_template, request
from flask.sansio.app import App
from flask.typing import ResponseReturnValue
from flask_wtf.csrf import generate_csrf
from markupsafe import escape
from rq import Worker
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.worker.base import BaseWorker
from werkzeug.exceptions import MethodNotAllowed

from offload.web import auth

BLUEPRINT = "rq_dashboard"
URL_PREFIX = "/rq"
CSRF_COOKIE = "_csrf_token"  # the name rq-dashboard's dashboard.js reads
"""Cookie holding a Flask-WTF token for rq-dashboard's own POSTs (path ``/rq`` only)."""

_INLINE_SCRIPT = re.compile(r'<script type="text/javascript">(.*?)</script>', re.DOTALL)


def init_app(app: App) -> None:
    """Mount rq-dashboard at ``/rq`` on ``app``'s Redis, behind the operator login."""
    app.config.from_object(rq_dashboard.default_settings)
    app.config["RQ_DASHBOARD_REDIS_URL"] = app.config["OFFLOAD_REDIS_URL"]
    rq_dashboard.web.config.serializer = JSONSerializer  # module-wide in rq-dashboard
    rq_dashboard.web.setup_rq_connection(app)
    app.register_blueprint(rq_dashboard.blueprint, url_prefix=URL_PREFIX)
    app.view_functions[f"{BLUEPRINT}.list_workers"] = list_workers
    app.view_functions[f"{BLUEPRINT}.job_info"] = job_info
    # Ahead of every other before_request (CSRF included): nothing of it runs for anyone else.
    app.before_request_funcs.setdefault(None, []).insert(0, guard_dashboard)
    app.after_request(secure_dashboard_page)
    app.register_error_handler(NoSuchJobError, no_such_job)


def guard_dashboard() -> ResponseReturnValue | None:
    """Refuse every dashboard request but an operator's, and GET on its state-changing routes."""
    if request.blueprint != BLUEPRINT:
        return None
    refusal = auth.refuse_unless_operator()
    if refusal is not None:
        return refusal
    if (request.view_args or {}).get("instance_number", 0) != 0:
        abort(404, "The dashboard shows one Redis: instance 0.")
    rule_methods = (request.url_rule.methods if request.url_rule else None) or set()
    if request.method in ("GET", "HEAD") and "POST" in rule_methods:
        raise MethodNotAllowed(valid_methods=["POST"], description="This action changes data: it takes POST only.")
    return None


def secure_dashboard_page(response: Response) -> Response:
    """Give an operator's dashboard page its CSRF cookie and a CSP that allows only its own script."""
    if request.blueprint != BLUEPRINT or response.mimetype != "text/html" or response.status_code != 200:
        return response
    if not auth.is_operator():
        return response
    response.set_cookie(
        CSRF_COOKIE,
        generate_csrf(),
        path=URL_PREFIX,
        secure=current_app.config["SESSION_COOKIE_SECURE"],
        httponly=False,  # its script reads it: the cookie is worthless to other sites, which cannot read it
        samesite="Strict",
    )
    response.headers["Content-Security-Policy"] = content_security_policy(response.get_data(as_text=True))
    return response


def content_security_policy(page: str) -> str:
    """Return the CSP for a dashboard ``page``: its files, its inline script by hash, nothing else.

    ``'unsafe-eval'`` is for underscore's templates (compiled with ``new Function``); no
    ``'unsafe-inline'`` for scripts, so injected ``<script>`` or ``onerror=`` never runs.
    """
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()}'"
        for script in _INLINE_SCRIPT.findall(page)
    )
    return (
        f"default-src 'self'; script-src 'self' 'unsafe-eval' {hashes}; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


def escape_strings(value: Any) -> Any:
    """Return ``value`` (a JSON value) with every string HTML-escaped."""
    if isinstance(value, Enum):  # e.g. RQ's JobStatus: its value, not "JobStatus.FAILED"
        value = value.value
    if isinstance(value, str):
        return str(escape(value))
    if isinstance(value, list):
        return [escape_strings(item) for item in value]
    if isinstance(value, dict):
        return {key: escape_strings(item) for key, item in value.items()}
    return value


def job_info(instance_number: int, job_id: str):
    """rq-dashboard's job data, HTML-escaped: its job view prints every field as raw HTML."""
    data = rq_dashboard.web.job_info.__wrapped__(instance_number, job_id)
    return jsonify(escape_strings(data)), {"Cache-Control": "no-store"}


def current_job(worker: BaseWorker) -> Job | None:
    """Return the job ``worker`` is running, or None when idle or when that job was deleted."""
    try:
        return worker.get_current_job()
    except NoSuchJobError:
        return None


def _current_job(job: Job | None) -> dict[str, Any] | str:
    if job is None:
        return "idle"
    return {
        "job_id": job.id,
        # The only field its template escapes itself: left as is so it is not escaped twice.
        "description": str(job.description or ""),
        "created_at": rq_dashboard.web.serialize_date(job.created_at),
        "call_string": str(escape(job.get_call_string() or "")),
    }


def list_workers(instance_number: int):
    """rq-dashboard's ``workers.json``, reading current jobs with the JSON serializer.

    Its own view calls ``Worker.all`` without the serializer, so fetching a busy worker's
    job unpickles JSON and fails with a 500. The answer has the same shape as its own.
    """
    workers = []
    for worker in Worker.all(
        connection=current_app.redis_conn,  # type: ignore[attr-defined]  # rq-dashboard's setup sets it
        serializer=JSONSerializer,
    ):
        workers.append(
            {
                "name": str(escape(worker.name)),
                "pid": worker.pid,
                "queues": [str(escape(queue.name)) for queue in worker.queues],
                "state": str(escape(str(worker.get_state()))),
                "current_job": _current_job(current_job(worker)),
                "last_heartbeat": worker.last_heartbeat,
                "birth_date": worker.birth_date,
                "successful_job_count": worker.successful_job_count,
                "failed_job_count": worker.failed_job_count,
                "total_working_time": worker.total_working_time,
                "version": str(escape(getattr(worker, "version", ""))),
                "python_version": str(escape(getattr(worker, "python_version", ""))),
            }
        )
    workers.sort(key=lambda w: (w["state"], w["queues"], w["name"]))
    return jsonify(workers=workers), {"Cache-Control": "no-store"}


def no_such_job(exc: NoSuchJobError):
    """A job the dashboard was asked about is gone: 404, not a 500."""
    message = "No such job: it never existed or it has expired."
    return render_template("offload/error.html", status=404, message=message), 404
