"""Number crunching: how many primes lie below a limit, by a segmented sieve of Eratosthenes."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from math import isqrt
from typing import Any

log = logging.getLogger(__name__)


def count_primes(limit: int, report_progress: Callable[..., None]) -> dict[str, Any]:
    """Return how many primes lie below ``limit`` and the largest of them, reporting progress on the way."""
    started = time.perf_counter()
    root = isqrt(limit - 1)
    small = bytearray([1]) * (root + 1)
    small[0] = small[1] = 0
    for p in range(2, isqrt(root) + 1):
        if small[p]:
            small[p * p :: p] = bytes(len(range(p * p, root + 1, p)))
    base_primes = [p for p in range(2, root + 1) if small[p]]
    log.info("sieving below %d with %d base primes", limit, len(base_primes))

    # 50 segments: progress moves every 2 %, and a segment stays small in memory.
    segment = max(root + 1, -(-limit // 50))
    count = 0
    largest = None
    for low in range(0, limit, segment):
        high = min(low + segment, limit)
        sieve = bytearray([1]) * (high - low)
        for number in range(low, min(2, high)):
            sieve[number - low] = 0
        for p in base_primes:
            if p * p >= high:
                break
            first = max(p * p, -(-low // p) * p)
            sieve[first - low :: p] = bytes(len(range(first - low, high - low, p)))
        count += sieve.count(1)
        last = sieve.rfind(1)
        if last >= 0:
            largest = low + last
        report_progress(high / limit, primes_so_far=count)

    log.info("found %d primes below %d", count, limit)
    return {
        "limit": limit,
        "primes_below_limit": count,
        "largest_prime": largest,
        "seconds": round(time.perf_counter() - started, 3),
    }
