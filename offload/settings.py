"""Offload's settings: every knob, its default, and where it is read from.

An app configures Offload with ``OFFLOAD_``-prefixed keys in ``app.config``
(``OFFLOAD_REDIS_URL``, ``OFFLOAD_QUEUES``, ...); :data:`DEFAULTS` below lists each one
without its prefix, with a default that works on a laptop, and ``Offload.init_app`` fills in
whatever the app left unset (:func:`apply_defaults`). An app that takes its configuration from
the environment (the reference app, on Fly: ``fly secrets set``) reads it with
:func:`from_environ`, which accepts each name with or without the prefix (``REDIS_URL`` or
``OFFLOAD_REDIS_URL``).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Collection, Mapping, MutableMapping
from typing import Any
from urllib.parse import urlsplit

import limits

PREFIX = "OFFLOAD_"

REDIS_SCHEMES = ("redis", "rediss", "unix")
"""What ``REDIS_URL`` may start with: the URLs redis-py's ``Redis.from_url`` reads."""

APP_ENV = "OFFLOAD_APP"
"""Environment variable naming the Flask app a worker runs jobs for, in ``flask --app``'s notation
(``module``, ``module:app``, ``module:create_app()``): read by ``rq worker -w offload.worker.OffloadWorker``."""

DEVELOPMENT_SECRET_KEY = "offload-development-only-secret-key"  # noqa: S105 - refused outside development
"""Used when ``SECRET_KEY`` is unset and ``OFFLOAD_ENV=development``; refused elsewhere."""

SECRET_KEY_MIN_LENGTH = 32
"""Fewest characters of a ``SECRET_KEY`` outside development (``secrets.token_hex(16)``). Whoever
knows the key signs their own session cookies (a submitter's job ids, CSRF tokens), so a short
or guessable one is refused rather than trusted."""

PUBLISHED_SECRET_KEYS = frozenset({DEVELOPMENT_SECRET_KEY, "change-me-compose-only-not-a-real-secret"})
"""Keys this repository has printed (the development default; docker-compose.yml's old fallback,
which shipped with ``OFFLOAD_ENV=production``): known to anyone who read it, so refused outside
development whatever their length."""

MAKE_SECRET_KEY = 'python -c "import secrets; print(secrets.token_hex(32))"'  # noqa: S105 - a command
"""The command a refusal of ``SECRET_KEY`` names, to make a good one."""


class SettingsError(RuntimeError):
    """A setting is missing or malformed; the message names it."""


