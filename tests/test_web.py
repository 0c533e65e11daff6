"""The HTML pages, in process against a real Redis."""

from __future__ import annotations

import re

import pytest

from app import create_app
from tests.conftest import queued_job_count


def test_index_lists_every_task_with_its_form(client):
    page = client.get("/").get_data(as_text=True)

    assert "Crunch numbers" in page
    assert 'action="/tasks/crunch_numbers"' in page
    assert 'name="limit"' in page
    assert 'max="1000000000"' in page
    assert 'name="csrf_token"' in page


def test_valid_form_enqueues_and_redirects_303_to_the_job_page(client, redis):
    response = client.post("/tasks/crunch_numbers", data={"limit": "1000"})

    assert response.status_code == 303
    assert re.fullmatch(r"/jobs/[0-9a-f-]{36}", response.headers["Location"])
    assert queued_job_count(redis) == 1
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "queued" in page and "Crunch numbers" in page


@pytest.mark.parametrize(("value", "message"), [("3", "greater than or equal to 10"), ("ten", "valid integer")])
def test_invalid_form_is_400_with_the_field_error_and_enqueues_nothing(client, redis, value, message):
    response = client.post("/tasks/crunch_numbers", data={"limit": value})

    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert message in page
    assert 'id="crunch_numbers-limit-error"' in page
    assert f'value="{value}"' in page  # what the user typed is kept
    assert queued_job_count(redis) == 0


def test_form_without_csrf_token_is_refused_and_enqueues_nothing(redis_url, redis):
    app = create_app({"OFFLOAD_REDIS_URL": redis_url})  # CSRF on, as in production

    response = app.test_client().post("/tasks/crunch_numbers", data={"limit": "1000"})

    assert response.status_code == 400
    assert "form expired" in response.get_data(as_text=True)
    assert queued_job_count(redis) == 0


def test_form_with_csrf_token_is_accepted(redis_url, redis):
    client = create_app({"OFFLOAD_REDIS_URL": redis_url}).test_client()
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/").get_data(as_text=True)).group(1)

    response = client.post("/tasks/crunch_numbers", data={"limit": "1000", "csrf_token": token})

    assert response.status_code == 303
    assert queued_job_count(redis) == 1


def test_unknown_task_form_is_404(client, redis):
    assert client.post("/tasks/nope", data={}).status_code == 404
    assert queued_job_count(redis) == 0


def test_unknown_job_page_is_a_friendly_404(client):
    response = client.get("/jobs/does-not-exist")

    assert response.status_code == 404
    assert "No such job" in response.get_data(as_text=True)
    assert "Traceback" not in response.get_data(as_text=True)


def test_job_list_shows_recent_jobs_and_filters_by_state(client):
    first = client.post("/tasks/crunch_numbers", data={"limit": "100"}).headers["Location"]

    everything = client.get("/jobs").get_data(as_text=True)
    queued = client.get("/jobs?state=queued").get_data(as_text=True)
    finished = client.get("/jobs?state=finished").get_data(as_text=True)

    assert first in everything and first in queued
    assert first not in finished
    assert "No finished jobs right now" in finished


def test_job_list_refuses_an_unknown_state(client):
    response = client.get("/jobs?state=exploded")

    assert response.status_code == 400
    assert "Unknown state" in response.get_data(as_text=True)


def test_user_text_is_escaped_on_the_index_after_a_bad_submit(client):
    response = client.post("/tasks/crunch_numbers", data={"limit": "<script>alert(1)</script>"})

    page = response.get_data(as_text=True)
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;" in page


def test_healthz_reports_redis(client):
    health = client.get("/healthz").get_json()
    # Ways this Redis can lose jobs are named there (tests/test_redis_hygiene.py), without failing the check.
    assert health["status"] == "ok" and isinstance(health["redis_problems"], list)
