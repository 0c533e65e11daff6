"""Redis hygiene: can the Redis that holds the jobs lose them? Said loudly, at start and on a schedule.

Two settings of the server decide whether an accepted job survives, and RQ checks neither:

- ``maxmemory-policy``: anything but ``noeviction`` lets Redis delete keys under memory pressure,
  job hashes and queue entries included: jobs vanish (404) or never run;
- persistence: with neither AOF (``appendonly yes``) nor RDB save points, a restarted Redis comes
  back empty: queued jobs, results and the workers' registrations are gone.

:func:`inspect` reads both with ``CONFIG GET``, or from ``INFO`` where a managed Redis (Upstash,
some Valkey hosts) refuses ``CONFIG``; what neither tells is "unknown", never a failure.
:class:`Watch` checks one Redis for one process (every web process, every worker): it logs each
problem as an ERROR naming what to change, and notices when Redis lost its data (the epoch key
Offload writes is gone), which it counts in Redis for the operators' banner and ``/metrics``.
``OFFLOAD_REQUIRE_SAFE_REDIS`` (on in production) refuses to start on an evicting policy.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import click
from flask import Flask
from redis import Redis
from redis.exceptions import RedisError, ResponseError

from offload import settings
from offload.connection import connect, redact

log = logging.getLogger("offload.redis_hygiene")

EXTENSION_KEY = "offload_redis_hygiene"
HEALTH_CLIENT_KEY = "offload_health_redis"
EPOCH_KEY = "offload:redis:epoch"
"""Written once into an empty Redis; gone again only when Redis lost its data."""
LOSSES_KEY = "offload:redis:losses"
"""Hash: ``count`` of data losses noticed, ``last_at`` (ISO time) of the latest; kept :data:`LOSSES_KEPT` s."""
LOSSES_KEPT = 7 * 24 * 3600

SAFE_POLICY = "noeviction"
FIX_EVICTION = (
    "set maxmemory-policy noeviction (redis.conf, `CONFIG SET maxmemory-policy noeviction`, "
    "or on Fly `fly redis create --disable-eviction`)"
)
FIX_PERSISTENCE = "turn on AOF: appendonly yes (redis.conf or `CONFIG SET appendonly yes`)"


class UnsafeRedis(click.ClickException):
    """Redis evicts keys and ``OFFLOAD_REQUIRE_SAFE_REDIS`` is on: the one line says what to change.

    A click error, so that ``flask --app yourapp offload worker`` (or any ``flask`` command), which
    builds the app before it finds the command, says that line and exits 1, without a traceback."""


@dataclass(frozen=True)
class Hygiene:
    """What one look at Redis found; ``None`` where the server would not tell."""

    url: str
    policy: str | None
    aof: bool | None
    save_points: str | None
    losses: int = 0
    last_loss_at: str | None = None
    checked_at: float = field(default_factory=time.time)

    @property
    def evicting(self) -> bool | None:
        """True when Redis may delete keys under memory pressure."""
        return None if self.policy is None else self.policy != SAFE_POLICY

    @property
    def persistent(self) -> bool | None:
        """True when a restarted Redis comes back with its data (AOF or RDB save points)."""
        if self.aof or self.save_points:
            return True
        if self.aof is None or self.save_points is None:
            return None
        return False

    def problems(self, named: bool = True) -> list[str]:
        """One line per way this Redis can lose jobs, each naming what to change; ``named=False``
        leaves out its URL (for anonymous readers: /healthz)."""
        redis = f"Redis at {self.url}" if named else "Redis"
        found = []
        if self.evicting:
            found.append(
                f"{redis} has maxmemory-policy {self.policy}: under memory pressure it deletes "
                f"job keys, and jobs vanish or never run; {FIX_EVICTION}"
            )
        if self.persistent is False:
            found.append(
                f"{redis} has no persistence (appendonly no, no save points): a restart loses every "
                f"queued job, result and worker registration; {FIX_PERSISTENCE}"
            )
        if self.losses:
            found.append(
                f"{redis} lost its data {self.losses} time(s), last at {self.last_loss_at}: jobs "
                "accepted before then are gone (restarted without persistence, or keys evicted)"
            )
        return found

    def unknowns(self) -> list[str]:
        """What could not be read (a managed Redis that refuses CONFIG)."""
        found = []
        if self.evicting is None:
            found.append("eviction policy unknown (Redis refuses CONFIG GET and INFO memory does not say)")
        if self.persistent is None:
            found.append("persistence unknown (Redis refuses CONFIG GET save; AOF is off): check the host's settings")
        return found


def _config_get(redis: Redis, name: str) -> str | None:
    try:
        value = redis.config_get(name).get(name)
    except ResponseError:  # CONFIG disabled or renamed (managed Redis), or an ACL refuses it
        return None
    return None if value is None else str(value)


def _info(redis: Redis, section: str) -> dict[str, Any]:
    try:
        return redis.info(section)
    except ResponseError:
        return {}


def inspect(redis: Redis, url: str = "") -> Hygiene:
    """Read Redis's eviction policy, persistence and recorded data losses; RedisError when it does not answer."""
    policy = _config_get(redis, "maxmemory-policy")
    if policy is None:
        policy = _info(redis, "memory").get("maxmemory_policy")
    appendonly = _config_get(redis, "appendonly")
    aof: bool | None = appendonly == "yes" if appendonly is not None else None
    if aof is None:
        enabled = _info(redis, "persistence").get("aof_enabled")
        aof = None if enabled is None else bool(int(enabled))
    save_points = _config_get(redis, "save")
    losses = {k.decode(): v.decode() for k, v in redis.hgetall(LOSSES_KEY).items()}
    return Hygiene(
        url=url,
        policy=None if policy is None else str(policy),
        aof=aof,
        save_points=None if save_points is None else save_points.strip(),
        losses=int(losses.get("count", 0)),
        last_loss_at=losses.get("last_at"),
    )


