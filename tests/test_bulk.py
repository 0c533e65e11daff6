"""Bulk actions, queue pauses and worker holds from the operators' pages: a confirmation first,
CSRF-protected POSTs, operators only, each written to the operator log."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from rq import Queue, SimpleWorker
from rq.serializers import JSONSerializer

from app import create_app
from offload import holds
from tests.conftest import OPERATOR_ACCOUNT, OPERATOR_USERNAME, form_token, log_in

YES = {"confirmed": "yes"}


@pytest.fixture
def operator(app):
    client = app.test_client()
    log_in(client)
    return client


def _queue(redis, name: str) -> Queue:
    return Queue(name, connection=redis, serializer=JSONSerializer)


def _failed(redis, name: str, count: int, text: str = "broken") -> list:
    queue = _queue(redis, name)
    found = [queue.enqueue("tests.fixtures.fail_with", f"{text} {n}") for n in range(count)]
    SimpleWorker([queue], connection=redis, serializer=JSONSerializer).work(burst=True)
    return found


def _log(operator) -> str:
    return operator.get("/operator/log").get_data(as_text=True)


def test_retry_all_failed_of_a_queue_asks_then_requeues_exactly_those(operator, redis):
    low, default = _failed(redis, "low", 3), _failed(redis, "default", 2)

    asked = operator.post("/operator/bulk/retry-failed", data={"queue": "low"})

    assert asked.status_code == 200 and "Retry 3 failed jobs?" in asked.get_data(as_text=True)
    assert all(job.get_status() == "failed" for job in low)
    done = operator.post("/operator/bulk/retry-failed", data={"queue": "low", **YES})
    assert done.status_code == 303 and done.headers["Location"] == "/operator/jobs?state=queued&queue=low"
    assert all(job.get_status() == "queued" for job in low) and _queue(redis, "low").count == 3
    assert all(job.get_status() == "failed" for job in default)
    entry = re.search(r"<tr>\s*<td><time.*?</tr>", _log(operator), re.DOTALL).group(0)
    assert OPERATOR_USERNAME in entry and "retry failed jobs" in entry and "<td>3</td>" in entry and "low" in entry


def test_retry_all_failed_of_a_search_retries_only_the_matching_ones(operator, redis):
    jobs = _failed(redis, "default", 2, text="alpha") + _failed(redis, "default", 2, text="omega")

    operator.post("/operator/bulk/retry-failed", data={"q": "omega", **YES})

    assert [job.get_status() for job in jobs] == ["failed", "failed", "queued", "queued"]


def test_delete_all_failed_deletes_them(operator, redis):
    jobs = _failed(redis, "default", 2)

    assert "Delete 2 failed jobs?" in operator.post("/operator/bulk/delete-failed").get_data(as_text=True)
    operator.post("/operator/bulk/delete-failed", data=YES)

    assert not any(redis.exists(job.key) for job in jobs)
    assert _queue(redis, "default").failed_job_registry.count == 0
    assert "delete failed jobs" in _log(operator)


def test_cancel_all_scheduled_of_a_task_leaves_other_tasks_scheduled(operator, client, redis):
    def schedule(task: str, params: dict) -> str:
        run_at = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        return client.post("/api/jobs", json={"task": task, "params": params, "run_at": run_at}).get_json()["id"]

    crunch = [schedule("crunch_numbers", {"limit": 100}) for _ in range(2)]
    other = schedule("generate_report", {"title": "Later"})

    asked = operator.post("/operator/bulk/cancel-scheduled", data={"task": "crunch_numbers"})
    assert "Cancel 2 scheduled jobs?" in asked.get_data(as_text=True)
    operator.post("/operator/bulk/cancel-scheduled", data={"task": "crunch_numbers", **YES})

    status = {job_id: operator.get(f"/api/jobs/{job_id}").get_json()["status"] for job_id in [*crunch, other]}
    assert status == {crunch[0]: "canceled", crunch[1]: "canceled", other: "scheduled"}


def test_empty_a_queue_deletes_its_waiting_jobs_only(operator, redis):
    low = _queue(redis, "low")
    waiting = [low.enqueue("tests.fixtures.echo", n) for n in range(4)]
    kept = _queue(redis, "default").enqueue("tests.fixtures.echo", "kept")

    assert "Empty queue low?" in operator.post("/operator/queues/low/empty").get_data(as_text=True)
    assert low.count == 4
    response = operator.post("/operator/queues/low/empty", data=YES)

    assert response.status_code == 303 and low.count == 0
    assert not any(redis.exists(job.key) for job in waiting) and kept.get_status() == "queued"
    assert "empty queue" in _log(operator) and "<td>4</td>" in _log(operator)
    assert operator.post("/operator/queues/nope/empty", data=YES).status_code == 404


def test_bad_filters_are_a_400_naming_the_field_and_change_nothing(operator, redis):
    jobs = _failed(redis, "default", 1)

    response = operator.post("/operator/bulk/retry-failed", data={"queue": "<b>nope</b>", **YES})

    assert response.status_code == 400 and "Unknown queue filter" in response.get_data(as_text=True)
    assert "<b>nope" not in response.get_data(as_text=True)
    assert jobs[0].get_status() == "failed"


def test_pause_and_resume_a_queue_from_the_queues_page(operator, redis):
    page = operator.get("/operator/queues").get_data(as_text=True)
    assert 'action="/operator/queues/low/pause"' in page

    assert operator.post("/operator/queues/low/pause").status_code == 303

    assert holds.paused_queues(redis) == {"low"}
    page = operator.get("/operator/queues").get_data(as_text=True)
    low_row = re.search(r'<tr data-queue="low" data-paused>(.*?)</tr>', page, re.DOTALL).group(1)
    assert "paused" in low_row and 'action="/operator/queues/low/resume"' in low_row
    operator.post("/operator/queues/low/resume")
    assert holds.paused_queues(redis) == set()
    assert "pause queue" in _log(operator) and "resume queue" in _log(operator)
    assert operator.post("/operator/queues/nope/pause").status_code == 404


def test_quiet_wake_and_stop_a_worker_need_a_live_worker(operator, redis):
    assert operator.post("/operator/workers/nobody/quiet").status_code == 404
    assert operator.post("/operator/workers/nobody/stop", data=YES).status_code == 404
    assert holds.quiet_workers(redis) == set()


@pytest.mark.parametrize(
    ("path", "data"),
    [
        ("/operator/bulk/retry-failed", YES),
        ("/operator/bulk/delete-failed", YES),
        ("/operator/bulk/cancel-scheduled", YES),
        ("/operator/queues/default/empty", YES),
        ("/operator/queues/default/pause", {}),
    ],
)
def test_bulk_actions_refuse_anonymous_users_and_requests_without_the_csrf_token(client, redis_url, redis, path, data):
    jobs = _failed(redis, "default", 1)
    waiting = _queue(redis, "default").enqueue("tests.fixtures.echo", 1)

    assert client.post(path, data=data).status_code == 403
    csrf_app = create_app({"TESTING": True, "OFFLOAD_REDIS_URL": redis_url, **OPERATOR_ACCOUNT}).test_client()
    token = re.search(r'name="csrf_token" value="([^"]+)"', csrf_app.get("/login").get_data(as_text=True)).group(1)
    log_in(csrf_app, csrf_token=token)
    token = form_token(csrf_app)
    assert csrf_app.post(path, data=data).status_code == 400

    assert jobs[0].get_status() == "failed" and waiting.get_status() == "queued"
    assert holds.paused_queues(redis) == set()
    assert csrf_app.post(path, data={**data, "csrf_token": token}).status_code == 303  # the token was all it lacked
