"""The worker's Lua scripts: take the next job, commit a job's end if nothing depends on it, and
put back a job a gone worker took but never started.

Registered once per connection (redis-py's ``Script``: ``EVALSHA``, loaded on the first
``NOSCRIPT``); Redis, Valkey and managed Redis such as Upstash run them. They keep RQ's data
exactly as RQ writes it:

- TAKE_JOB does what RQ's ``dequeue_any`` does (``LPOP`` in queue order, or ``LMOVE`` into the
  intermediate queue for a single queue) plus the ``HGETALL`` of the job, and notes the job under
  the worker's name: a take whose reply is lost leaves a job popped that no worker knows it has
  (RQ loses it); the worker's next take hands it over again.
- COMMIT_IF_NO_DEPENDENTS runs the very commands RQ's end-of-execution transaction would send,
  which the worker builds with RQ's own methods (roundtrips.py), only while the execution's lease
  holds, with a margin (lease.py): a job's end that Redis gets once another worker may take the
  job for abandoned is not written.
- PUT_BACK_ORPHAN: a worker killed between a take and the job's start leaves such a job too;
  maintenance puts it back at the front of its queue once the worker's key is gone.

Why scripts rather than pipelines: a pipeline cannot pop a job and read its hash in one round
trip, and RQ's end transaction needs a ``WATCH`` and an ``SMEMBERS`` of the job's dependents
before its ``MULTI`` (three round trips) that a script replaces with one ``EXISTS`` inside the
same atomic step.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from redis import Redis
from redis.commands.core import Script
from rq.executions import Execution
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job
from rq.utils import as_text

_ORPHAN = """
-- The job noted in a worker's "taken" key (KEYS[n]: "<id> <queue key>") if it is an orphan:
-- popped from its queue by a take whose reply never reached the worker (Redis restarted, the
-- connection broke, the worker was killed), not started since and not back in its queue (put
-- back, requeued). Returns its id and queue key, or nil. ``skip``: the id the worker received.
local function orphan(taken_key, job_prefix, skip)
  local held = redis.call('GET', taken_key)
  if not held then
    return nil
  end
  local space = string.find(held, ' ', 1, true)
  local id, queue_key = string.sub(held, 1, space - 1), string.sub(held, space + 1)
  if id ~= skip and redis.call('HGET', job_prefix .. id, 'status') == 'queued'
      and redis.pcall('LPOS', queue_key, id) == false then
    return id, queue_key
  end
  return nil
end
"""

TAKE_JOB = (
    _ORPHAN
    + """
-- KEYS: the suspension flag, the worker's "taken" key, then the queues in order. ARGV[1]: the
-- intermediate queue's key ("" for none), ARGV[2]: the job keys' prefix, ARGV[3]: the id of the
-- job the worker last received ("" for none), ARGV[4]: the "taken" key's TTL in seconds.
-- Returns {"suspended"}, nil (all empty), or {queue key, job id, job hash...} (the hash empty
-- when the job is gone). An orphan of this worker (or of an earlier one of its name) comes first.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {'suspended'}
end
local found, found_queue = orphan(KEYS[2], ARGV[2], ARGV[3])
for i = 3, #KEYS do
  if found then
    break
  end
  if ARGV[1] ~= '' then
    found = redis.call('LMOVE', KEYS[i], ARGV[1], 'LEFT', 'RIGHT')
  else
    found = redis.call('LPOP', KEYS[i])
  end
  if found then
    found_queue = KEYS[i]
    redis.call('SET', KEYS[2], found .. ' ' .. found_queue, 'EX', ARGV[4])
  end
end
if not found then
  return nil
end
local reply = {found_queue, found}
local hash = redis.call('HGETALL', ARGV[2] .. found)
for j = 1, #hash do
  reply[j + 2] = hash[j]
end
return reply
"""
)

PUT_BACK_ORPHAN = (
    _ORPHAN
    + """
-- KEYS[1]: a worker's "taken" key, KEYS[2]: its key (rq:worker:<name>), KEYS[3]: the set of
-- workers that take (TAKERS_KEY). ARGV[1]: the job keys' prefix, ARGV[2]: the worker's name,
-- ARGV[3]: what RQ appends to a queue's key for its intermediate queue.
-- Once the worker is gone (its key expired, or marked with its death: RQ keeps it 60 s more),
-- its orphan goes back to the front of its queue (out of the intermediate queue, where RQ would
-- fail it) and the worker is forgotten. Returns the orphan's id, or nil; 0 while the worker lives.
if redis.call('EXISTS', KEYS[2]) == 1 and redis.call('HEXISTS', KEYS[2], 'death') == 0 then
  return 0
