"""Offload's settings: every knob, read from the environment in one place.

The web app (``app.py``) and the worker (``worker.py``) both call :func:`load`, so they
can never disagree about where Redis is or what the queues are called. Defaults are
for a laptop; production sets the environment (on Fly: ``fly secrets set``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

DEVELOPMENT_SECRET_KEY = "offload-development-only-secret-key"  # noqa: S105 - refused outside development
"""Used when ``SECRET_KEY`` is unset and ``OFFLOAD_ENV=development``; refused elsewhere."""


class SettingsError(RuntimeError):
    """A setting is missing or malformed; the message names it."""


def _int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None


def _list(environ: Mapping[str, str], name: str, default: list[str]) -> list[str]:
    raw = environ.get(name)
    if not raw:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def load(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Return the settings as a dict of upper-case names, read from ``environ``."""
    env = os.environ if environ is None else environ
    offload_env = env.get("OFFLOAD_ENV", "development")
    secret_key = env.get("SECRET_KEY", "")
    if not secret_key:
        if offload_env != "development":
            raise SettingsError("SECRET_KEY must be set when OFFLOAD_ENV is not 'development'")
        secret_key = DEVELOPMENT_SECRET_KEY
    return {
        # "development" allows laptop defaults; anything else ("production") demands real secrets.
        "OFFLOAD_ENV": offload_env,
        "SECRET_KEY": secret_key,
        # redis:// or rediss:// (TLS); Valkey speaks the same protocol.
        "REDIS_URL": env.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        # Workers listen to these in this order, so earlier queues always win.
        "QUEUES": _list(env, "QUEUES", ["high", "default", "low"]),
        # Seconds a finished job and its result are kept (RQ's default is 500).
        "RESULT_TTL": _int(env, "RESULT_TTL", 24 * 3600),
        # Seconds a failed job and its traceback are kept (RQ's default is a year).
        "FAILURE_TTL": _int(env, "FAILURE_TTL", 7 * 24 * 3600),
        # Seconds a job may wait in a queue before it is dropped unstarted (None: forever).
        "JOB_TTL": _int(env, "JOB_TTL", 7 * 24 * 3600),
        # Seconds to wait for Redis to accept a connection / answer a command.
        "REDIS_CONNECT_TIMEOUT": _int(env, "REDIS_CONNECT_TIMEOUT", 2),
        "REDIS_SOCKET_TIMEOUT": _int(env, "REDIS_SOCKET_TIMEOUT", 5),
        # How many jobs /jobs shows at most.
        "JOB_LIST_LIMIT": _int(env, "JOB_LIST_LIMIT", 100),
        # Largest request body the web accepts, in bytes (uploads included).
        "MAX_CONTENT_LENGTH": _int(env, "MAX_CONTENT_LENGTH", 2 * 1024 * 1024),
        # A worker's job process (which runs job after job) is replaced after this many jobs,
        # or once its peak memory passes this many MB, so a leaking job cannot grow forever.
        "JOB_PROCESS_MAX_JOBS": _int(env, "JOB_PROCESS_MAX_JOBS", 1000),
        "JOB_PROCESS_MAX_MEMORY_MB": _int(env, "JOB_PROCESS_MAX_MEMORY_MB", 1024),
    }
