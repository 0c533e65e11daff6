"""The Redis connection: one client with bounded timeouts, and URLs fit for logs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from redis import BlockingConnectionPool, Redis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.retry import Retry


def client_options(config: Mapping[str, Any], timeout: float | None = None) -> dict[str, Any]:
    """Return the keyword arguments of a Redis client that gives up on a slow Redis in time.

    redis-py retries a timed-out command 3 times by default (4 socket timeouts, 15 s and more
    behind a frozen Redis). Here a timeout is final, and only a dropped connection (Redis
    restarted; the pooled socket is stale) is retried, once and at once. ``timeout`` (seconds)
    overrides both the connect and the socket timeout.
    """
    return {
        "socket_connect_timeout": timeout or config["OFFLOAD_REDIS_CONNECT_TIMEOUT"],
        "socket_timeout": timeout or config["OFFLOAD_REDIS_SOCKET_TIMEOUT"],
        "retry": Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        "health_check_interval": 30,
        # No CLIENT SETINFO on connect: on a frozen Redis a fresh connection would spend a
        # timeout on it (and a retry) before the command itself.
        "driver_info": None,
    }


MAX_CONNECTIONS = 100
"""Connections one client holds at most, in one process (redis-py's own default)."""


def connection_pool(config: Mapping[str, Any], timeout: float | None = None) -> BlockingConnectionPool:
    """Return a pool of connections to ``config["OFFLOAD_REDIS_URL"]`` (:func:`client_options`).

    A caller that finds all :data:`MAX_CONNECTIONS` busy waits for one, no longer than the
    socket timeout. redis-py's default pool fails it at once ("Too many connections"): a gevent
    web process serves hundreds of requests side by side, and a burst of 400 logins answered
    26 of them 500 and sent the login limit's counting to its in-memory fallback.
    """
    options = client_options(config, timeout)
    return BlockingConnectionPool.from_url(
        config["OFFLOAD_REDIS_URL"], max_connections=MAX_CONNECTIONS, timeout=options["socket_timeout"], **options
    )


def connect(config: Mapping[str, Any], timeout: float | None = None) -> Redis:
    """Return a Redis client for ``config["OFFLOAD_REDIS_URL"]`` with bounded timeouts (:func:`connection_pool`)."""
    client = Redis(connection_pool=connection_pool(config, timeout))
    client.auto_close_connection_pool = True  # as Redis.from_url's clients: closing one closes its pool
    return client


def redact(url: str) -> str:
    """Return ``url`` without its password, for logs: in its user part (``redis://:pw@host``) or in
    its query (``?password=pw``, which redis-py reads too)."""
    parts = urlsplit(url)
    if parts.password:
        netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        url = parts._replace(netloc=netloc).geturl()
    base, question, query = url.partition("?")
    if not question:
        return url
    pairs = [(name, "***" if name.lower() == "password" else value) for name, value in parse_qsl(query)]
    return f"{base}?{urlencode(pairs, safe='*')}"


def redis_problem(config: Mapping[str, Any]) -> str | None:
    """Return one line saying Redis at ``config["OFFLOAD_REDIS_URL"]`` does not answer, or None if it does."""
    try:
        connect(config).ping()
    except RedisError as exc:
        url = redact(config["OFFLOAD_REDIS_URL"])
        return f"Redis at {url} is unreachable ({exc}); answering 503 until it is back"
    return None
