"""Per-client quotas on submitting jobs, sized for a public form: what one client (client_identity.py)
may have queued at once, and spend per hour in CPU and in bytes stored.

- ``QUOTA_ACTIVE_JOBS``: jobs queued, scheduled, waiting for a concurrency slot or running at once;
- ``QUOTA_CPU_SECONDS_PER_HOUR``: the declared CPU cost of its jobs (a task's ``cpu_cost``), over
  the last hour;
- ``QUOTA_BYTES_PER_HOUR``: what its jobs store in Redis (their arguments, plus the task's declared
  ``stored_bytes`` for the result), over the last hour; one job's arguments are also capped at
  ``MAX_ARGS_BYTES`` (413).

A submission over a quota is answered 429, naming the limit and its setting, with ``Retry-After``
(when the oldest charge leaves the hour, or a few seconds for jobs queued at once), and nothing is
enqueued; it is logged, and counted in ``offload_quota_refusals`` (metrics.py). The operator is
not limited. All the bookkeeping is one Lua script, one round trip per
submission, atomic: two submissions at once cannot both take the last place. Its keys expire by
themselves (``offload:quota:<kind>:<client>``).
"""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
from dataclasses import dataclass
from typing import NoReturn

from flask import abort, current_app
from pydantic import BaseModel

from offload import metrics
from offload.registry import Access, Task
from offload.state import get_redis
from offload.web.access import visitor_access
from offload.web.client_identity import client_key
from offload.web.errors import error_response

log = logging.getLogger("offload.quotas")

KEY_PREFIX = "offload:quota:"
WINDOW = 3600
"""Seconds over which CPU and bytes are counted (the quotas are per hour)."""
ACTIVE_RETRY_AFTER = 10
"""Seconds a client over its jobs-at-once quota is asked to wait: jobs end at their own pace."""
JOB_OVERHEAD_BYTES = 1024
"""What RQ keeps per job besides its arguments and result (its hash, registry entries)."""
PENDING_SECONDS = 60
"""A reserved place whose job has not been written yet counts as queued this long."""

# KEYS: active, cpu charges, cpu total, bytes charges, bytes total, refusals counted (metrics).
# ARGV: now, job id, cpu cost, bytes cost, max active, max cpu, max bytes, window, job key prefix,
# active key's ttl, pending seconds. Returns {"ok"} or {limit, used, retry_after}. Each hour's total is kept beside its
# charges, so a submission costs O(1) amortized (the active set never holds more than its limit).
CHARGE_SCRIPT = """
local now, job_id = tonumber(ARGV[1]), ARGV[2]
local cpu, bytes = tonumber(ARGV[3]), tonumber(ARGV[4])
local max_active, max_cpu, max_bytes = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local window, job_prefix, ttl, pending = tonumber(ARGV[8]), ARGV[9], tonumber(ARGV[10]), tonumber(ARGV[11])
-- Every state a job can leave by itself counts (queued, scheduled, deferred, started, and RQ's
-- rate_limited: waiting for a concurrency slot); only the ended ones free a place.
local ended = {finished = true, failed = true, stopped = true, canceled = true}

if max_active > 0 then
  local active = 0
  local members = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
  for i = 1, #members, 2 do
    local status = redis.call('HGET', job_prefix .. members[i], 'status')
    if (status and not ended[status]) or (not status and now - tonumber(members[i + 1]) < pending) then
      active = active + 1
    else
      redis.call('ZREM', KEYS[1], members[i])
    end
  end
  if active >= max_active then
    redis.call('HINCRBY', KEYS[6], 'active', 1)
    return {'active', tostring(active), '0'}
  end
end

-- Charges are members "<job id>:<amount>", scored by when they were made.
local function amount_of(member)
  return tonumber(string.match(member, ':([^:]+)$'))
end

local function over(key, total_key, amount, limit, name)
  if limit <= 0 or amount <= 0 then return nil end
  local used = tonumber(redis.call('GET', total_key) or '0')
  local expired = redis.call('ZRANGEBYSCORE', key, '-inf', now - window)
  if #expired > 0 then
    for i = 1, #expired do used = used - amount_of(expired[i]) end
    if used < 0.001 then used = 0 end
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
    redis.call('SET', total_key, tostring(used), 'EX', window)
  end
  if used + amount <= limit then return nil end
  local charges = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
  local freed, retry = 0, window
  for i = 1, #charges, 2 do
    freed = freed + amount_of(charges[i])
    if used - freed + amount <= limit then
      retry = tonumber(charges[i + 1]) + window - now
      break
    end
  end
  return {name, tostring(used), tostring(retry)}
end

local refused = over(KEYS[2], KEYS[3], cpu, max_cpu, 'cpu') or over(KEYS[4], KEYS[5], bytes, max_bytes, 'bytes')
if refused then
  redis.call('HINCRBY', KEYS[6], refused[1], 1)
  return refused
end

if max_active > 0 then
  redis.call('ZADD', KEYS[1], now, job_id)
  redis.call('EXPIRE', KEYS[1], ttl)
end
local function add(key, total_key, amount, text)
  redis.call('ZADD', key, now, job_id .. ':' .. text)
  redis.call('INCRBYFLOAT', total_key, text)
  redis.call('EXPIRE', key, window)
  redis.call('EXPIRE', total_key, window)
end
if max_cpu > 0 and cpu > 0 then add(KEYS[2], KEYS[3], cpu, ARGV[3]) end
if max_bytes > 0 and bytes > 0 then add(KEYS[4], KEYS[5], bytes, ARGV[4]) end
return {'ok'}
"""


