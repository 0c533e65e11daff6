"""Prometheus metrics, computed from Redis when they are scraped.

Workers count what they run in Redis (``JobMetricsMixin``: one small pipeline per job
start and end), and :class:`OffloadCollector` reads those counts, the queue depths and
the live workers at scrape time. So the numbers are the same whichever web process
answers and however many worker processes or Machines ran the jobs: no per-process
state, no prometheus multiprocess files.

Two ways to read them:

- ``GET /metrics`` on the app's public port, with ``Authorization: Bearer $METRICS_TOKEN``
  (404 when no token is configured, 401 when the token is wrong);
- an internal listener that gunicorn's master starts when ``METRICS_PORT`` is set
  (fly.toml: ``[metrics] port``). Fly's proxy never exposes it; Fly's own scraper, which
  cannot send a token, reads it over the private network and feeds fly-autoscaler.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Flask, Response, current_app, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from redis import Redis
from redis.client import Pipeline
from redis.exceptions import RedisError
from rq import Queue, Worker
from rq.exceptions import DeserializationError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from offload import settings, throughput
from offload.connection import connect
from offload.redis_hygiene import inspect
from offload.state import get_state

log = logging.getLogger("offload.metrics")

EXTENSION_KEY = "offload_metrics"
TASKS_KEY = "offload:metrics:tasks"
"""Set of task labels that have run; one hash ``offload:metrics:task:<label>`` each."""

BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
"""Upper bounds (seconds) of the job duration histogram: from quick calls to the longest timeout."""

OUTCOMES = ("started", "finished", "failed")

QUOTA_REFUSALS_KEY = "offload:quota:refused"
"""Hash: submissions refused per quota (``active``, ``cpu``, ``bytes``), counted by web/quotas.py."""

bp = Blueprint("metrics", __name__)


def task_key(label: str) -> str:
    return f"offload:metrics:task:{label}"


def task_label(job: Job) -> str:
    """The task a job runs: its registered name, the function path for jobs enqueued by hand,
    or "unreadable" for a job whose data is not JSON (the worker refuses to run those)."""
    try:
        return str((job.meta or {}).get("task") or job.func_name)
    except DeserializationError:
        return "unreadable"


def record_job(redis: Redis, job: Job, outcome: str, seconds: float | None = None, ended: str | None = None) -> None:
    """Count one attempt of ``job`` reaching ``outcome`` (:func:`queue_job_record`), one round trip."""
    with redis.pipeline(transaction=False) as pipe:
        queue_job_record(pipe, job, outcome, seconds, ended)
        pipe.execute()


def queue_job_record(
    pipe: Pipeline, job: Job, outcome: str, seconds: float | None = None, ended: str | None = None
) -> None:
    """Add the commands of :func:`record_job` to ``pipe`` (the worker sends them with the job's own
    writes): an ended attempt also counts, as ``ended`` (finished, failed or retried), in the
    dashboard's per-minute throughput (offload.throughput). Plain commands only: the worker runs
    them inside its end-of-job script."""
    label = task_label(job)
    pipe.sadd(TASKS_KEY, label)
    pipe.hincrby(task_key(label), outcome, 1)
    if seconds is not None:
        bucket = next((str(bound) for bound in BUCKETS if seconds <= bound), "+Inf")
        pipe.hincrby(task_key(label), f"le:{bucket}", 1)
        pipe.hincrbyfloat(task_key(label), "sum", seconds)
        pipe.hincrby(task_key(label), "count", 1)
    if ended is not None:
        throughput.record_outcome(pipe, job.origin, label, ended)


def job_duration(job: Job) -> float | None:
    """Seconds from the job's start to its end, if both are known."""
    if job.started_at and job.ended_at and job.ended_at >= job.started_at:
        return (job.ended_at - job.started_at).total_seconds()
    return None


class JobMetricsMixin:
    """Mixed into the worker class: counts every attempt's start and end in Redis.

    Counts are per attempt: a job that fails, is retried and then finishes counts one
    failure and one finish. A count that cannot be written is logged, never fatal to the job.
    """

    connection: Redis

    def _record(self, job: Job, outcome: str, seconds: float | None = None, ended: str | None = None) -> None:
        try:
            record_job(self.connection, job, outcome, seconds, ended)
        except RedisError as exc:
            log.warning("could not record %s of job %s in metrics: %s", outcome, job.id, exc)

    def prepare_job_execution(self, job: Job, *args: Any, **kwargs: Any) -> None:
        super().prepare_job_execution(job, *args, **kwargs)  # type: ignore[misc]  # mixin: Worker is next in the MRO
        self._record(job, "started")

    def handle_job_success(self, job: Job, *args: Any, **kwargs: Any) -> None:
        super().handle_job_success(job, *args, **kwargs)  # type: ignore[misc]  # mixin: Worker is next in the MRO
        self._record(job, "finished", job_duration(job), "finished")

    def handle_job_failure(self, job: Job, *args: Any, **kwargs: Any) -> None:
        super().handle_job_failure(job, *args, **kwargs)  # type: ignore[misc]  # mixin: Worker is next in the MRO
        # RQ's retry has already put the job back (queued, or scheduled for its delay) when one is due.
        retried = job.get_status(refresh=False) in (JobStatus.QUEUED, JobStatus.SCHEDULED)
        self._record(job, "failed", job_duration(job), "retried" if retried else "failed")


