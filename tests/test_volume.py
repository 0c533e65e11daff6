"""Volume: 10,000 jobs through two real workers finish once each, and Redis shrinks back after.

Every key a job leaves behind must expire: after the results' TTL (short here) and a
maintenance pass, only the fixed, per-queue and per-worker keys remain, none naming a job.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from redis import Redis
from rq import Worker

from tests.conftest import Stack, process_env, wait_for
from tests.faults import Ledger

pytestmark = pytest.mark.e2e

JOBS = 10_000
RESULT_TTL = 5
JOB_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _used_memory(redis: Redis) -> int:
    return int(redis.info("memory")["used_memory"])


def _keys_without_expiry(redis: Redis) -> dict[str, str]:
    pipe = redis.pipeline(transaction=False)
    keys = [key.decode() for key in redis.scan_iter(count=1000)]
    for key in keys:
        pipe.ttl(key)
    types = {}
    for key, ttl in zip(keys, pipe.execute(), strict=True):
        if ttl == -1:
            types[key] = redis.type(key).decode()
    return types


def test_ten_thousand_jobs_finish_once_and_leave_no_key_that_grows_with_traffic(
    redis_url: str, redis: Redis, tmp_path: Path, figures
):
    # Full maintenance every 2 s, so expired registry entries go soon after the results' TTL.
    env = {**process_env(redis_url), "WORKER_MAINTENANCE_INTERVAL": "2", "WORKER_FULL_MAINTENANCE_INTERVAL": "2"}
    stack = Stack(redis_url=redis_url, logs=tmp_path, env=env)
    try:
        stack.start_worker("worker-1")
        stack.start_worker("worker-2")
        baseline = _used_memory(redis)
        ledger = Ledger(redis, "volume")

        started = time.monotonic()
        ledger.submit(JOBS, result_ttl=RESULT_TTL, failure_ttl=RESULT_TTL)
        submitted_in = time.monotonic() - started
        peak = _used_memory(redis)
        wait_for(lambda: len(ledger.done()) == JOBS, timeout=900, interval=1, what="all jobs to run")
        ran_in = time.monotonic() - started

        done, runs = ledger.done(), ledger.runs()
        # The workers' own counts also include the periodic jobs their scheduler queued (low queue).
        failed = sum(worker.failed_job_count for worker in Worker.all(connection=redis))
        ledger.forget()

        # Only keys that do not grow with traffic may stay without an expiry.
        def settled() -> bool:
            return not any(key.startswith(("rq:job:", "rq:results:")) for key in _keys_without_expiry(redis)) and (
                redis.zcard("rq:finished:default") == 0 and redis.dbsize() < 50
            )

        wait_for(settled, timeout=120, interval=1, what="job keys to expire and registries to be cleaned")
        after = _used_memory(redis)
        left = _keys_without_expiry(redis)
        figures.record(
            "volume (2 workers)",
            submitted=JOBS,
            finished=sum(1 for count in done.values() if count == 1),
            failed=failed,
            lost=JOBS - len(done),
            duplicates=sum(1 for count in done.values() if count != 1),
            reruns=sum(runs.values()) - len(runs),
            submit_s=submitted_in,
            run_s=ran_in,
            jobs_per_s=JOBS / ran_in,
            redis_kib_before=baseline // 1024,
            redis_kib_queued=peak // 1024,
            redis_kib_after_ttl=after // 1024,
            keys_left=redis.dbsize(),
            keys_left_without_ttl=len(left),
        )
        print("keys left without expiry:", left)

        assert len(done) == JOBS and failed == 0
        assert set(done.values()) == {1} and set(runs.values()) == {1}
        # What stays is per queue, per worker or per task (rq:workers:<queue>, the metrics of a
        # task, the last 48 digests), never per job.
        assert not [key for key in left if JOB_ID.search(key)], left
        assert len(left) <= 20, left
        assert after - baseline < (peak - baseline) / 5, (baseline, peak, after)
    finally:
        stack.close()
