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
- every JSON answer its pages' scripts read (queues, jobs, one job, workers) has each string
  HTML-escaped, dict keys included (:func:`escape_dashboard_json`): its underscore templates
  print them with ``<%= %>``, as raw HTML. A job's result, args and meta are anyone's text
  (``call_api`` returns what a remote API echoed), and so is a queue's name;
- a job id that is not one (RQ refuses it) is a 404, and a registry holding one lists the
  other jobs (:class:`DashboardQueue`), is emptied and requeued around it; "compact" on a
  queue with nothing in it does nothing;
- a jobs list's path parts (registry, jobs per page, order, page) that its views would fail on
  (500s: an unknown registry, a page that is no whole number, 0 per page, a page past what
  Redis's ranges take) are a 404 before they run (:func:`listing_refusal`);
- its pages carry a Content-Security-Policy that allows only its own inline script (by
  hash) and same-origin files, so markup that slipped in still could not run.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
from collections.abc import Collection
from enum import Enum
from typing import Any

import rq_dashboard
import rq_dashboard.web
from flask import Response, abort, current_app, jsonify, render_template, request
from flask.sansio.app import App
from flask.typing import ResponseReturnValue
from flask_wtf.csrf import generate_csrf
from markupsafe import escape
from redis.exceptions import ResponseError
from rq import Queue, Worker
from rq.exceptions import NoSuchJobError
from rq.job import Job, validate_job_id
from rq.registry import BaseRegistry
from rq.serializers import JSONSerializer
from rq.worker.base import BaseWorker
from werkzeug.exceptions import MethodNotAllowed

from offload.web import auth

log = logging.getLogger("offload")

BLUEPRINT = "rq_dashboard"
URL_PREFIX = "/rq"
CSRF_COOKIE = "_csrf_token"  # the name rq-dashboard's dashboard.js reads
"""Cookie holding a Flask-WTF token for rq-dashboard's own POSTs (path ``/rq`` only, under the
app's mount point)."""

_INLINE_SCRIPT = re.compile(r'<script type="text/javascript">(.*?)</script>', re.DOTALL)


def init_app(app: App) -> None:
    """Mount rq-dashboard at ``/rq`` on ``app``'s Redis, behind the operator login."""
    app.config.from_object(rq_dashboard.default_settings)
    app.config["RQ_DASHBOARD_REDIS_URL"] = app.config["OFFLOAD_REDIS_URL"]
    rq_dashboard.web.config.serializer = JSONSerializer  # module-wide in rq-dashboard
    rq_dashboard.web.setup_rq_connection(app)
    app.register_blueprint(rq_dashboard.blueprint, url_prefix=URL_PREFIX)
    rq_dashboard.web.Queue = DashboardQueue  # the name its views build every queue with
    app.view_functions[f"{BLUEPRINT}.list_workers"] = list_workers
    app.view_functions[f"{BLUEPRINT}.compact_queue"] = compact_queue
    app.view_functions[f"{BLUEPRINT}.empty_queue"] = empty_queue
    app.view_functions[f"{BLUEPRINT}.requeue_all"] = requeue_all
    # Ahead of every other before_request (CSRF included): nothing of it runs for anyone else.
    app.before_request_funcs.setdefault(None, []).insert(0, guard_dashboard)
    app.after_request(secure_dashboard_page)
    app.after_request(escape_dashboard_json)
    app.register_error_handler(NoSuchJobError, no_such_job)


def guard_dashboard() -> ResponseReturnValue | None:
    """Refuse every dashboard request but an operator's, and GET on its state-changing routes."""
    if request.blueprint != BLUEPRINT:
        return None
    refusal = auth.refuse_unless_operator()
    if refusal is not None:
        return refusal
    view_args = request.view_args or {}
    if view_args.get("instance_number", 0) != 0:
        abort(404, "The dashboard shows one Redis: instance 0.")
    if "job_id" in view_args and not is_job_id(view_args["job_id"]):
        abort(404, "No such job: that is not a job id.")
    refusal = listing_refusal(view_args)
    if refusal is not None:
        abort(404, refusal)
    rule_methods = (request.url_rule.methods if request.url_rule else None) or set()
    if request.method in ("GET", "HEAD") and "POST" in rule_methods:
        raise MethodNotAllowed(valid_methods=["POST"], description="This action changes data: it takes POST only.")
    return None


REGISTRY_NAMES = ("queued", "scheduled", "deferred", "started", "finished", "failed", "canceled")
"""The lists rq-dashboard shows (its jobs page's choices); its views take any name and fail on
another (``UnboundLocalError``, a 500)."""

ORDERS = ("asc", "dsc")
"""Its jobs page's orders: ``dsc`` is how it spells descending (it reads anything else as ascending)."""

MAX_PER_PAGE = 200
"""Most jobs per page: the bound of its own page's "Jobs per page" input."""

MAX_PAGE = 10**6
"""Highest page number: at 200 a page, 200 million jobs in, still far inside what Redis's ranges take."""


def listing_refusal(view_args: dict[str, Any]) -> str | None:
    """Return why a dashboard route's jobs-list path parts are not a page of it, or None if they are.

    Its ``list_jobs`` parses ``per_page`` and ``page`` with ``int()`` after routing (``nan``,
    ``1e5``: ValueError), divides by ``per_page`` (0: ZeroDivisionError) and hands the offset to
    Redis (a page of 20 digits: ResponseError), and knows seven registries by name: each was a 500
    for an operator (its own page fetched the list whatever the URL held). ``jobs_overview``
    takes the same parts and makes its page fetch that list.
    """
    if "registry_name" in view_args and view_args["registry_name"] not in REGISTRY_NAMES:
        return f"There is no such list of jobs; the lists are: {', '.join(REGISTRY_NAMES)}."
    if "order" in view_args and view_args["order"] not in ORDERS:
        return "The order is asc (ascending) or dsc (descending)."
    for name, most in (("per_page", MAX_PER_PAGE), ("page", MAX_PAGE)):
        if name in view_args and not _whole_number_up_to(view_args[name], most):
            return f"{name} must be a whole number from 1 to {most}."
    return None


def _whole_number_up_to(value: object, most: int) -> bool:
    """True if ``value`` (a path part, or the int a route's converter made of it) is 1 to ``most``."""
    text = str(value)
    return text.isascii() and text.isdigit() and len(text) <= len(str(most)) and 1 <= int(text) <= most


def secure_dashboard_page(response: Response) -> Response:
    """Give an operator's dashboard page its CSRF cookie and a CSP that allows only its own script."""
    if request.blueprint != BLUEPRINT or response.mimetype != "text/html" or response.status_code != 200:
        return response
    if not auth.is_operator():
        return response
    response.set_cookie(
        CSRF_COOKIE,
        generate_csrf(),
        path=request.script_root + URL_PREFIX,  # under the prefix the app is mounted at, if any
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


ESCAPED_BY_TEMPLATE: dict[str, frozenset[str]] = {
    # jobs.html prints these through $('<div/>').text(...).html(); workers.html with <%- %>.
    "list_jobs": frozenset({"description", "exc_info"}),
    "list_workers": frozenset({"description"}),
}
"""Per dashboard endpoint, the fields its template escapes itself: left as they are, so they
are not shown escaped twice. Every other string of every JSON answer is escaped."""


def escape_strings(value: Any, keep: Collection[str] = ()) -> Any:
    """Return ``value`` (a JSON value) with every string HTML-escaped, dict keys included.

    The values of the keys named in ``keep`` are left as they are, at any depth. It walks with a
    list of its own, not recursion: a job's result is whatever JSON its task returned (a
    ``call_api`` answer is the remote API's), and one nested about 480 deep overflowed Python's
    stack here, a 500 on the job's data.
    """
    root: list[Any] = [None]
    todo: list[tuple[Any, list[Any] | dict[str, Any], Any]] = [(value, root, 0)]  # (value, its copy's container, slot)
    while todo:
        item, container, slot = todo.pop()
        if isinstance(item, Enum):  # e.g. RQ's JobStatus: its value, not "JobStatus.FAILED"
            item = item.value
        if isinstance(item, str):
            container[slot] = str(escape(item))
        elif isinstance(item, list):
            copy: list[Any] = [None] * len(item)
            container[slot] = copy
            todo.extend((element, copy, index) for index, element in enumerate(item))
        elif isinstance(item, dict):
            escaped: dict[str, Any] = {}
            container[slot] = escaped
            for key, element in item.items():
                name = str(escape(key)) if isinstance(key, str) else key
                escaped[name] = element  # as it is if kept; otherwise replaced by its escaped copy
                if key not in keep:
                    todo.append((element, escaped, name))
        else:
            container[slot] = item
    return root[0]


def escape_dashboard_json(response: Response) -> Response:
    """HTML-escape every string of a dashboard JSON answer: its templates print them as raw HTML."""
    if request.blueprint != BLUEPRINT or not response.is_json or response.direct_passthrough:
        return response
    data = response.get_json(silent=True)
    if data is None:
        return response
    endpoint = (request.endpoint or "").rpartition(".")[2]
    response.set_data(current_app.json.dumps(escape_strings(data, ESCAPED_BY_TEMPLATE.get(endpoint, ()))))
    return response


def is_job_id(job_id: str) -> bool:
    """Return True if RQ would take ``job_id`` as a job's id (it raises on anything else)."""
    try:
        validate_job_id(job_id)
    except ValueError:
        return False
    return True


class DashboardQueue(Queue):
    """The queue rq-dashboard's views build: a malformed id in a queue or registry is skipped, not a 500.

    rq-dashboard lists a registry by fetching each id in it; RQ raises ``ValueError`` on an id
    it would never have made (written to Redis by something else), which failed the whole list.
    """

    def fetch_job(self, job_id: str) -> Job | None:
        """The job ``job_id``, or None if it is gone, in another queue, or not a job id (logged)."""
        if not is_job_id(job_id):
            log.warning("Queue %r or one of its registries holds %r, which is not a job id: skipped", self.name, job_id)
            return None
        return super().fetch_job(job_id)


def compact_queue(queue_name: str):
    """rq-dashboard's "compact" (drop the ids of deleted jobs from a queue), which an empty queue no longer fails.

    RQ's ``Queue.compact`` renames the queue's list, and Redis refuses to rename a key that does
    not exist: an empty queue (no list at all) answered 500.
    """
    queue = _dashboard_queue(queue_name)
    try:
        queue.compact()
    except ResponseError as exc:
        if "no such key" not in str(exc).lower():
            raise
    return jsonify(status="OK"), {"Cache-Control": "no-store"}


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
        "description": str(job.description or ""),
        "created_at": rq_dashboard.web.serialize_date(job.created_at),
        "call_string": job.get_call_string() or "",
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
                "name": worker.name,
                "pid": worker.pid,
                "queues": [queue.name for queue in worker.queues],
                "state": str(worker.get_state()),
                "current_job": _current_job(current_job(worker)),
                "last_heartbeat": worker.last_heartbeat,
                "birth_date": worker.birth_date,
                "successful_job_count": worker.successful_job_count,
                "failed_job_count": worker.failed_job_count,
                "total_working_time": worker.total_working_time,
                "version": getattr(worker, "version", ""),
                "python_version": getattr(worker, "python_version", ""),
            }
        )
    workers.sort(key=lambda w: (w["state"], w["queues"], w["name"]))
    return jsonify(workers=workers), {"Cache-Control": "no-store"}


