"""gunicorn settings, read automatically from the working directory by ``gunicorn app:app``.

Every value can be overridden from the environment, so fly.toml's command stays a plain
``gunicorn app:app`` (Fly splits commands without a shell: no ``$VAR`` there).
"""

import os
import sys
import warnings

# Fly's proxy sends traffic to 0.0.0.0:8080 (fly.toml [http_service] internal_port).
bind = os.environ.get("GUNICORN_BIND", f"0.0.0.0:{os.environ.get('PORT', '8080')}")

# Requests only enqueue and read Redis: short, I/O-bound. Two processes use both cores of
# a small Machine. Each serves its connections as gevent greenlets: a client that sends its
# request slowly (slow loris: headers a byte a second) holds a greenlet that waits on its
# socket, not one of a few threads, so 50 of them no longer starve everyone else (with
# gthread, 8 such sockets took every thread; tests/test_slow_clients.py). Redis calls wait
# cooperatively (gevent patches the socket module before the app is loaded).
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gevent"
# Each web process patches the standard library for gevent as it boots, after the master
# imported redis-py (when_ready) and with it redis.asyncio.connection, which takes names from
# ssl directly. gevent warns about that module at every boot (every GUNICORN_MAX_REQUESTS); it
# is never used here (Offload's Redis client is the blocking one, whose ssl calls are patched).
# That warning alone is silenced: any other module left unpatched still says so.
warnings.filterwarnings(
    "ignore",
    message=r"Monkey-patching ssl after ssl has already been imported.*"
    r"\(NOT patched\): \['redis\.asyncio\.connection \([^']*\)'\]\.\s*$",
)
# Connections one process holds at once (slow ones included); fly.toml's hard_limit (60) is far below.
worker_connections = int(os.environ.get("GUNICORN_WORKER_CONNECTIONS", "1000"))

# Each web process is replaced after about this many requests, jittered so the two are not
# replaced at once: a slow leak (issue 14: 55.9 -> 64.7 MiB over 22,000 requests) is bounded
# whatever its cause, and no deploy depends on finding it. The master forks the new process
# before the old one exits; requests in flight finish.
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "5000"))
max_requests_jitter = int(os.environ.get("GUNICORN_MAX_REQUESTS_JITTER", "500"))

# No request here should take long; a stuck one is killed rather than piling up.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
# On SIGTERM (fly.toml kill_signal) finish in-flight requests for up to this long.
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "20"))
keepalive = 5

accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")

# gunicorn 27's control socket is a local admin interface; nothing here uses it.
control_socket_disable = True

# Trust X-Forwarded-* only from the proxy in front (Fly's), which the app wraps with ProxyFix.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")


def when_ready(server):
    """In the master, once: say when Redis does not answer (requests get 503 until it does), and
    serve the metrics on METRICS_PORT for Fly's scraper (fly.toml [metrics]).

    Not with ``--reload`` (development: ``python3 dev.py``, which made sure Redis answers): there
    the master imports nothing of Offload or the app, since every web process it forks after a
    change would inherit those modules as they were, and serve stale code (tasks.py and all)."""
    if server.cfg.reload:
        return
    import logging

    from offload import redis_hygiene, settings
    from offload.connection import redis_problem

    # Redis hygiene's findings in gunicorn's log, with its format and level (web processes inherit it).
    hygiene_log = logging.getLogger(redis_hygiene.__name__)
    for handler in logging.getLogger("gunicorn.error").handlers:
        hygiene_log.addHandler(handler)
    hygiene_log.propagate = False
    try:
        config = settings.from_environ()
        settings.apply_defaults(config)
        problem = redis_problem(config)
        if not problem:
            redis_hygiene.check_at_start(config, "web")
    except settings.SettingsError:
        problem = None  # the app's own start-up reports it
    except redis_hygiene.UnsafeRedis as exc:
        server.log.error("%s", exc)
        sys.exit(1)  # before any web process starts: one line, exit 1
    if problem:
        server.log.warning(problem)
    port = os.environ.get("METRICS_PORT")
    if port:
        from offload import metrics

        metrics.serve_internal(int(port))


GC_THRESHOLD = int(os.environ.get("GUNICORN_GC_THRESHOLD", "50000"))
"""Allocations between two young-generation collections in a web process (Python's default: 700).

A request that fans out (10,000 newsletter jobs) allocates hundreds of thousands of
objects it keeps until the one pipeline is sent; at the default the collector runs ~280
times inside that request, about a tenth of its time (bench/fanout.py). The cyclic
garbage a request leaves is small, so collecting less often costs little memory."""


def post_worker_init(worker):
    """In each web process, once the app is loaded: leave what start-up built (modules, the app,
    its routes) out of every later collection, and collect young objects less often."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])