@dataclass(frozen=True)
class Quota:
    """One quota: its setting, and how a refusal names it."""

    setting: str
    describe: str  # "{limit}" and "{used}" are filled in


QUOTAS = {
    "active": Quota("OFFLOAD_QUOTA_ACTIVE_JOBS", "You already have {used} jobs queued or running (at most {limit})."),
    "cpu": Quota(
        "OFFLOAD_QUOTA_CPU_SECONDS_PER_HOUR",
        "This job would take your CPU time past {limit} s per hour (used: {used} s).",
    ),
    "bytes": Quota(
        "OFFLOAD_QUOTA_BYTES_PER_HOUR",
        "This job would take what your jobs store past {limit} bytes per hour (used: {used}).",
    ),
}


def args_bytes(params: BaseModel) -> int:
    """Return the size in bytes of ``params`` as a job stores them (JSON)."""
    return len(json.dumps(params.model_dump(mode="json")).encode())


def charge(task: Task, params: BaseModel) -> str:
    """Charge a job of ``task`` with ``params`` to this request's client and return the id the job
    must be given; refuse with 413 (arguments too large) or 429 (a quota reached) instead."""
    config = current_app.config
    size = args_bytes(params)
    if size > config["OFFLOAD_MAX_ARGS_BYTES"]:
        limit = config["OFFLOAD_MAX_ARGS_BYTES"]
        message = f"The parameters take {size} bytes as JSON; at most {limit} are accepted (OFFLOAD_MAX_ARGS_BYTES)."
        # Not werkzeug's 413, whose handler speaks of the request body's size.
        abort(error_response(413, message, limit="OFFLOAD_MAX_ARGS_BYTES"))
    job_id = str(uuid.uuid4())
    if visitor_access() is Access.OPERATOR:
        return job_id
    client = client_key()
    cpu = round(task.job_cpu_seconds(params), 3)
    stored = size + task.stored_bytes + JOB_OVERHEAD_BYTES
    limits = [config[quota.setting] for quota in QUOTAS.values()]
    if not any(limits):
        return job_id
    keys = [f"{KEY_PREFIX}{name}:{client}" for name in ("active", "cpu", "cpu:total", "bytes", "bytes:total")]
    keys.append(metrics.QUOTA_REFUSALS_KEY)
    pending_ttl = max(WINDOW, config["OFFLOAD_JOB_TTL"])
    args = [time.time(), job_id, cpu, stored, *limits, WINDOW, "rq:job:", pending_ttl, PENDING_SECONDS]
    # EVALSHA: the script's text travels once per connection, then only its hash.
    answer = get_redis().register_script(CHARGE_SCRIPT)(keys=keys, args=args)
    kind = answer[0].decode() if isinstance(answer[0], bytes) else str(answer[0])
    if kind == "ok":
        return job_id
    used, retry_after = (float(value) for value in answer[1:])
    refuse(kind, used, retry_after)


def refuse(kind: str, used: float, retry_after: float) -> NoReturn:
    """Answer 429 naming the quota ``kind`` and its setting, with Retry-After; nothing was enqueued."""
    quota = QUOTAS[kind]
    limit = current_app.config[quota.setting]
    wait = ACTIVE_RETRY_AFTER if kind == "active" else max(1, math.ceil(retry_after))
    log.warning("Submission refused: client %s reached %s=%s (used %s)", client_key(), quota.setting, limit, used)
    message = (
        quota.describe.format(limit=limit, used=round(used, 1) if kind == "cpu" else int(used))
        + f" Limit: {quota.setting}={limit}. Nothing was started; try again in {wait} s."
    )
    response = error_response(429, message, limit=quota.setting, retry_after=wait)
    response.headers["Retry-After"] = str(wait)
    abort(response)