def _registry(queue: Queue, registry_name: str) -> BaseRegistry:
    """``queue``'s registry called ``registry_name`` (failed, finished...), or a 404."""
    registry = getattr(queue, f"{registry_name}_job_registry", None)
    if not isinstance(registry, BaseRegistry):
        abort(404, f"There is no {registry_name[:40]!r} registry.")
    return registry


def _dashboard_queue(queue_name: str) -> Queue:
    return Queue(queue_name, serializer=JSONSerializer, connection=current_app.redis_conn)  # type: ignore[attr-defined]  # rq-dashboard's setup sets it


def _fetch_or_drop(registry: BaseRegistry, job_id: str) -> Job | None:
    """The job ``job_id`` of ``registry``; None, and its entry removed (logged), when it is no job."""
    try:
        if is_job_id(job_id):
            return Job.fetch(job_id, connection=registry.connection, serializer=JSONSerializer)
    except NoSuchJobError:
        pass
    log.warning("Registry %s holds %r, which is no job (malformed or deleted): entry removed", registry.key, job_id)
    registry.remove(job_id)
    return None


def empty_queue(queue_name: str, registry_name: str):
    """rq-dashboard's "empty": delete every job of a queue or registry; ids that are not jobs are dropped too.

    Its own fetched each id of a registry and answered 500 on one RQ refuses as malformed.
    """
    if current_app.config.get("RQ_DASHBOARD_DISABLE_DELETE"):
        return jsonify(status="DISABLED")
    queue = _dashboard_queue(queue_name)
    if registry_name == "queued":
        queue.empty()
        return jsonify(status="OK")
    registry = _registry(queue, registry_name)
    for job_id in registry.get_job_ids(cleanup=False):
        job = _fetch_or_drop(registry, job_id)
        if job is not None:
            job.delete()
            registry.remove(job_id)  # delete() clears the registry of the job's status, which may be another
    return jsonify(status="OK")


def requeue_all(queue_name: str):
    """rq-dashboard's "requeue all" failed jobs of a queue, skipping ids that are no (longer) jobs."""
    registry = _dashboard_queue(queue_name).failed_job_registry
    count = 0
    for job_id in registry.get_job_ids(cleanup=False):
        job = _fetch_or_drop(registry, job_id)
        if job is not None:
            job.requeue()
            count += 1
    return jsonify(status="OK", count=count)


def no_such_job(exc: NoSuchJobError):
    """A job the dashboard was asked about is gone: 404, not a 500."""
    message = "No such job: it never existed or it has expired."
    return render_template("offload/error.html", status=404, message=message), 404
