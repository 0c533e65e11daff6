"""What this browser (or API client keeping its cookie) submitted: its jobs and newsletters.

Kept in the signed session cookie, which must stay under 4 kB: the newest ids only. "My jobs",
the API's job list and the submitter's Cancel button all identify a submitter this way.
"""

from __future__ import annotations

from flask import session

JOBS_KEY = "my_jobs"
JOBS_LIMIT = 30
"""Job ids remembered per browser (36 characters each)."""

BATCHES_KEY = "my_batches"
BATCHES_LIMIT = 10
"""Newsletter batch ids remembered per browser (32 characters each)."""


def _remember(key: str, limit: int, item_id: str) -> None:
    known = [item_id, *(other for other in session.get(key, []) if other != item_id)]
    session[key] = known[:limit]
    session.permanent = True


def remember_job(job_id: str) -> None:
    """Add ``job_id`` to this browser's jobs, newest first, forgetting the oldest past the cap."""
    _remember(JOBS_KEY, JOBS_LIMIT, job_id)


def remember_batch(batch_id: str) -> None:
    """Add ``batch_id`` to this browser's newsletters, newest first, forgetting the oldest past the cap."""
    _remember(BATCHES_KEY, BATCHES_LIMIT, batch_id)


def job_ids() -> list[str]:
    """The ids of the jobs this browser submitted, newest first."""
    return list(session.get(JOBS_KEY, []))


def batch_ids() -> list[str]:
    """The ids of the newsletters this browser submitted, newest first."""
    return list(session.get(BATCHES_KEY, []))


def submitted(job_id: str) -> bool:
    """True if this browser submitted the job ``job_id``."""
    return job_id in session.get(JOBS_KEY, [])
