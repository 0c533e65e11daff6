"""The worker's two Lua scripts: take the next job, and commit a job's end if nothing depends on it.

Registered once per connection (redis-py's ``Script``: ``EVALSHA``, loaded on the first
``NOSCRIPT``); Redis, Valkey and managed Redis such as Upstash run them. Both keep RQ's data
exactly as RQ writes it: the first does what RQ's ``dequeue_any`` does (``LPOP`` in queue order,
or ``LMOVE`` into the intermediate queue for a single queue) plus the ``HGETALL`` of the job, and
notes the job under the worker's name, so that a take whose reply is lost (a job popped that no
worker knows it has: RQ loses it) is handed over again by the next take, and
the second runs the very commands RQ's end-of-execution transaction would send, which the worker
builds with RQ's own methods (roundtrips.py). Why scripts rather than pipelines: a pipeline
cannot pop a job and read its hash in one round trip, and RQ's end transaction needs a ``WATCH``
and an ``SMEMBERS`` of the job's dependents before its ``MULTI`` (three round trips) that a
script replaces with one ``EXISTS`` inside the same atomic step.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from redis import Redis
from redis.commands.core import Script

TAKE_JOB = """
-- KEYS: the suspension flag, the worker's "taken" key, then the queues in order. ARGV[1]: the
-- intermediate queue's key ("" for none), ARGV[2]: the job keys' prefix, ARGV[3]: the id of the
-- job the worker last received ("" for none), ARGV[4]: the "taken" key's TTL in seconds.
-- Returns {"suspended"}, nil (all empty), or {queue key, job id, job hash...} (the hash empty
-- when the job is gone).
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {'suspended'}
end
-- A job this worker (or an earlier one of its name) took whose reply never reached it (Redis
-- restarted, the connection broke, the worker was killed): popped from its queue, it is handed
-- over again while it has not started and is not back in its queue (put back, or requeued).
local held = redis.call('GET', KEYS[2])
if held then
  local space = string.find(held, ' ', 1, true)
  local id, queue_key = string.sub(held, 1, space - 1), string.sub(held, space + 1)
  if id ~= ARGV[3] and redis.call('HGET', ARGV[2] .. id, 'status') == 'queued'
      and redis.pcall('LPOS', queue_key, id) == false then
    local reply = {queue_key, id}
    local hash = redis.call('HGETALL', ARGV[2] .. id)
    for j = 1, #hash do
      reply[j + 2] = hash[j]
    end
    return reply
  end
end
for i = 3, #KEYS do
  local id
  if ARGV[1] ~= '' then
    id = redis.call('LMOVE', KEYS[i], ARGV[1], 'LEFT', 'RIGHT')
  else
    id = redis.call('LPOP', KEYS[i])
  end
  if id then
    redis.call('SET', KEYS[2], id .. ' ' .. KEYS[i], 'EX', ARGV[4])
    local reply = {KEYS[i], id}
    local hash = redis.call('HGETALL', ARGV[2] .. id)
    for j = 1, #hash do
      reply[j + 2] = hash[j]
    end
    return reply
  end
end
return nil
"""

COMMIT_IF_NO_DEPENDENTS = """
-- KEYS[1]: the job's dependents set; KEYS[2]: the execution's key, which the commands delete;
-- KEYS[3] (optional): the job's results stream, to compact. ARGV[1]: the stream's TTL in ms
-- ("" for none), then commands, each as its argument count then its arguments. Runs them all
-- and returns 1, or runs none and returns 0 if the job has dependents (RQ's own transaction then
-- moves them, under its WATCH) or 2 if the execution has ended (a resent script: it ran already).
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  return 2
end
local i = 2
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  redis.call(unpack(ARGV, i + 1, i + n))
  i = i + n + 1
end
if KEYS[3] then
  -- A new stream preallocates a 4 KB node for entries to come; RQ's results stream of a job
  -- rarely gets a second. Written anew from its serialized form it takes what it holds (~0.9 KB).
  local dump = redis.pcall('DUMP', KEYS[3])
  if type(dump) == 'string' then
    redis.pcall('RESTORE', KEYS[3], ARGV[1], dump, 'REPLACE')
  end
end
return 1
"""

_REGISTERED = "_offload_scripts"


def _script(redis: Redis, source: str) -> Script:
    """Return ``source`` registered on ``redis`` (once per client: its SHA is kept)."""
    scripts: dict[str, Script] = redis.__dict__.setdefault(_REGISTERED, {})
    if source not in scripts:
        scripts[source] = redis.register_script(source)
    return scripts[source]


TAKEN_TTL = 24 * 3600
"""How long a worker's "taken" key outlives its last take: a take's lost reply is made good
after an outage of up to a day."""


def taken_key(worker_name: str) -> str:
    """The key holding the last job ``worker_name`` took (its id and queue key), for TAKE_JOB."""
    return f"offload:worker:{worker_name}:taken"


def take_job(
    redis: Redis,
    suspended_key: str,
    worker_name: str,
    queue_keys: Sequence[str],
    intermediate_key: str | None,
    job_prefix: str,
    last_received: str | None,
) -> Any:
    """Pop the first job of ``queue_keys`` and read its hash, in one round trip; or hand over
    again a job taken before ``last_received`` whose reply was lost (see TAKE_JOB)."""
    return _script(redis, TAKE_JOB)(
        keys=[suspended_key, taken_key(worker_name), *queue_keys],
        args=[intermediate_key or "", job_prefix, last_received or "", TAKEN_TTL],
    )


def commit_if_no_dependents(
    redis: Redis,
    dependents_key: str,
    execution_key: str,
    commands: Iterable[tuple[Any, ...]],
    compact_stream: tuple[str, int] | None = None,
) -> int:
    """Run ``commands`` atomically unless the job has dependents (0) or the execution has ended
    (2, a resent script); return 1 when they ran. ``compact_stream``: a stream's key and TTL in
    ms (0: none) to rewrite at its size afterwards."""
    keys = [dependents_key, execution_key]
    args: list[Any] = [""]
    if compact_stream is not None:
        keys.append(compact_stream[0])
        args[0] = compact_stream[1]
    for command in commands:
        args.append(len(command))
        args.extend(command)
    return int(_script(redis, COMMIT_IF_NO_DEPENDENTS)(keys=keys, args=args))