def follow_epoch(redis: Redis, seen: str | None) -> tuple[str, bool]:
    """Return Redis's epoch and whether Redis lost its data since this process saw epoch ``seen``.

    The first process to find the epoch gone writes a new one and counts the loss, once.
    """
    current = redis.get(EPOCH_KEY)
    if current is not None:
        return current.decode(), seen is not None and current.decode() != seen
    fresh = f"{datetime.now(UTC).isoformat(timespec='seconds')}/{uuid.uuid4().hex[:8]}"
    if redis.set(EPOCH_KEY, fresh, nx=True):
        if seen is not None:
            with redis.pipeline() as pipe:
                pipe.hincrby(LOSSES_KEY, "count", 1)
                pipe.hset(LOSSES_KEY, "last_at", datetime.now(UTC).isoformat(timespec="seconds"))
                pipe.expire(LOSSES_KEY, LOSSES_KEPT)  # the banner says it for a week after the last one
                pipe.execute()
        return fresh, seen is not None
    current = redis.get(EPOCH_KEY)
    return (current.decode() if current else fresh), seen is not None


class Watch:
    """Checks one Redis for this process, at most every ``interval`` s, and says what it finds."""

    def __init__(self, redis: Redis, url: str, interval: float, where: str) -> None:
        self.redis = redis
        self.url = redact(url)
        self.interval = interval
        self.where = where
        self.latest: Hygiene | None = None
        self.checked_at: float | None = None
        self.epoch: str | None = None

    def notice_loss(self) -> bool:
        """True (and an ERROR logged) when Redis lost its data since this process last looked: one GET."""
        self.epoch, lost = follow_epoch(self.redis, self.epoch)
        if lost:
            log.error(
                "%s: Redis at %s lost its data (restarted without persistence, or keys evicted): jobs accepted "
                "before now are gone, and workers register again; %s",
                self.where,
                self.url,
                FIX_PERSISTENCE,
            )
        return lost

    def look(self) -> Hygiene:
        """What Redis says now (a data loss noticed is logged at once); raises RedisError when it does not answer."""
        self.notice_loss()
        hygiene = inspect(self.redis, self.url)
        if self.latest is None:
            for unknown in hygiene.unknowns():
                log.warning("%s: Redis at %s: %s", self.where, self.url, unknown)
        self.latest = hygiene
        return hygiene

    def check(self) -> Hygiene:
        """Look now and log every problem as an ERROR naming what to change; return what was found."""
        hygiene = self.look()
        for problem in hygiene.problems():
            log.error("%s: %s", self.where, problem)
        self.checked_at = hygiene.checked_at
        return hygiene

    def look_now(self) -> Hygiene | None:
        """What Redis says now, for the operators' banner; the latest findings while Redis does not answer."""
        try:
            return self.look()
        except RedisError:
            return self.latest

    def check_if_due(self) -> Hygiene | None:
        """The latest findings, looked again at if older than the interval or if Redis lost its data
        (checked every call: one GET); None while Redis does not answer."""
        try:
            if self.checked_at is not None and time.time() - self.checked_at < self.interval and not self.notice_loss():
                return self.latest
            return self.check()
        except RedisError as exc:
            log.warning("%s: Redis hygiene not checked, Redis does not answer (%s)", self.where, exc)
            return self.latest