DEFAULTS: dict[str, Any] = {
    # "development" allows laptop defaults; anything else ("production") demands real secrets.
    "ENV": "development",
    # redis:// or rediss:// (TLS); Valkey speaks the same protocol.
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    # Workers listen to these in this order, so earlier queues always win.
    "QUEUES": ["high", "default", "low"],
    # Tests of a host app only: a submitted job runs at once, inside the submit, on RQ's
    # synchronous queues (no worker needed); its job and result are stored as usual. Refused in
    # production.
    "RUN_JOBS_INLINE": False,
    # Seconds a finished job and its result are kept (RQ's default is 500).
    "RESULT_TTL": 24 * 3600,
    # What a finished job keeps in Redis for RESULT_TTL: "compact" (~1.5 KB for a no-op job:
    # its results stream rewritten at its size, empty fields dropped) or "rq" (RQ's ~5.5 KB;
    # the stream keeps the 4 KB node Redis preallocates). Either reads the same with RQ's API.
    "FINISHED_JOB_FOOTPRINT": "compact",
    # Seconds a failed job and its traceback are kept (RQ's default is a year).
    "FAILURE_TTL": 7 * 24 * 3600,
    # Seconds a job may wait in a queue before it is dropped unstarted .
    "JOB_TTL": 7 * 24 * 3600,
    # Seconds to wait for Redis to accept a connection / answer a command. A timeout is not
    # retried, so a frozen Redis gets the web's 503 within about one socket timeout (SECURITY.md).
    "REDIS_CONNECT_TIMEOUT": 1.0,
    "REDIS_SOCKET_TIMEOUT": 1.0,
    # Seconds quick checks wait for Redis (/healthz's PING, the rate limits' counters): /healthz
    # answers within 1 s either way, far under Fly's 5 s check timeout.
    "REDIS_QUICK_TIMEOUT": 0.3,
    # --- Redis hygiene (redis_hygiene.py): can this Redis lose jobs?
    # Refuse to start web and worker on an evicting maxmemory-policy: "on", "off", or empty for
    # "on when ENV is production".
    "REQUIRE_SAFE_REDIS": "",
    # Seconds between two checks of Redis's eviction policy and persistence (and whether it
    # lost its data) by each web process and worker.
    "REDIS_HYGIENE_INTERVAL": 300,
    # --- faults: how soon a dead worker's job is noticed, and what happens to it
    # Seconds between a busy worker's heartbeats (RQ's job monitoring interval, 30 there).
    # A job whose worker misses two of them in a row counts as abandoned.
    "WORKER_HEARTBEAT_INTERVAL": 10,
    # Jobs one worker runs at once, each in a slot of its own (a worker with its job process:
    # offload/worker/slots.py); 0: one per CPU on a Fly Machine, 1 elsewhere. I/O-bound tasks
    # (call_api, mail) want more slots than CPUs. `flask offload worker --slots N` overrides it.
    "WORKER_SLOTS": 0,
    # Seconds between a worker's maintenance passes, which find abandoned jobs (RQ: 600).
    "WORKER_MAINTENANCE_INTERVAL": 20,
    # Seconds between RQ's full maintenance passes (every registry of every queue cleaned);
    # between them a pass only looks for abandoned jobs, one round trip (worker.py).
    "WORKER_FULL_MAINTENANCE_INTERVAL": 600,
    # Extra runs a job gets when its worker or work horse dies under it, on top of its
    # task's own Retry (which a crash uses first). 0: such a job fails at once.
    "CRASH_RERUNS": 1,
    # --- deploy (docs/deploy.md) ---
    # Queues no stock worker listens to: a job sent to one starts an `rq worker --burst`
    # for it (ondemand.py) that exits when the queue is empty.
    "ONDEMAND_QUEUES": ["ondemand"],
    # "local" runs that worker as a subprocess; "fly" starts a Fly Machine per worker.
    "ONDEMAND_BACKEND": "local",
    # Most on-demand workers draining one queue at once.
    "ONDEMAND_MAX_WORKERS": 2,
    # The Machines API: public address, or http://_api.internal:4280 inside Fly; a deploy token.
    "FLY_API_URL": "https://api.machines.dev",
    "FLY_API_TOKEN": "",
    # Set by Fly on every Machine: this app's name, the image it runs, its region, its own id.
    "FLY_APP_NAME": "",
    "FLY_IMAGE_REF": "",
    "FLY_REGION": "",
    "FLY_MACHINE_ID": "",
    # Size of an on-demand worker Machine.
    "ONDEMAND_VM_CPUS": 1,
    "ONDEMAND_VM_MEMORY_MB": 1024,
    # Bearer token for GET /metrics on the public port; unset, /metrics answers 404.
    "METRICS_TOKEN": "",
    # The operator who may open /rq and the operator pages; both empty: those pages are off.
    "OPERATOR_USERNAME": "",
    # A werkzeug password hash (scrypt), made by `python -m offload.web.auth`; never the password itself.
    "OPERATOR_PASSWORD_HASH": "",
    # Hours an operator login lasts before the password is asked again.
    "OPERATOR_SESSION_HOURS": 12,
    # --- workloads: files jobs make, the third-party API, the PDF font ---
    # Largest file (artifact) a job may store next to its result, in bytes; it lives in Redis.
    "ARTIFACT_MAX_BYTES": 5 * 1024 * 1024,
    # A TrueType font with wide Unicode coverage for PDF reports (Debian: fonts-dejavu-core);
    # when the file is missing, reports fall back to Helvetica and Latin-1 text.
    "REPORT_FONT": "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    # The only host call_api talks to: users give a path, never a host (no SSRF).
    "THIRD_PARTY_URL": "https://httpbin.org",
    # Sent as "Authorization: Bearer ..." when set; a secret, so only from the environment.
    "THIRD_PARTY_TOKEN": "",
    # Seconds to connect / to wait for each read before the attempt counts as failed.
    "THIRD_PARTY_CONNECT_TIMEOUT": 3,
    "THIRD_PARTY_READ_TIMEOUT": 10,
    # Most call_api jobs queued or running at once, across all workers (RQ RateLimit).
    "THIRD_PARTY_CONCURRENCY": 4,
    # Exponential backoff between attempts: base * 2**n seconds, jittered, at most cap.
    "THIRD_PARTY_BACKOFF_BASE": 2,
    "THIRD_PARTY_BACKOFF_CAP": 120,
    # A Retry-After longer than this fails the job instead of parking it for that long.
    "THIRD_PARTY_RETRY_AFTER_MAX": 600,
    # --- newsletter (newsletter.py, mailer.py)
    # smtp:// (plain), smtp+starttls:// (STARTTLS, required) or smtps:// (implicit TLS);
    # credentials go in the URL (smtps://user:password@host:465) and are never logged.
    "SMTP_URL": "smtp://127.0.0.1:1025",
    # Seconds to connect to the SMTP server and to wait for each of its replies.
    "SMTP_TIMEOUT": 30,
    # A PEM file of CA certificates to trust for SMTP TLS, instead of the system's (empty: the system's).
    "SMTP_CA_FILE": "",
    # The From header and envelope sender of newsletters.
    "NEWSLETTER_FROM": "Offload <newsletter@offload.invalid>",
    # Most distinct recipients one newsletter may have.
    "NEWSLETTER_MAX_RECIPIENTS": 10_000,
    # Seconds a batch, its delivery records and failures are kept after its send time. A job of
    # the batch that runs later (requeued by hand) finds no batch and fails rather than mail twice.
    "NEWSLETTER_TTL": 14 * 24 * 3600,
    # --- scheduling (scheduling.py)
    # Furthest ahead a job may be scheduled, in seconds.
    "SCHEDULE_MAX_AHEAD": 30 * 24 * 3600,
    # A run_at this many seconds in the past is still accepted (clock skew, slow form); it runs at once.
    "SCHEDULE_PAST_TOLERANCE": 60,
    # --- periodic jobs (periodic.py): seconds between runs, and into each period
    # The nightly cleanup: every day at 03:00 UTC.
    "CLEANUP_EVERY": 24 * 3600,
    "CLEANUP_OFFSET": 3 * 3600,
    # The digest: every hour, on the hour.
    "DIGEST_EVERY": 3600,
    # Where the digest is mailed (through SMTP_URL); empty: it is only stored and shown as the job's result.
    "DIGEST_TO": "",
    # --- web defences (security.py)
    # Proxies in front of the app that set X-Forwarded-For/-Proto (1 on Fly, 0 on a laptop).
    "TRUSTED_PROXY_COUNT": 0,
    # Addresses or networks (CIDR) of those proxies: X-Forwarded-For counts only on requests from
    # them, so a client reaching the web directly cannot choose the address it is limited by.
    "TRUSTED_PROXIES": [],
    # A header in which the proxy in front names the client (it must overwrite what clients send);
    # empty: Fly-Client-IP on Fly (FLY_APP_NAME set), else the peer or X-Forwarded-For above.
    "CLIENT_IP_HEADER": "",
    # Jobs one client (IP address) may submit, in Flask-Limiter's notation.
    "SUBMIT_RATE_LIMIT": "60 per minute",
    # --- per-client quotas (web/quotas.py); the operator is not limited; 0 turns one off.
    # Jobs one client may have queued, scheduled or running at once.
    "QUOTA_ACTIVE_JOBS": 10,
    # Seconds of CPU one client's jobs may be charged per hour (each task declares its cpu_cost).
    "QUOTA_CPU_SECONDS_PER_HOUR": 300,
    # Bytes one client's jobs may store per hour: arguments plus each task's declared stored_bytes.
    "QUOTA_BYTES_PER_HOUR": 32 * 1024 * 1024,
    # Largest arguments (as JSON) one job may have, in bytes; beyond: 413.
    "MAX_ARGS_BYTES": 256 * 1024,
    # A worker's job process (which runs job after job) is replaced after this many jobs,
    # or once its peak memory passes this many MB, so a leaking job cannot grow forever.
    "JOB_PROCESS_MAX_JOBS": 1000,
    "JOB_PROCESS_MAX_MEMORY_MB": 1024,
    # --- which jobs a worker runs (worker/unknown_tasks.py)
    # Seconds a job whose task the worker does not know (an older release during a rolling deploy)
    # keeps being put back for a worker that knows it, before it fails saying no worker does. Its
    # retries are not spent meanwhile; the job's function is never imported by such a worker.
    "UNKNOWN_TASK_GRACE": 600,
    # Modules whose functions workers run as jobs though they are no registered task (the tests set
    # tests.fixtures); empty: a worker runs only registered tasks (and Offload's own callbacks).
    "UNREGISTERED_JOB_MODULES": [],
}
"""Every Offload setting without its ``OFFLOAD_`` prefix, with its default."""


