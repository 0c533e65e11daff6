"""Operator actions from the job page: cancel, stop, requeue (and cancel a newsletter). Each works
for an operator, is refused to anyone else and without the CSRF token, and a refusal changes nothing."""

from __future__ import annotations

import re

import httpx
import pytest
from rq import Queue, SimpleWorker
from rq.serializers import JSONSerializer

from app import create_app
from offload import jobs
from offload.workloads import newsletter
from tests.conftest import OPERATOR_ACCOUNT, form_token, log_in, wait_for


@pytest.fixture
def queue(redis) -> Queue:
    return Queue("default", connection=redis, serializer=JSONSerializer)


@pytest.fixture
def operator(app):
    client = app.test_client()
    log_in(client)
    return client


@pytest.fixture
def csrf_operator(redis_url):
    """An operator on an app with CSRF on, as in production, and the token of its session."""
    client = create_app({"TESTING": True, "OFFLOAD_REDIS_URL": redis_url, **OPERATOR_ACCOUNT}).test_client()
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").get_data(as_text=True)).group(1)
    log_in(client, csrf_token=token)
    return client, form_token(client)


def failed_job(queue: Queue):
    job = queue.enqueue("tests.fixtures.fail_with", "broken")
    SimpleWorker([queue], connection=queue.connection, serializer=JSONSerializer).work(burst=True)
    assert job.get_status() == "failed"
    return job


YES = {"confirmed": "yes"}


@pytest.mark.parametrize(("action", "state"), [("cancel", "queued"), ("requeue", "failed")])
def test_a_job_action_first_asks_for_confirmation_and_changes_nothing(operator, queue, action, state):
    job = failed_job(queue) if state == "failed" else queue.enqueue("tests.fixtures.fail_with", "never runs")

    asked = operator.post(f"/jobs/{job.id}/{action}")

    page = asked.get_data(as_text=True)
    assert asked.status_code == 200 and f"{action.capitalize()} job {job.id}?" in page
    assert f'action="/jobs/{job.id}/{action}"' in page and 'name="confirmed" value="yes"' in page
    assert f'href="/jobs/{job.id}"' in page  # the way back, without doing it
    assert job.get_status() == state
    assert operator.post(f"/jobs/{job.id}/{action}", data=YES).status_code == 303
    assert job.get_status() != state


def test_an_operator_cancels_a_queued_job(operator, queue):
    job = queue.enqueue("tests.fixtures.fail_with", "never runs")

    response = operator.post(f"/jobs/{job.id}/cancel", data=YES)

    assert response.status_code == 303 and response.headers["Location"] == f"/jobs/{job.id}"
    assert job.get_status() == "canceled"
    assert queue.count == 0


def test_an_operator_cancels_a_scheduled_job_before_it_starts(operator, client, redis):
    created = client.post("/api/jobs", json={"task": "crunch_numbers", "params": {"limit": 100}, "run_in": 600})
    job_id = created.get_json()["id"]

    response = operator.post(f"/jobs/{job_id}/cancel", data=YES)

    assert response.status_code == 303
    assert operator.get(f"/api/jobs/{job_id}").get_json()["status"] == "canceled"
    assert redis.zcard("rq:scheduled:default") == 0


def test_an_operator_requeues_a_failed_job(operator, queue):
    job = failed_job(queue)

    response = operator.post(f"/jobs/{job.id}/requeue", data=YES)

    assert response.status_code == 303
    assert job.get_status() == "queued"
    assert queue.job_ids == [job.id]


def test_the_job_page_offers_an_operator_the_actions_that_fit_the_state(operator, client, queue):
    job = queue.enqueue("tests.fixtures.fail_with", "never runs")

    page = operator.get(f"/jobs/{job.id}").get_data(as_text=True)
    anonymous = client.get(f"/jobs/{job.id}").get_data(as_text=True)

    assert re.search(rf'action="/jobs/{job.id}/cancel"[^>]*data-show-in="queued scheduled deferred"\s*>', page)
    assert re.search(rf'action="/jobs/{job.id}/requeue"[^>]*\s+hidden>', page)
    assert "/cancel" not in anonymous and "/requeue" not in anonymous


@pytest.mark.parametrize(("action", "state"), [("cancel", "finished"), ("requeue", "queued"), ("stop", "queued")])
def test_an_action_that_does_not_fit_the_state_is_409_and_changes_nothing(operator, queue, action, state):
    job = queue.enqueue("tests.fixtures.burn_cpu", 0)
    if state == "finished":
        SimpleWorker([queue], connection=queue.connection, serializer=JSONSerializer).work(burst=True)

    response = operator.post(f"/jobs/{job.id}/{action}")

    assert response.status_code == 409
    assert job.get_status() == state


def test_anonymous_users_are_refused_and_nothing_changes(client, queue):
    failed = failed_job(queue)
    waiting = queue.enqueue("tests.fixtures.fail_with", "never runs")

    refused = [
        client.post(f"/jobs/{waiting.id}/cancel"),
        client.post(f"/jobs/{waiting.id}/stop"),
        client.post(f"/jobs/{failed.id}/requeue"),
    ]

    assert [response.status_code for response in refused] == [403, 403, 403]
    assert waiting.get_status() == "queued" and queue.job_ids == [waiting.id]
    assert failed.get_status() == "failed"


