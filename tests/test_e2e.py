"""The whole path on real processes: form → Redis → the stock ``rq worker`` CLI → job page.

Runs once against redis-server and once against valkey-server (the guide's pick on Fly).
"""

from __future__ import annotations

import itertools
import re
from datetime import datetime

import httpx
import pytest
from rq import Queue, Retry
from rq.serializers import JSONSerializer

from tests.conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.parametrize("redis_url", ["redis", "valkey"], indirect=True)]


def follow(http: httpx.Client, api_url: str, until=lambda job: job["ended"], timeout: float = 60) -> dict:
    """Poll the job's API URL until ``until(job)``; return the job."""
    return wait_for(lambda: (job := http.get(api_url).json()) and until(job) and job, timeout=timeout, what=api_url)


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_form_submit_runs_on_the_worker_and_the_page_shows_the_result(http):
    token = re.search(r'name="csrf_token" value="([^"]+)"', http.get("/").text).group(1)

    response = http.post("/tasks/crunch_numbers", data={"limit": "2000000", "csrf_token": token})

    assert response.status_code == 303
    page_url = response.headers["Location"]
    job = follow(http, "/api" + page_url)
    assert job["status"] == "finished"
    assert job["result"]["primes_below_limit"] == 148933
    assert job["progress"] == 100
    assert job["duration_seconds"] is not None
    assert [attempt["outcome"] for attempt in job["attempts"]] == ["finished"]
    page = http.get(page_url).text
    assert "finished" in page and "148933" in page


def test_api_submit_reports_progress_while_running_then_the_result(http):
    created = http.post("/api/jobs", json={"task": "crunch_numbers", "params": {"limit": 600_000_000}})
    assert created.status_code == 202

    seen = set()
    job = follow(http, created.headers["Location"], until=lambda job: seen.add(job["progress"]) or job["ended"])

    assert job["status"] == "finished"
    assert job["result"]["primes_below_limit"] == 31_324_703
    moving = sorted(p for p in seen if 0 < p < 100)
    assert len(moving) >= 2, f"progress never seen moving: {sorted(seen)}"


def test_failing_task_ends_failed_with_its_error_shown(http, redis):
    queue = Queue("default", connection=redis, serializer=JSONSerializer)
    job = queue.enqueue("tests.fixtures.fail_with", "the disk is full")

    view = follow(http, f"/api/jobs/{job.id}")

    assert view["status"] == "failed"
    assert view["error"] == "The disk is full."  # a sentence for its submitter, no class name
    page = http.get(f"/jobs/{job.id}").text
    assert "The disk is full." in page and "RuntimeError" not in page
    assert "Traceback" not in page


def test_retry_policy_retries_at_the_configured_intervals(http, redis):
    queue = Queue("default", connection=redis, serializer=JSONSerializer)
    job = queue.enqueue(
        "tests.fixtures.count_attempts_then_fail",
        "still broken",
        retry=Retry(max=2, interval=[1, 3]),
        meta={"max_retries": 2},
    )

    view = follow(http, f"/api/jobs/{job.id}", timeout=60)

    assert view["status"] == "failed"
    attempts = view["attempts"]
    assert [attempt["outcome"] for attempt in attempts] == ["failed", "failed", "failed"]
    assert view["retries_left"] == 0
    gaps = [
        (parse_time(later["started_at"]) - parse_time(earlier["ended_at"])).total_seconds()
        for earlier, later in itertools.pairwise(attempts)
    ]
    # RQ stores the due time in whole seconds (up to 1 s early) and its scheduler polls
    # once a second (up to ~1 s late): each gap lies within a second or two of the interval.
    assert 0 < gaps[0] < 3, gaps
    assert 2 < gaps[1] < 5, gaps
    assert gaps[1] - gaps[0] > 1, gaps
    assert view["error"] == "Still broken (attempt 3)"


def test_the_web_processes_boot_without_warnings(stack):
    # Each web process logs the test Redis's missing persistence once its app is loaded, which is
    # after gevent patched the process (gunicorn's init_process): by then any warning is written.
    def loaded() -> list[str]:
        log = stack.log("web")
        pids = re.findall(r"Booting worker with pid: (\d+)", log)
        return [pid for pid in pids if re.search(rf"\[{pid}\] \[ERROR\] app: Redis at .* no persistence", log)]

    wait_for(lambda: len(loaded()) == 2, what="both web processes to load the app")

    assert "Warning" not in stack.log("web"), stack.log("web")