SECRET_SETTINGS = frozenset(
    {"REDIS_URL", "FLY_API_TOKEN", "METRICS_TOKEN", "OPERATOR_USERNAME", "OPERATOR_PASSWORD_HASH", "THIRD_PARTY_TOKEN"}
)
"""Settings that are secrets (docs/deploy.md: ``fly secrets set``), like ``SECRET_KEY``: :func:`to_environ`
never writes them out. Any other setting whose value is a URL with credentials in it (``SMTP_URL``,
``smtps://user:password@host``) is left out the same way."""

_ON = ("1", "true", "yes", "on")
_OFF = ("0", "false", "no", "off")


def require_safe_redis(config: Mapping[str, Any]) -> bool:
    """Whether web and worker refuse to start on a Redis that evicts keys (on in production by default)."""
    value = str(config[key("REQUIRE_SAFE_REDIS")]).strip().lower()
    return value in _ON if value else config[key("ENV")] == "production"


def all_queue_names(config: Mapping[str, Any]) -> list[str]:
    """Every queue the settings declare: the workers' (``QUEUES``), then the on-demand ones."""
    return list(dict.fromkeys([*config["OFFLOAD_QUEUES"], *config["OFFLOAD_ONDEMAND_QUEUES"]]))


def key(name: str) -> str:
    """Return the ``app.config`` key of setting ``name``: ``REDIS_URL`` -> ``OFFLOAD_REDIS_URL``."""
    return PREFIX + name


