"""The operators' job list: every job of every queue and registry, filtered, searched and paged,
with exact counts.

A listing reads every id of the registries the filter needs (all of them, not the newest N), and
four small fields of each job (status, queue, creation time, task) to filter, count and sort
them (a text search adds the stored arguments to that read), a thousand jobs a round trip; it
keeps only the counts and the newest jobs up to the page asked for, so its memory does not grow
with the jobs Redis holds. Only the page shown is read whole. With 20,000 jobs: about 1 s for a
page, with or without a search.
Jobs waiting for a concurrency slot (RQ's ``rate_limited``, in RQ's rate-limit registries, no
queue's) are listed like the rest.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import abort
from redis import Redis
from rq import Queue
from rq.job import Job
from rq.rate_limit import RateLimitRegistry
from rq.registry import BaseRegistry
from rq.serializers import JSONSerializer
from rq.utils import utcparse

from offload import jobs
from offload.state import get_redis, get_state, get_tasks

STATES = (*jobs.LISTED_STATES, "rate_limited")
"""States a list can be filtered by; ``rate_limited``: waiting for a concurrency slot."""

SINCE = {"15m": timedelta(minutes=15), "1h": timedelta(hours=1), "24h": timedelta(days=1), "7d": timedelta(days=7)}
"""The time filter's choices: jobs created within this long before now."""

PAGE_SIZE = 50


@dataclass(frozen=True)
class JobFilter:
    """What an operator asked for: each ``None`` means any."""

    state: str | None = None
    queue: str | None = None
    task: str | None = None
    since: str | None = None
    text: str | None = None

    def query(self) -> dict[str, Any]:
        """The filter as URL query parameters (for links and the bulk actions' forms)."""
        return {
            name: value
            for name, value in (
                ("state", self.state),
                ("queue", self.queue),
                ("task", self.task),
                ("since", self.since),
                ("q", self.text),
            )
            if value
        }


@dataclass
class Listing:
    """One page of a filtered list, and how many jobs match in all."""

    total: int
    page: int
    pages: int
    jobs: list[Job] = field(default_factory=list)
    states: Counter[str] = field(default_factory=Counter)
    """How many of the matching jobs are in each state (the bulk actions say how many they touch)."""


def queue_names() -> list[str]:
    """Every queue Offload knows: the configured ones and the on-demand ones."""
    return list(get_state().queues)


CHUNK = 1000
"""Ids read, and jobs looked at, per round trip: a listing holds this many at once, not all of them."""

_HOLDS = {"failed": ("failed", "stopped")}
"""The states of the jobs a place holds, where they are not just its name."""


Reader = Callable[[int], list[str]]
"""Returns the ids a place holds from an offset, ``CHUNK`` at a time (an empty list at the end)."""


def _queue_ids(rq_queue: Queue) -> Reader:
    return lambda start: rq_queue.get_job_ids(start, CHUNK)


def _registry_ids(registry: BaseRegistry) -> Reader:
    # Read only: RQ's cleanup would fail abandoned jobs before the workers' maintenance gives them
    # their crash re-run.
    return lambda start: registry.get_job_ids(start, start + CHUNK - 1, cleanup=False)


def _rate_limited(start: int) -> list[str]:
    if start:
        return []  # a few: all read at once
    registries = RateLimitRegistry.all(get_redis())
    return [job_id for registry in registries for job_id in registry.get_rate_limited_job_ids()]


def _places(state: str | None, queue: str | None) -> Iterator[tuple[tuple[str, ...], Reader]]:
    """Where jobs of ``state`` on ``queue`` live: for each, the states of the jobs it holds and its reader."""
    for name, rq_queue in get_state().queues.items():
        if queue is not None and name != queue:
            continue
        if state in (None, "queued"):
            yield ("queued",), _queue_ids(rq_queue)
        for registry_name, registry in jobs.registries(rq_queue).items():
            holds = _HOLDS.get(registry_name, (registry_name,))
            if state is None or state in holds:
                yield holds, _registry_ids(registry)
    if state in (None, "rate_limited"):
        yield ("rate_limited",), _rate_limited


def _task_of(raw_meta: bytes | None) -> str | None:
    try:
        meta = JSONSerializer.loads(raw_meta) if raw_meta else {}
    except (ValueError, UnicodeDecodeError):  # a job whose meta is not JSON (workers refuse those)
        return None
    return meta.get("task") if isinstance(meta, dict) else None


def _created(raw: bytes | None) -> datetime:
    try:
        return utcparse(raw.decode()) if raw else datetime.min.replace(tzinfo=UTC)
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)


def _arguments(raw_data: bytes | None) -> str:
    """A job's arguments as lowercase JSON text (non-ASCII as is), from its stored ``data``
    field, without building the job; "" when they are not JSON (workers refuse such jobs)."""
    if not raw_data:
        return ""
    try:
        with contextlib.suppress(zlib.error):  # RQ also reads it uncompressed
            raw_data = zlib.decompress(raw_data)
        _func, _instance, args, kwargs = JSONSerializer.loads(raw_data)
    except (ValueError, TypeError, UnicodeDecodeError):
        return ""
    return json.dumps([args, kwargs], ensure_ascii=False).lower()


