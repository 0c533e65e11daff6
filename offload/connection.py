"""The Redis connection: one client with bounded timeouts, and URLs fit for logs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from redis import Redis
from redis.exceptions import RedisError


def connect(config: Mapping[str, Any]) -> Redis:
    """Return a Redis client for ``config["OFFLOAD_REDIS_URL"]`` with bounded timeouts."""
    return Redis.from_url(
        config["OFFLOAD_REDIS_URL"],
        socket_connect_timeout=config["OFFLOAD_REDIS_CONNECT_TIMEOUT"],
        socket_timeout=config["OFFLOAD_REDIS_SOCKET_TIMEOUT"],
        health_check_interval=30,
    )


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