def test_without_the_csrf_token_an_operator_is_refused_and_nothing_changes(csrf_operator, queue):
    client, token = csrf_operator
    failed = failed_job(queue)
    waiting = queue.enqueue("tests.fixtures.fail_with", "never runs")

    no_token = [client.post(f"/jobs/{waiting.id}/cancel"), client.post(f"/jobs/{failed.id}/requeue")]

    assert [response.status_code for response in no_token] == [400, 400]
    assert waiting.get_status() == "queued" and failed.get_status() == "failed"
    # The same operator with the token gets through: the token was all that was missing.
    assert client.post(f"/jobs/{waiting.id}/cancel", data={"csrf_token": token, **YES}).status_code == 303
    assert waiting.get_status() == "canceled"


def test_an_operator_cancels_the_unsent_mails_of_a_scheduled_newsletter(app, operator, client, redis):
    with app.app_context():
        text = newsletter.NewsletterText(subject="Later", body="Text")
        from datetime import UTC, datetime, timedelta

        run_at = datetime.now(UTC) + timedelta(hours=1)
        batch_id = newsletter.submit_batch(
            jobs.get_queue("low"), text, ["a@example.org", "b@example.org"], config=app.config, run_at=run_at
        )

    assert client.post(f"/batches/{batch_id}/cancel").status_code == 403
    assert redis.zcard("rq:scheduled:low") == 2

    asked = operator.post(f"/batches/{batch_id}/cancel")  # the operator is asked first
    assert asked.status_code == 200 and "2 mail(s) not sent yet" in asked.get_data(as_text=True)
    assert redis.zcard("rq:scheduled:low") == 2

    response = operator.post(f"/batches/{batch_id}/cancel", data=YES)

    assert response.status_code == 303
    assert redis.zcard("rq:scheduled:low") == 0
    batch = operator.get(f"/api/batches/{batch_id}").get_json()
    assert (batch["canceled"], batch["pending"], batch["done"]) == (2, 0, True)
    assert batch["canceled_at"] is not None


@pytest.mark.e2e
def test_an_operator_stops_a_running_job_and_others_cannot(http: httpx.Client, stack, redis):
    job = Queue("default", connection=redis, serializer=JSONSerializer).enqueue(
        "tests.fixtures.burn_cpu", 60, job_timeout=120
    )
    wait_for(lambda: job.get_status() == "started", what="the job to start")

    with httpx.Client(base_url=stack.base_url, timeout=10) as anonymous:
        assert anonymous.post(f"/jobs/{job.id}/stop").status_code in (400, 403)  # no token, no login
    token = re.search(r'name="csrf_token" value="([^"]+)"', http.get("/login").text).group(1)
    log_in(http, csrf_token=token)
    token = form_token(http, f"/jobs/{job.id}")
    assert http.post(f"/jobs/{job.id}/stop").status_code == 400  # logged in, but no token
    assert job.get_status() == "started"

    asked = http.post(f"/jobs/{job.id}/stop", data={"csrf_token": token})
    assert asked.status_code == 200 and "Stop job" in asked.text and job.get_status() == "started"

    response = http.post(f"/jobs/{job.id}/stop", data={"csrf_token": token, **YES})

    assert response.status_code == 303
    view = wait_for(lambda: (v := http.get(f"/api/jobs/{job.id}").json())["ended"] and v, what="the job to stop")
    assert view["status"] == "stopped"
    # The attempt ends with the job, on the page and in the API: not "running" with no end.
    attempt = view["attempts"][-1]
    assert attempt["outcome"] == "stopped" and attempt["ended_at"], attempt
    assert view["ended_at"] and view["duration_seconds"] is not None
    assert view["error"] == "stopped on request"
    page = http.get(f"/jobs/{job.id}").text
    assert "running" not in re.sub(r"<[^>]+>", " ", page.split("<h2>Attempts</h2>")[1].split("</table>")[0])
    assert 'data-field="error">stopped on request<' in page  # the traceback stays for operators only


def test_canceling_a_newsletter_that_just_expired_leaves_no_key_behind(app, redis):
    """The batch can expire between the page's read and the cancel: no TTL-less hash may appear."""
    batch_id = "0" * 32
    redis.hset(newsletter.batch_key(batch_id), "subject", "x")
    assert newsletter.mark_canceled(redis, batch_id, 1) is True
    assert newsletter.mark_canceled(redis, batch_id, 2) is True  # already flagged: the first time stays
    assert redis.hget(newsletter.batch_key(batch_id), "canceled_at") == b"1"
    redis.delete(newsletter.batch_key(batch_id))  # expired

    assert newsletter.mark_canceled(redis, batch_id, 3) is False
    assert not redis.exists(newsletter.batch_key(batch_id))