def matching_ids(wanted: JobFilter, now: datetime | None = None) -> list[str]:
    """Return the ids of every job that matches ``wanted``, newest first (by creation)."""
    found = sorted(_matches(wanted, now), reverse=True)
    return [job_id for _, job_id, _ in found]


def _matches(wanted: JobFilter, now: datetime | None = None) -> Iterator[tuple[datetime, str, str]]:
    """Every job that matches ``wanted`` as (created, id, state), in no order, read ``CHUNK`` jobs a
    round trip: what a listing holds does not grow with the jobs Redis keeps (a day of them at
    10 jobs/s is 864,000). A job is taken where its own status says it is: one sitting briefly in
    two places (moving on) is listed once."""
    redis = get_redis()
    text = wanted.text.lower() if wanted.text else None
    fields = ("status", "origin", "created_at", "meta") + (("data",) if text else ())
    oldest = (now or datetime.now(UTC)) - SINCE[wanted.since] if wanted.since else None
    for holds, read in _places(wanted.state, wanted.queue):
        for ids, rows in _read_in_chunks(redis, read, fields):
            for job_id, (raw_status, origin, created_at, meta, *data) in zip(ids, rows, strict=True):
                if raw_status is None:  # expired between the two reads
                    continue
                status = raw_status.decode()
                if status not in holds or (wanted.state is not None and status != wanted.state):
                    continue  # moved on since it was put here: counted where it is now
                if wanted.queue is not None and (origin or b"").decode() != wanted.queue:
                    continue
                if wanted.task is not None and _task_of(meta) != wanted.task:
                    continue
                created = _created(created_at)
                if oldest is not None and created < oldest:
                    continue
                if text and text not in job_id.lower() and text not in _arguments(data[0]):
                    continue
                yield created, job_id, status


def _read_in_chunks(redis: Redis, read: Reader, fields: tuple[str, ...]) -> Iterator[tuple[list[str], list[Any]]]:
    """The ids ``read`` gives and their jobs' ``fields``, ``CHUNK`` jobs a round trip."""
    start = 0
    while chunk := read(start):
        start += len(chunk)
        ids = list(dict.fromkeys(chunk))  # the started registry lists a job once per execution
        with redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hmget(Job.key_for(job_id), *fields)
            rows = pipe.execute()
        yield ids, rows


def list_jobs(wanted: JobFilter, page: int = 1, per_page: int = PAGE_SIZE) -> Listing:
    """Return page ``page`` (from 1) of the jobs matching ``wanted``, with their exact count.

    Only the newest ``page * per_page`` matches are kept while counting the rest: the first pages,
    which operators read, cost little memory however many jobs Redis holds."""
    page = max(1, page)
    states: Counter[str] = Counter()

    def counted() -> Iterator[tuple[datetime, str]]:
        for created, job_id, status in _matches(wanted):
            states[status] += 1
            yield created, job_id

    newest = heapq.nlargest(page * per_page, counted())  # newest first, page * per_page held at most
    total = sum(states.values())
    pages = max(1, -(-total // per_page))
    page = min(page, pages)
    shown = [job_id for _, job_id in newest[(page - 1) * per_page : page * per_page]]
    return Listing(total=total, page=page, pages=pages, jobs=jobs.fetch_jobs(shown), states=states)


def short_id(job_id: str) -> str:
    """The id as a list shows it: a UUID's first 8 characters; any other id (periodic jobs'
    ``periodic-<task>-<n>``, ids given by hand) whole, so no two look the same."""
    parts = job_id.split("-")
    if len(job_id) == 36 and [len(part) for part in parts] == [8, 4, 4, 4, 12]:
        return parts[0]
    return job_id


def page_links(listing: Listing) -> dict[str, Any]:
    """Which neighbouring pages exist (for the pager)."""
    return {
        "previous": listing.page - 1 if listing.page > 1 else None,
        "next": listing.page + 1 if listing.page < listing.pages else None,
    }


def filter_from(values: Mapping[str, str], state: str | None = None) -> JobFilter:
    """Return the filter in ``values`` (query or form fields), with ``state`` forced when given;
    abort with a 400 naming the field when one holds a value it cannot take."""

    def choice(name: str, allowed: Iterable[str]) -> str | None:
        value = values.get(name) or None
        allowed = list(allowed)
        if value is not None and value not in allowed:
            abort(400, f"Unknown {name} filter {value[:60]!r}; use one of: {', '.join(allowed)}.")
        return value

    text = (values.get("q") or "").strip()
    if len(text) > 200:
        abort(400, "The search text is too long: at most 200 characters.")
    return JobFilter(
        state=state or choice("state", STATES),
        queue=choice("queue", queue_names()),
        task=choice("task", get_tasks()),
        since=choice("since", SINCE),
        text=text or None,
    )