end
local id, queue_key = orphan(KEYS[1], ARGV[1], '')
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[3], ARGV[2])
if id then
  redis.call('LREM', queue_key .. ARGV[3], 1, id)
  redis.call('LPUSH', queue_key, id)
end
return id
"""
)

COMMIT_IF_NO_DEPENDENTS = """
-- KEYS[1]: the job's dependents set; KEYS[2]: the execution's key, which the commands delete;
-- KEYS[3]: the job's key; KEYS[4]: the started registry; KEYS[5] (optional): the job's results
-- stream, to compact. ARGV[1]: the stream's TTL in ms ("" for none), ARGV[2]: the execution's
-- entry in the started registry, ARGV[3]: the lease margin in ms, then commands, each as its
-- argument count then its arguments. Runs them all and returns 1, or runs none and returns:
-- 0 if the job has dependents (RQ's own transaction then moves them, under its WATCH);
-- 2 if the execution has ended and the job with it (a resent script: it ran already);
-- 3 if the execution's lease is over or has less than the margin left (lease.py): any worker's
--   maintenance may take (or have taken) the job for abandoned, and run it again.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local left = redis.call('PTTL', KEYS[2])
if left == -2 then
  local status = redis.call('HGET', KEYS[3], 'status')
  if status == false or status == 'finished' then
    return 2
  end
  return 3
end
if (left >= 0 and left < tonumber(ARGV[3])) or redis.call('ZSCORE', KEYS[4], ARGV[2]) == false then
  return 3
end
local i = 4
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  redis.call(unpack(ARGV, i + 1, i + n))
  i = i + n + 1
end
if KEYS[5] then
  -- A new stream preallocates a 4 KB node for entries to come; RQ's results stream of a job
  -- rarely gets a second. Written anew from its serialized form it takes what it holds (~0.9 KB).
  local dump = redis.pcall('DUMP', KEYS[5])
  if type(dump) == 'string' then
    redis.pcall('RESTORE', KEYS[5], ARGV[1], dump, 'REPLACE')
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


TAKERS_KEY = "offload:taking-workers"
"""The names of the workers that have a "taken" key: maintenance puts a gone worker's orphan back."""


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
    job: Job,
    execution: Execution,
    commands: Iterable[tuple[Any, ...]],
    compact_stream: tuple[str, int] | None = None,
    lease_margin: float = 0.0,
) -> int:
    """Run ``commands`` (the end of ``job``'s ``execution``) atomically, on the job's connection, unless the job has
    dependents (0), the execution has ended (2, a resent script) or its lease has less than
    ``lease_margin`` seconds left (3); return 1 when they ran. ``compact_stream``: a stream's key
    and TTL in ms (0: none) to rewrite at its size afterwards."""
    keys = [job.dependents_key, execution.key, job.key, job.started_job_registry.key]
    args: list[Any] = ["", execution.composite_key, int(lease_margin * 1000)]
    if compact_stream is not None:
        keys.append(compact_stream[0])
        args[0] = compact_stream[1]
    for command in commands:
        args.append(len(command))
        args.extend(command)
    return int(_script(job.connection, COMMIT_IF_NO_DEPENDENTS)(keys=keys, args=args))


def put_back_orphans(redis: Redis, worker_names: Iterable[str], worker_prefix: str, job_prefix: str) -> list[str]:
    """For each of ``worker_names`` that is gone, put back the job it took and never started (an
    orphan: PUT_BACK_ORPHAN) and forget it; return the ids put back. One round trip."""
    script = _script(redis, PUT_BACK_ORPHAN)
    intermediate_suffix = IntermediateQueue.get_intermediate_queue_key("")  # RQ's naming, not a copy of it
    with redis.pipeline(transaction=False) as pipeline:
        for name in worker_names:
            keys = [taken_key(name), worker_prefix + name, TAKERS_KEY]
            script(keys=keys, args=[job_prefix, name, intermediate_suffix], client=pipeline)
        replies = pipeline.execute()
    return [as_text(reply) for reply in replies if reply not in (None, 0)]