def _parse(name: str, raw: str) -> Any:
    default = DEFAULTS[name]
    if isinstance(default, bool):
        return raw.strip().lower() in _ON
    if isinstance(default, float):
        try:
            return float(raw)
        except ValueError:
            raise SettingsError(f"{name} must be a number of seconds, got {raw!r}") from None
    if isinstance(default, int):
        try:
            return int(raw)
        except ValueError:
            raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None
    if isinstance(default, list):
        return [item.strip() for item in raw.split(",") if item.strip()]
    return raw.strip() if name.startswith("OPERATOR_") else raw


def from_environ(environ: Mapping[str, str] | None = None, *, secret_key_required: bool = True) -> dict[str, Any]:
    """Return app config read from ``environ``: every Offload setting found there (``NAME`` or
    ``OFFLOAD_NAME``), prefixed, plus the Flask settings a deployed app needs (``SECRET_KEY``,
    ``MAX_CONTENT_LENGTH``, secure session cookies outside development).

    ``secret_key_required=False`` is for readers that are no app (a worker's settings module): a
    host app may set its ``SECRET_KEY`` in code, and is checked when it is loaded."""
    env = os.environ if environ is None else environ
    config: dict[str, Any] = {}
    for name in DEFAULTS:
        names = (key(name),) if name == "ENV" else (key(name), name)
        raw = next((env[n] for n in names if env.get(n, "") != ""), None)
        if raw is not None:
            config[key(name)] = _parse(name, raw)
    offload_env = config.get(key("ENV"), DEFAULTS["ENV"])
    secret_key = env.get("SECRET_KEY", "")
    config["SECRET_KEY"] = secret_key or (DEVELOPMENT_SECRET_KEY if offload_env == "development" else "")
    # Largest request body the web accepts, in bytes (uploads included).
    max_length = env.get("MAX_CONTENT_LENGTH", "")
    try:
        config["MAX_CONTENT_LENGTH"] = int(max_length) if max_length else 2 * 1024 * 1024
    except ValueError:
        raise SettingsError(f"MAX_CONTENT_LENGTH must be a whole number, got {max_length!r}") from None
    # Session cookies: never sent over plain HTTP outside development, never read by scripts,
    # never sent on cross-site requests other than top-level navigation.
    config["SESSION_COOKIE_SECURE"] = offload_env != "development"
    config["SESSION_COOKIE_HTTPONLY"] = True
    config["SESSION_COOKIE_SAMESITE"] = "Lax"
    validate(
        {**{key(name): value for name, value in DEFAULTS.items()}, **config}, secret_key_required=secret_key_required
    )
    return config


