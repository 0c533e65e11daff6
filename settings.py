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
    if env.get("ONDEMAND_BACKEND", "local") not in ("local", "fly"):
        raise SettingsError(f"ONDEMAND_BACKEND must be 'local' or 'fly', got {env['ONDEMAND_BACKEND']!r}")
    operator_username = env.get("OPERATOR_USERNAME", "").strip()
    operator_password_hash = env.get("OPERATOR_PASSWORD_HASH", "").strip()
    if bool(operator_username) != bool(operator_password_hash):
        raise SettingsError("set both OPERATOR_USERNAME and OPERATOR_PASSWORD_HASH, or neither")
    if operator_password_hash and (
        operator_password_hash.count("$") != 2 or operator_password_hash.split(":")[0] not in ("scrypt", "pbkdf2")
    ):
        raise SettingsError(
            "OPERATOR_PASSWORD_HASH must be a hash made by `python -m auth` (method$salt$hash), not a password"
        )
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
        # --- faults: how soon a dead worker's job is noticed, and what happens to it
        # Seconds between a busy worker's heartbeats (RQ's job monitoring interval, 30 there).
        # A job whose worker misses two of them in a row counts as abandoned.
        "WORKER_HEARTBEAT_INTERVAL": _int(env, "WORKER_HEARTBEAT_INTERVAL", 10),
        # Seconds between a worker's maintenance passes, which find abandoned jobs (RQ: 600).
        "WORKER_MAINTENANCE_INTERVAL": _int(env, "WORKER_MAINTENANCE_INTERVAL", 20),
        # Seconds between RQ's full maintenance passes (every registry of every queue cleaned);
        # between them a pass only looks for abandoned jobs, one round trip (worker.py).
        "WORKER_FULL_MAINTENANCE_INTERVAL": _int(env, "WORKER_FULL_MAINTENANCE_INTERVAL", 600),
        # Extra runs a job gets when its worker or work horse dies under it, on top of its
        # task's own Retry (which a crash uses first). 0: such a job fails at once.
        "CRASH_RERUNS": _int(env, "CRASH_RERUNS", 1),
        # --- deploy (docs/deploy.md) ---
        # Queues no stock worker listens to: a job sent to one starts an `rq worker --burst`
        # for it (ondemand.py) that exits when the queue is empty.
        "ONDEMAND_QUEUES": _list(env, "ONDEMAND_QUEUES", ["ondemand"]),
        # "local" runs that worker as a subprocess; "fly" starts a Fly Machine per worker.
        "ONDEMAND_BACKEND": env.get("ONDEMAND_BACKEND", "local"),
        # Most on-demand workers draining one queue at once.
        "ONDEMAND_MAX_WORKERS": _int(env, "ONDEMAND_MAX_WORKERS", 2),
        # The Machines API: public address, or http://_api.internal:4280 inside Fly; a deploy token.
        "FLY_API_URL": env.get("FLY_API_URL", "https://api.machines.dev"),
        "FLY_API_TOKEN": env.get("FLY_API_TOKEN", ""),
        # Set by Fly on every Machine: this app's name, the image it runs, its region.
        "FLY_APP_NAME": env.get("FLY_APP_NAME", ""),
        "FLY_IMAGE_REF": env.get("FLY_IMAGE_REF", ""),
        "FLY_REGION": env.get("FLY_REGION", ""),
        # Size of an on-demand worker Machine.
        "ONDEMAND_VM_CPUS": _int(env, "ONDEMAND_VM_CPUS", 1),
        "ONDEMAND_VM_MEMORY_MB": _int(env, "ONDEMAND_VM_MEMORY_MB", 1024),
        # Bearer token for GET /metrics on the public port; unset, /metrics answers 404.
        "METRICS_TOKEN": env.get("METRICS_TOKEN", ""),
        # The operator who may open /rq and the operator pages; both empty: those pages are off.
        "OPERATOR_USERNAME": operator_username,
        # A werkzeug password hash (scrypt), made by `python -m auth`; never the password itself.
        "OPERATOR_PASSWORD_HASH": operator_password_hash,
        # Hours an operator login lasts before the password is asked again.
        "OPERATOR_SESSION_HOURS": _int(env, "OPERATOR_SESSION_HOURS", 12),
        # Session cookies: never sent over plain HTTP outside development, never read by scripts,
        # never sent on cross-site requests other than top-level navigation.
        "SESSION_COOKIE_SECURE": offload_env != "development",
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        # --- workloads: files jobs make, the third-party API, the PDF font ---
        # Largest file (artifact) a job may store next to its result, in bytes; it lives in Redis.
        "ARTIFACT_MAX_BYTES": _int(env, "ARTIFACT_MAX_BYTES", 5 * 1024 * 1024),
        # A TrueType font with wide Unicode coverage for PDF reports (Debian: fonts-dejavu-core);
        # when the file is missing, reports fall back to Helvetica and Latin-1 text.
        "REPORT_FONT": env.get("REPORT_FONT", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
        # The only host call_api talks to: users give a path, never a host (no SSRF).
        "THIRD_PARTY_URL": env.get("THIRD_PARTY_URL", "https://httpbin.org"),
        # Sent as "Authorization: Bearer ..." when set; a secret, so only from the environment.
        "THIRD_PARTY_TOKEN": env.get("THIRD_PARTY_TOKEN", ""),
        # Seconds to connect / to wait for each read before the attempt counts as failed.
        "THIRD_PARTY_CONNECT_TIMEOUT": _int(env, "THIRD_PARTY_CONNECT_TIMEOUT", 3),
        "THIRD_PARTY_READ_TIMEOUT": _int(env, "THIRD_PARTY_READ_TIMEOUT", 10),
        # Most call_api jobs queued or running at once, across all workers (RQ RateLimit).
        "THIRD_PARTY_CONCURRENCY": _int(env, "THIRD_PARTY_CONCURRENCY", 4),
        # Exponential backoff between attempts: base * 2**n seconds, jittered, at most cap.
        "THIRD_PARTY_BACKOFF_BASE": _int(env, "THIRD_PARTY_BACKOFF_BASE", 2),
        "THIRD_PARTY_BACKOFF_CAP": _int(env, "THIRD_PARTY_BACKOFF_CAP", 120),
        # A Retry-After longer than this fails the job instead of parking it for that long.
        "THIRD_PARTY_RETRY_AFTER_MAX": _int(env, "THIRD_PARTY_RETRY_AFTER_MAX", 600),
        # --- newsletter (newsletter.py, mailer.py)
        # smtp:// (plain), smtp+starttls:// (STARTTLS, required) or smtps:// (implicit TLS);
        # credentials go in the URL (smtps://user:password@host:465) and are never logged.
        "SMTP_URL": env.get("SMTP_URL", "smtp://127.0.0.1:1025"),
        # Seconds to connect to the SMTP server and to wait for each of its replies.
        "SMTP_TIMEOUT": _int(env, "SMTP_TIMEOUT", 30),
        # A PEM file of CA certificates to trust for SMTP TLS, instead of the system's (empty: the system's).
        "SMTP_CA_FILE": env.get("SMTP_CA_FILE", ""),
        # The From header and envelope sender of newsletters.
        "NEWSLETTER_FROM": env.get("NEWSLETTER_FROM", "Offload <newsletter@offload.invalid>"),
        # Most distinct recipients one newsletter may have.
        "NEWSLETTER_MAX_RECIPIENTS": _int(env, "NEWSLETTER_MAX_RECIPIENTS", 10_000),
        # Seconds a batch, its delivery records and failures are kept after its send time. A job of
        # the batch that runs later (requeued by hand) finds no batch and fails rather than mail twice.
        "NEWSLETTER_TTL": _int(env, "NEWSLETTER_TTL", 14 * 24 * 3600),
        # --- scheduling (scheduling.py)
        # Furthest ahead a job may be scheduled, in seconds.
        "SCHEDULE_MAX_AHEAD": _int(env, "SCHEDULE_MAX_AHEAD", 30 * 24 * 3600),
        # A run_at this many seconds in the past is still accepted (clock skew, slow form); it runs at once.
        "SCHEDULE_PAST_TOLERANCE": _int(env, "SCHEDULE_PAST_TOLERANCE", 60),
        # --- periodic jobs (periodic.py): seconds between runs, and into each period
        # The nightly cleanup: every day at 03:00 UTC.
        "CLEANUP_EVERY": _int(env, "CLEANUP_EVERY", 24 * 3600),
        "CLEANUP_OFFSET": _int(env, "CLEANUP_OFFSET", 3 * 3600),
        # The digest: every hour, on the hour.
        "DIGEST_EVERY": _int(env, "DIGEST_EVERY", 3600),
        # Where the digest is mailed (through SMTP_URL); empty: it is only stored and shown as the job's result.
        "DIGEST_TO": env.get("DIGEST_TO", ""),
        # --- web defences (security.py)
        # Proxies in front of the app that set X-Forwarded-For/-Proto (1 on Fly, 0 on a laptop).
        "TRUSTED_PROXY_COUNT": _int(env, "TRUSTED_PROXY_COUNT", 0),
        # Jobs one client (IP address) may submit, in Flask-Limiter's notation.
        "SUBMIT_RATE_LIMIT": env.get("SUBMIT_RATE_LIMIT") or "60 per minute",
        # A worker's job process (which runs job after job) is replaced after this many jobs,
        # or once its peak memory passes this many MB, so a leaking job cannot grow forever.
        "JOB_PROCESS_MAX_JOBS": _int(env, "JOB_PROCESS_MAX_JOBS", 1000),
        "JOB_PROCESS_MAX_MEMORY_MB": _int(env, "JOB_PROCESS_MAX_MEMORY_MB", 1024),
    }
