"""A failed attempt that will be retried is a one-line WARNING in the worker's log; only the final
failure is an ERROR with its traceback (the real ``rq worker`` CLI, its own log)."""

from __future__ import annotations

import pytest
from rq import Retry

from tests.conftest import ended, wait_for

pytestmark = pytest.mark.e2e


def test_retried_attempts_warn_in_one_line_and_only_the_last_failure_is_an_error(workers, queue):
    workers.start_worker()
    job = queue.enqueue("tests.fixtures.count_attempts_then_fail", "flaky", retry=Retry(max=2))

    assert ended(job, timeout=60).get_status() == "failed"
    log = wait_for(lambda: "exception raised while executing" in (text := workers.log("worker")) and text)

    lines = log.splitlines()
    warnings = [line for line in lines if " WARNING " in line and job.id in line]
    errors = [line for line in lines if " ERROR " in line and job.id in line]
    assert len(warnings) == 2, warnings
    assert all("will retry" in line and "RuntimeError: flaky" in line for line in warnings), warnings
    assert "(2 left)" in warnings[0] and "(1 left)" in warnings[1]
    assert len(errors) == 1 and "flaky (attempt 3)" in log.split(errors[0])[1], errors
    assert log.count("Traceback (most recent call last)") == 1