def to_environ(config: Mapping[str, Any], leave_out: Collection[str] = ()) -> dict[str, str]:
    """Return the environment from which :func:`from_environ` reads back ``config``'s Offload settings
    (``OFFLOAD_NAME`` -> text), for a process that must run with the same settings: every setting
    ``config`` has, except the secrets (:data:`SECRET_SETTINGS`, URLs with credentials), those named in
    ``leave_out`` and empty ones (which read back as their default)."""
    env: dict[str, str] = {}
    for name in DEFAULTS:
        if name in leave_out or key(name) not in config:
            continue
        value = config[key(name)]
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, list | tuple):
            text = ",".join(str(item) for item in value)
        else:
            text = str(value)
        if text and not is_secret(name, text):
            env[key(name)] = text
    return env


def is_secret(name: str, value: str = "") -> bool:
    """Whether the environment variable ``name`` (with ``value``) holds a secret: ``SECRET_KEY``, a
    secret setting (:data:`SECRET_SETTINGS`, with or without its prefix) or a URL with credentials.
    Secrets reach another process only through its own environment (on Fly, the app's secrets)."""
    return name == "SECRET_KEY" or name.removeprefix(PREFIX) in SECRET_SETTINGS or _holds_credentials(value)


def _holds_credentials(text: str) -> bool:
    try:
        return "@" in urlsplit(text).netloc
    except ValueError:
        return False


def apply_defaults(config: MutableMapping[str, Any]) -> None:
    """Fill in every Offload setting ``config`` lacks with its default, then :func:`validate` it."""
    for name, default in DEFAULTS.items():
        config.setdefault(key(name), list(default) if isinstance(default, list) else default)
    validate(config)


def _check_secret_key(secret_key: Any) -> None:
    """Refuse a production ``SECRET_KEY`` that is unset, published or short, saying how to make one."""
    how = f"make one with: {MAKE_SECRET_KEY}"
    if not secret_key:
        raise SettingsError(f"SECRET_KEY must be set when OFFLOAD_ENV is not 'development'; {how}")
    if secret_key in PUBLISHED_SECRET_KEYS:
        raise SettingsError(f"SECRET_KEY is a placeholder published with Offload, not a secret; {how}")
    if len(secret_key) < SECRET_KEY_MIN_LENGTH:
        raise SettingsError(
            f"SECRET_KEY must be at least {SECRET_KEY_MIN_LENGTH} random characters when OFFLOAD_ENV is not "
            f"'development'; {how}"
        )


