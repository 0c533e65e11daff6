"""Whether and when a failed job runs again: backoff with jitter, and the hints a task's
exception gives the worker.

RQ retries *any* exception when a job has a ``Retry`` policy, at the fixed intervals of that
policy, and has no backoff formula. Tasks that talk to the outside world know better:

- :class:`PermanentError`: retrying cannot help (a 400 from an API, a file over the size cap).
  The worker (``worker.OffloadWorker``) fails the job at once, whatever its policy says.
- :class:`RetryLater`: a transient failure that says how long to wait (a backoff the task
  computed, or the server's ``Retry-After``). The worker writes that delay into the job's
  retry intervals where RQ will read it, so the policy still counts the retries.

Any other exception follows the policy unchanged. Light on purpose: the web imports it.
"""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rq.job import Job


class PermanentError(Exception):
    """A failure retrying cannot fix: the job fails at once even if its policy has retries left."""


class RetryLater(Exception):
    """A transient failure; retry (if the policy has retries left) no sooner than ``delay`` seconds."""

    def __init__(self, message: str, delay: int) -> None:
        super().__init__(message)
        self.delay = max(1, int(delay))


def backoff_delay(retry: int, base: float, cap: float, rng: random.Random | None = None) -> int:
    """Return whole seconds to wait before retry number ``retry`` (0 for the first retry).

    Exponential (``base * 2**retry``, at most ``cap``) with "equal jitter": a random point in
    the upper half, so jobs that failed together do not come back together, yet the wait
    still grows. Never less than 1 s (RQ schedules in whole seconds).
    """
    ceiling = min(cap, base * 2**retry)
    delay = ceiling / 2 + (rng or random).uniform(0, ceiling / 2)
    return max(1, math.ceil(delay))


def jittered(seconds: float, spread: float = 0.2, rng: random.Random | None = None) -> int:
    """Return ``seconds`` give or take ``spread`` (a fraction), in whole seconds, never under 1.

    For a policy's fixed interval, chosen when the failure happens: jobs that failed together
    (a mail server that turned a whole batch away) do not all come back in the same second.
    """
    return max(1, round(seconds * (rng or random).uniform(1 - spread, 1 + spread)))


def backoff_intervals(retries: int, base: float, cap: float) -> list[int]:
    """Return RQ ``Retry`` intervals for ``retries`` retries: ``base * 2**n`` capped, no jitter.

    For a static policy; a :class:`RetryLater` raised with a jittered :func:`backoff_delay`
    replaces the interval of the retry it causes.
    """
    return [max(1, math.ceil(min(cap, base * 2**n))) for n in range(retries)]


def apply_retry_hints(job: Job, exc: BaseException | None) -> None:
    """Adjust RQ's coming retry decision for ``job`` from what ``exc`` says.

    Call before RQ handles the failure (``Worker.handle_job_failure``). Mirrors
    ``Job.get_retry_interval``, which reads ``intervals[max(len(intervals) - retries_left, 0)]``.
    """
    if exc is None or not job.should_retry:
        return
    if isinstance(exc, PermanentError):
        job.retries_left = 0
        # RQ does not save the job on failure; record it so the page says no retries remain.
        job.connection.hset(job.key, "retries_left", 0)
    elif isinstance(exc, RetryLater):
        intervals = list(job.retry_intervals or [0])
        assert job.retries_left is not None
        intervals[max(len(intervals) - job.retries_left, 0)] = exc.delay
        job.retry_intervals = intervals  # saved with the job when RQ schedules the retry
