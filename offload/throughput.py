"""Throughput over time: finished, failed and retried attempts per minute, and queue depth,
per queue and per task, kept in Redis for the operators' dashboard.

One hash per minute, ``offload:throughput:<minute>`` (minutes since the epoch), expiring
:data:`KEEP_SECONDS` after it was last written, so the data never grows past a day of minutes:

- ``<outcome>|queue|<name>`` and ``<outcome>|task|<name>``: attempts of that queue / task that
  ended ``finished``, ``failed`` (stopped included) or ``retried`` (failed, with a retry to come);
- ``depth|<queue>``: jobs waiting in the queue, as last seen in that minute.

Cost. Per job attempt that ends, 3 commands and no extra round trip: 2 HINCRBY and an EXPIRE
(:func:`record_outcome`), sent with the commands the worker already sends for the job's end
and metrics. Queue depths are sampled apart from jobs (:func:`add_depth_samples`, an EVAL per
queue copying its LLEN): by each worker in the round trip in which it reads the holds (every
5 s while it works, at most every dequeue wait, 20 s, while idle: offload/worker/holds.py),
and by the dashboard at every read. Memory (MEMORY USAGE,
measured by tests/test_throughput.py): with 3 queues and 8 tasks busy every minute (33 fields a
minute), ~840 bytes a minute, 1.2 MB for a full day; an idle minute costs nothing. Reading the
dashboard costs one round trip: 60 HGETALLs for the last hour, 1440 for the last day, in one pipeline.

A queue no worker listens to (an on-demand queue between its workers) is sampled only while an
operator watches the dashboard.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from redis import Redis
from redis.client import Pipeline

PREFIX = "offload:throughput:"
KEEP_SECONDS = 25 * 3600
"""How long a minute's counts live: a day, plus an hour so the day chart's first minutes are whole."""

OUTCOMES = ("finished", "failed", "retried")

RANGES = {"hour": (60, 1), "day": (1440, 15)}
"""Each range the dashboard shows: how many minutes, and how many minutes one point of its chart sums."""

_COPY_DEPTH = "return redis.call('HSET', KEYS[1], ARGV[1], redis.call('LLEN', KEYS[2]))"
"""Copies a queue's length into a hash field in Redis itself (no round trip to read it first)."""


def minute_of(moment: float | None = None) -> int:
    """Return the minute (since the epoch) ``moment`` (a UNIX time; now if None) falls in."""
    return int(time.time() if moment is None else moment) // 60


def bucket_key(minute: int) -> str:
    return f"{PREFIX}{minute}"


def record_outcome(pipe: Pipeline, queue: str, task: str, outcome: str, moment: float | None = None) -> None:
    """Add to ``pipe`` the commands that count one attempt of ``task`` on ``queue`` ending with
    ``outcome`` (one of :data:`OUTCOMES`) in this minute's hash. Plain commands only (no script):
    the worker sends them inside its own end-of-job script (offload/worker/roundtrips.py)."""
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r}; one of {', '.join(OUTCOMES)}")
    key = bucket_key(minute_of(moment))
    pipe.hincrby(key, f"{outcome}|queue|{queue}", 1)
    pipe.hincrby(key, f"{outcome}|task|{task}", 1)
    pipe.expire(key, KEEP_SECONDS)


def add_depth_samples(pipe: Pipeline, queues: Iterable[str], moment: float | None = None) -> None:
    """Add to ``pipe`` the commands that note every one of ``queues``' depth in this minute's hash."""
    key = bucket_key(minute_of(moment))
    for name in queues:
        pipe.eval(_COPY_DEPTH, 2, key, f"rq:queue:{name}", f"depth|{name}")
    pipe.expire(key, KEEP_SECONDS)


def sample_depths(redis: Redis, queues: Iterable[str], moment: float | None = None) -> None:
    """Note every one of ``queues``' depth in this minute's hash (one round trip)."""
    with redis.pipeline(transaction=False) as pipe:
        add_depth_samples(pipe, queues, moment)
        pipe.execute()


def read(redis: Redis, span: str, moment: float | None = None) -> dict[str, Any]:
    """Return the series of range ``span`` (a key of :data:`RANGES`) ending at ``moment``'s minute.

    The answer, as JSON values: ``start`` (UNIX time of the first point), ``step`` (seconds per
    point), ``points`` (how many), ``series`` mapping ``"<outcome>|all"``, ``"<outcome>|queue|<q>"``,
    ``"<outcome>|task|<t>"`` to attempts per point and ``"depth|<q>"`` to the deepest depth seen
    in each point (None where none was seen), and ``totals`` summing each count series.
    """
    minutes, per_point = RANGES[span]
    last = minute_of(moment)
    first = last - minutes + 1
    with redis.pipeline(transaction=False) as pipe:
        for minute in range(first, last + 1):
            pipe.hgetall(bucket_key(minute))
        rows = pipe.execute()
    points = minutes // per_point
    series: dict[str, list[Any]] = {f"{outcome}|all": [0] * points for outcome in OUTCOMES}
    for offset, row in enumerate(rows):
        point = offset // per_point
        for raw_field, raw_value in row.items():
            field, value = raw_field.decode(), int(raw_value)
            if field.startswith("depth|"):
                values = series.setdefault(field, [None] * points)
                values[point] = max(value, values[point] or 0)
                continue
            series.setdefault(field, [0] * points)[point] += value
            outcome, _, scope = field.partition("|")
            if scope.startswith("queue|"):  # each attempt counts once in "all", not once per scope
                series[f"{outcome}|all"][point] += value
    totals = {name: sum(values) for name, values in series.items() if not name.startswith("depth|")}
    return {
        "span": span,
        "start": first * 60,
        "step": per_point * 60,
        "points": points,
        "series": series,
        "totals": totals,
    }