def validate(config: Mapping[str, Any], *, secret_key_required: bool = True) -> None:
    """Raise :class:`SettingsError` naming the first setting of ``config`` that is malformed."""
    if secret_key_required and config[key("ENV")] != "development":
        _check_secret_key(config.get("SECRET_KEY"))
    if config[key("RUN_JOBS_INLINE")] and config[key("ENV")] == "production":
        raise SettingsError("RUN_JOBS_INLINE is for tests: it runs every job inside the request that submits it")
    backend = config[key("ONDEMAND_BACKEND")]
    if backend not in ("local", "fly"):
        raise SettingsError(f"ONDEMAND_BACKEND must be 'local' or 'fly', got {backend!r}")
    footprint = config[key("FINISHED_JOB_FOOTPRINT")]
    if footprint not in ("compact", "rq"):
        raise SettingsError(f"FINISHED_JOB_FOOTPRINT must be 'compact' or 'rq', got {footprint!r}")
    if isinstance(config[key("WORKER_SLOTS")], int) and config[key("WORKER_SLOTS")] < 0:
        raise SettingsError(f"WORKER_SLOTS must be 0 (one per CPU) or more, got {config[key('WORKER_SLOTS')]!r}")
    username = config[key("OPERATOR_USERNAME")]
    password_hash = config[key("OPERATOR_PASSWORD_HASH")]
    if bool(username) != bool(password_hash):
        raise SettingsError("set both OPERATOR_USERNAME and OPERATOR_PASSWORD_HASH, or neither")
    if password_hash and (password_hash.count("$") != 2 or password_hash.split(":")[0] not in ("scrypt", "pbkdf2")):
        raise SettingsError(
            "OPERATOR_PASSWORD_HASH must be a hash made by `python -m offload.web.auth` (method$salt$hash), "
            "not a password"
        )
    if str(config[key("REQUIRE_SAFE_REDIS")]).strip().lower() not in ("", *_ON, *_OFF):
        raise SettingsError(f"REQUIRE_SAFE_REDIS must be on or off, got {config[key('REQUIRE_SAFE_REDIS')]!r}")
    if "@" in urlsplit(str(config[key("THIRD_PARTY_URL")])).netloc:
        # Not echoed: the part before "@" is a credential.
        raise SettingsError(
            "THIRD_PARTY_URL must not hold credentials (user:password@host): the URL is logged with every "
            "request and shows in errors; give the API's token in THIRD_PARTY_TOKEN (sent as a Bearer token)"
        )
    for name in ("RESULT_TTL", "FAILURE_TTL", "JOB_TTL"):
        value = config[key(name)]
        if isinstance(value, int) and value <= 0:
            raise SettingsError(f"{name} must be a number of seconds above 0, got {value!r}")
    try:
        limits.parse_many(str(config[key("SUBMIT_RATE_LIMIT")]))
    except ValueError:
        raise SettingsError(
            f"SUBMIT_RATE_LIMIT must be a rate such as '60 per minute' or '10/second', "
            f"got {config[key('SUBMIT_RATE_LIMIT')]!r}"
        ) from None
    redis_url = str(config[key("REDIS_URL")])
    if urlsplit(redis_url).scheme not in REDIS_SCHEMES:
        raise SettingsError(
            f"REDIS_URL must start with {', '.join(scheme + '://' for scheme in REDIS_SCHEMES)}, got {redis_url[:40]!r}"
        )
    for entry in config[key("TRUSTED_PROXIES")]:
        try:
            ipaddress.ip_network(str(entry).strip(), strict=False)
        except ValueError:
            raise SettingsError(f"TRUSTED_PROXIES: {entry!r} is not an address or network (CIDR)") from None
    for name, default in DEFAULTS.items():
        value = config[key(name)]
        if isinstance(default, int) and not isinstance(default, bool) and not isinstance(value, int):
            raise SettingsError(f"{key(name)} must be a whole number, got {value!r}")
        if isinstance(default, float) and (isinstance(value, bool) or not isinstance(value, int | float) or value <= 0):
            raise SettingsError(f"{key(name)} must be a positive number of seconds, got {value!r}")
        if isinstance(default, list) and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise SettingsError(f"{key(name)} must be a list of names, got {value!r}")
