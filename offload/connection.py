"""The Redis connection: one client with bounded timeouts, and URLs fit for logs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from redis import Redis
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


def connect(config: Mapping[str, Any], timeout: float | None = None) -> Redis:
    """Return a Redis client for ``config["OFFLOAD_REDIS_URL"]`` with bounded timeouts (:func:`client_options`)."""
    return Redis.from_url(config["OFFLOAD_REDIS_URL"], **client_options(config, timeout))


def redact(url: str) -> str:
    """Return ``url`` without its password, for logs."""
    parts = urlsplit(url)
    if parts.password:
        netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return parts._replace(netloc=netloc).geturl()
    return url


def redis_problem(config: Mapping[str, Any]) -> str | None:
    """Return one line saying Redis at ``config["OFFLOAD_REDIS_URL"]`` does not answer, or None if it does."""
    try:
        connect(config).ping()
    except RedisError as exc:
        url = redact(config["OFFLOAD_REDIS_URL"])
        return f"Redis at {url} is unreachable ({exc}); answering 503 until it is back"
    return None
