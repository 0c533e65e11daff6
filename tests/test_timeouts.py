"""Every task has a timeout; a job past it fails "timed out after N s", retried only if its policy says so."""

from __future__ import annotations

import pytest
from rq import Queue, Retry
from rq.serializers import JSONSerializer

from tasks import offload
from tests.conftest import log_in, wait_for

TASKS = offload.tasks


@pytest.mark.parametrize("name", sorted(name for name, task in TASKS.items() if not task.own_form))
def test_every_registered_task_is_enqueued_with_its_timeout(client, name):
    # A task with its own form (the newsletter) is checked by its own tests (test_newsletter.py).
    assert log_in(client).status_code == 303  # some tasks are the operator's (test_access.py)
    response = client.post("/api/jobs", json={"task": name, "params": {}})  # the defaults are valid input

    assert response.status_code == 202, response.get_json()
    assert response.get_json()["timeout_seconds"] == TASKS[name].timeout > 0


def run_past_timeout(http, redis, retry: Retry | None) -> dict:
    queue = Queue("default", connection=redis, serializer=JSONSerializer)
    job = queue.enqueue_call("tests.fixtures.run_until_released", args=("release:never", 30), timeout=1, retry=retry)
    return wait_for(lambda: (view := http.get(f"/api/jobs/{job.id}").json())["ended"] and view, timeout=60)


@pytest.mark.e2e
def test_a_job_past_its_timeout_fails_timed_out_and_without_a_policy_is_not_retried(http, redis):
    job = run_past_timeout(http, redis, retry=None)

    assert job["status"] == "failed"
    assert job["error"] == "Timed out after 1 s."
    assert [(a["outcome"], a["error"]) for a in job["attempts"]] == [("failed", "Timed out after 1 s.")]
    assert "Timed out after 1 s." in http.get(job["url"]).text


@pytest.mark.e2e
def test_a_job_past_its_timeout_is_retried_when_its_policy_says_so(http, redis):
    job = run_past_timeout(http, redis, retry=Retry(max=1, interval=1))

    assert job["status"] == "failed"
    assert [(a["outcome"], a["error"]) for a in job["attempts"]] == [("failed", "Timed out after 1 s.")] * 2
    assert job["retries_left"] == 0
