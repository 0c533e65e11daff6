"""What a running task tells the page that watches it: how far it is."""

from __future__ import annotations

import logging
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import get_current_job

log = logging.getLogger(__name__)


def report_progress(fraction: float, **details: Any) -> None:
    """Record how far the running job is (0.0 to 1.0) in its meta, for the job page.

    Does nothing outside a worker, so task functions can also be called directly.
    """
    job = get_current_job()
    if job is None:
        return
    job.meta["progress"] = round(max(0.0, min(1.0, fraction)) * 100, 1)
    job.meta.update(details)
    try:
        job.save_meta()
    except (RedisConnectionError, RedisTimeoutError) as exc:
        # Progress only feeds the job page: a Redis blip must not fail the work itself.
        log.warning("job %s: progress not saved, Redis unreachable (%s)", job.id, exc)