class OffloadCollector:
    """Reads queue depths, per-task job counts and durations, and live workers from Redis."""

    def __init__(self, redis: Redis, queue_names: list[str]) -> None:
        self.redis = redis
        self.queue_names = queue_names

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily("offload_queue_depth", "Jobs waiting in each queue.", labels=["queue"])
        for name in self.queue_names:
            depth.add_metric([name], Queue(name, connection=self.redis, serializer=JSONSerializer).count)
        yield depth

        workers = Worker.all(connection=self.redis, serializer=JSONSerializer)
        yield GaugeMetricFamily("offload_workers_alive", "rq workers with a live heartbeat.", value=len(workers))

        hygiene = inspect(self.redis)
        unsafe = GaugeMetricFamily(
            "offload_redis_unsafe",
            "1 when Redis can lose jobs this way (SECURITY.md), 0 when not, NaN when Redis does not say.",
            labels=["check"],
        )
        unsafe.add_metric(["eviction"], _flag(hygiene.evicting))
        unsafe.add_metric(["persistence"], _flag(None if hygiene.persistent is None else not hygiene.persistent))
        yield unsafe
        yield CounterMetricFamily(
            "offload_redis_data_losses", "Times web or worker found that Redis had lost its data.", value=hygiene.losses
        )

        labels = sorted(label.decode() for label in self.redis.smembers(TASKS_KEY))
        with self.redis.pipeline(transaction=False) as pipe:
            for label in labels:
                pipe.hgetall(task_key(label))
            rows = [{k.decode(): v.decode() for k, v in row.items()} for row in pipe.execute()]

        counters = {
            outcome: CounterMetricFamily(
                f"offload_jobs_{outcome}", f"Job attempts {outcome}, per task.", labels=["task"]
            )
            for outcome in OUTCOMES
        }
        duration = HistogramMetricFamily(
            "offload_job_duration_seconds", "Run time of finished and failed job attempts.", labels=["task"]
        )
        for label, row in zip(labels, rows, strict=True):
            for outcome, family in counters.items():
                family.add_metric([label], int(row.get(outcome, 0)))
            cumulative, buckets = 0, []
            for bound in BUCKETS:
                cumulative += int(row.get(f"le:{bound}", 0))
                buckets.append((str(bound), cumulative))
            buckets.append(("+Inf", int(row.get("count", 0))))
            duration.add_metric([label], buckets, float(row.get("sum", 0)))
        yield from counters.values()
        yield duration

        refusals = CounterMetricFamily(
            "offload_quota_refusals", "Submissions refused with a 429 by a per-client quota.", labels=["quota"]
        )
        for quota, count in sorted(self.redis.hgetall(QUOTA_REFUSALS_KEY).items()):
            refusals.add_metric([quota.decode()], int(count))
        yield refusals


def _flag(value: bool | None) -> float:
    return float("nan") if value is None else float(value)


def make_registry(redis: Redis, queue_names: list[str]) -> CollectorRegistry:
    """A registry of its own (not prometheus_client's global one) holding only Offload's collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(OffloadCollector(redis, queue_names))
    return registry


def all_queue_names(config: dict[str, Any]) -> list[str]:
    return settings.all_queue_names(config)


def init_app(app: Flask) -> None:
    """Serve ``/metrics`` for ``app``, reading the Redis that ``jobs.init_app`` connected."""
    redis = get_state(app).redis
    app.extensions[EXTENSION_KEY] = make_registry(redis, all_queue_names(app.config))
    app.register_blueprint(bp)


@bp.get("/metrics")
def scrape() -> Response:
    """Prometheus text format, for a bearer of ``METRICS_TOKEN``; 404 when none is configured."""
    token = current_app.config["OFFLOAD_METRICS_TOKEN"]
    if not token:
        return Response("Not found.\n", status=404, mimetype="text/plain")
    given = request.headers.get("Authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        return Response(
            "A valid bearer token is required.\n",
            status=401,
            mimetype="text/plain",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    return Response(generate_latest(current_app.extensions[EXTENSION_KEY]), mimetype=CONTENT_TYPE_LATEST)


def serve_internal(port: int) -> None:
    """Serve the metrics without a token on ``port`` (all interfaces), from a daemon thread.

    For gunicorn's master (``gunicorn.conf.py``): only Fly's private network reaches a port
    that fly.toml does not list as a service. While Redis does not answer, a scrape is a 503
    and one log line, as ``/metrics`` is (prometheus_client's own server answered 500, with a
    50-line traceback in the web's log for every scrape).
    """
    import socket
    import threading
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    from prometheus_client import make_wsgi_app

    config = settings.from_environ()
    settings.apply_defaults(config)
    metrics_app = make_wsgi_app(make_registry(connect(config), all_queue_names(config)))

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        try:
            return metrics_app(environ, start_response)  # collects before it answers
        except RedisError as exc:
            log.warning("internal metrics: Redis does not answer (%s); answered 503", exc)
            start_response("503 Service Unavailable", [("Content-Type", "text/plain"), ("Retry-After", "5")])
            return [b"Redis does not answer: no metrics until it does.\n"]

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # Fly scrapes every 15 s
            pass

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True
        address_family = socket.AF_INET6  # Fly's private network is IPv6

    try:
        server = make_server("::", port, app, Server, handler_class=Quiet)
    except OSError:  # a host without IPv6
        Server.address_family = socket.AF_INET
        server = make_server("0.0.0.0", port, app, Server, handler_class=Quiet)  # noqa: S104
    threading.Thread(target=server.serve_forever, name="internal-metrics", daemon=True).start()
    log.info("internal metrics on port %d", port)