def refuse_if_unsafe(hygiene: Hygiene, config: dict[str, Any] | Any) -> None:
    """Raise :class:`UnsafeRedis` (one line) when Redis evicts and ``OFFLOAD_REQUIRE_SAFE_REDIS`` is on."""
    if hygiene.evicting and settings.require_safe_redis(config):
        raise UnsafeRedis(
            f"refusing to start: Redis at {hygiene.url} has maxmemory-policy {hygiene.policy}, which deletes jobs "
            f"under memory pressure; {FIX_EVICTION}, or set OFFLOAD_REQUIRE_SAFE_REDIS=off to run anyway"
        )


def check_at_start(config: Any, where: str) -> Hygiene | None:
    """Check Redis once for a process about to start; None when Redis does not answer (it is checked later)."""
    redis = connect(config)
    watch = Watch(redis, config["OFFLOAD_REDIS_URL"], config["OFFLOAD_REDIS_HYGIENE_INTERVAL"], where)
    try:
        hygiene = watch.check()
    except RedisError:
        return None
    finally:
        redis.close()  # gunicorn's master: no connection of it left for the web processes it forks
    refuse_if_unsafe(hygiene, config)
    return hygiene


def init_app(app: Flask, redis: Redis) -> None:
    """Check ``app``'s Redis now (refusing an evicting one when required) and keep a :class:`Watch`
    for the operators' banner, /healthz and the worker's maintenance; a fast client for /healthz."""
    config = app.config
    watch = Watch(redis, config["OFFLOAD_REDIS_URL"], config["OFFLOAD_REDIS_HYGIENE_INTERVAL"], app.name)
    try:
        hygiene = watch.check()
    except RedisError:
        pass  # unreachable: the web answers 503 and the check runs again once Redis answers
    else:
        refuse_if_unsafe(hygiene, config)
    app.extensions[EXTENSION_KEY] = watch
    app.extensions[HEALTH_CLIENT_KEY] = connect(config, timeout=config["OFFLOAD_REDIS_QUICK_TIMEOUT"])
    app.context_processor(lambda: {"redis_hygiene": watch.look_now})


def get_watch(app: Flask) -> Watch:
    """Return ``app``'s :class:`Watch` (set up by ``Offload.init_app``)."""
    return app.extensions[EXTENSION_KEY]


def get_health_client(app: Flask) -> Redis:
    """Return ``app``'s Redis client with the short health-check timeouts."""
    return app.extensions[HEALTH_CLIENT_KEY]
