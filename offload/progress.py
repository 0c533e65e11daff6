"""What a running task tells the page that watches it: how far it is."""

from __future__ import annotations

import logging
import threading
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import get_current_job

log = logging.getLogger(__name__)

_unsaved: dict[str, int] = {}
"""Per job of this process: the progress reports Redis did not take since it last took one."""
_unsaved_lock = threading.Lock()  # a task may report from threads of its own
_UNSAVED_KEPT = 100  # jobs whose outage outlived them are forgotten, oldest first


RESERVED_META = frozenset({"task", "progress", "attempts", "batch", "crash_reruns", "periodic"})
"""Keys of a job's meta that Offload itself reads: which task the job is (the pages and the API
find it by this), its progress, its runs, its newsletter, its crash re-runs, its period."""


def report_progress(fraction: float, **details: Any) -> None:
    """Record how far the running job is (0.0 to 1.0) and any ``details`` in its meta, for the job page.

    Does nothing outside a worker, so task functions can also be called directly. Raises
    ValueError for a fraction outside 0.0-1.0 (``50`` is not 50 %) or a detail named like one
    of Offload's own keys (:data:`RESERVED_META`), which would hide the job from its pages.
    """
    if not 0.0 <= fraction <= 1.0 + 1e-9:
        raise ValueError(f"report_progress takes a fraction from 0.0 to 1.0, not {fraction!r}")
    taken = sorted(RESERVED_META.intersection(details))
    if taken:
        raise ValueError(
            f"report_progress: {', '.join(taken)} is Offload's own key in the job's meta; name it otherwise"
        )
    job = get_current_job()
    if job is None:
        return
    job.meta["progress"] = round(min(1.0, fraction) * 100, 1)
    job.meta.update(details)
    try:
        job.save_meta()
    except (RedisConnectionError, RedisTimeoutError) as exc:
        # Progress only feeds the job page: a Redis blip must not fail the work itself. Said once a
        # job and outage: a task reporting often said it at every report (41 lines in 20 s).
        if _count_unsaved(job.id) == 1:
            log.warning(
                "job %s: progress not saved, Redis unreachable (%s); not said again until it is saved", job.id, exc
            )
        return
    with _unsaved_lock:
        missed = _unsaved.pop(job.id, 0)
    if missed:
        log.info("job %s: progress saved again (%d reports before were not)", job.id, missed)


def _count_unsaved(job_id: str) -> int:
    """Count one more report of ``job_id`` that Redis did not take; return how many since the last it took."""
    with _unsaved_lock:
        count = _unsaved.pop(job_id, 0) + 1
        _unsaved[job_id] = count
        while len(_unsaved) > _UNSAVED_KEPT:
            del _unsaved[next(iter(_unsaved))]
    return count
