"""Running a job now, at a time or after a delay: from every form and from the JSON API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from offload.scheduling import ScheduleError, parse_when
from tests.conftest import queued_job_count, wait_for

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
LIMITS = {"max_ahead": 7 * 86400, "tolerance": 60, "now": NOW}


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@pytest.mark.parametrize(
    ("run_at", "run_in", "expected"),
    [
        (None, None, None),
        ("", "", None),
        ("2026-05-01T13:00:00Z", None, NOW + timedelta(hours=1)),
        ("2026-05-01T15:00:00+02:00", None, NOW + timedelta(hours=1)),
        ("2026-05-01T13:00", None, NOW + timedelta(hours=1)),  # no offset: UTC
        ("2026-05-01T11:59:30Z", None, None),  # just past, within the tolerance: now
        (None, 90, NOW + timedelta(seconds=90)),
        (None, "90", NOW + timedelta(seconds=90)),
        (None, 0, None),
    ],
)
def test_parse_when_gives_the_utc_time_or_none_for_now(run_at, run_in, expected):
    assert parse_when(run_at, run_in, **LIMITS) == expected


@pytest.mark.parametrize(
    ("run_at", "run_in", "field", "message"),
    [
        ("2026-05-01T11:58:00Z", None, "run_at", "in the past"),
        ("2026-05-09T12:00:00Z", None, "run_at", "at most 7 days ahead"),
        ("tomorrow", None, "run_at", "ISO 8601"),
        (1714560000, None, "run_at", "ISO 8601"),
        (None, -1, "run_in", "negative"),
        (None, 7 * 86400 + 1, "run_in", "at most"),
        (None, 1.5, "run_in", "whole number"),
        (None, True, "run_in", "whole number"),
        (None, "soon", "run_in", "whole number"),
        ("2026-05-01T13:00:00Z", 60, "run_in", "not both"),
    ],
)
def test_parse_when_names_the_wrong_field(run_at, run_in, field, message):
    with pytest.raises(ScheduleError, match=message) as caught:
        parse_when(run_at, run_in, **LIMITS)

    assert caught.value.field == field


def test_every_task_form_offers_the_schedule_fields(client):
    page = client.get("/").get_data(as_text=True)

    assert page.count('name="run_at"') == page.count('name="run_in"') == page.count('action="/tasks/')


def test_a_form_with_a_delay_schedules_the_job_and_its_page_shows_when(client, redis):
    before = datetime.now(UTC)

    response = client.post("/tasks/crunch_numbers", data={"limit": "1000", "run_in": "3600"})

    assert response.status_code == 303
    job = client.get("/api" + response.headers["Location"]).get_json()
    assert job["status"] == "scheduled"
    when = parse_time(job["scheduled_for"])
    assert before + timedelta(seconds=3599) <= when <= datetime.now(UTC) + timedelta(seconds=3601)
    assert redis.llen("rq:queue:default") == 0
    assert redis.zcard("rq:scheduled:default") == 1
    # The job's key outlives the wait (JOB_TTL counts from when it is queued).
    assert redis.ttl(f"rq:job:{job['id']}") > 7 * 86400
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert job["scheduled_for"] in page


def test_the_api_schedules_at_a_given_time(client, redis):
    at = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)

    response = client.post(
        "/api/jobs", json={"task": "crunch_numbers", "params": {"limit": 100}, "run_at": at.isoformat()}
    )

    assert response.status_code == 202
    assert response.get_json()["status"] == "scheduled"
    assert parse_time(response.get_json()["scheduled_for"]) == at


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"run_at": "2001-01-01T00:00:00Z"}, "run_at"),
        ({"run_at": "2999-01-01T00:00:00Z"}, "run_at"),
        ({"run_at": "next week"}, "run_at"),
        ({"run_in": -10}, "run_in"),
        ({"run_in": 10**9}, "run_in"),
        ({"run_in": "ten"}, "run_in"),
        ({"run_in": 10, "run_at": "2999-01-01T00:00:00Z"}, "run_in"),
    ],
)
def test_a_bad_time_is_a_400_naming_the_field_and_enqueues_nothing(client, redis, extra, field):
    response = client.post("/api/jobs", json={"task": "crunch_numbers", "params": {"limit": 100}, **extra})

    assert response.status_code == 400
    assert field in response.get_json()["fields"]
    assert queued_job_count(redis) == 0


def test_a_bad_time_in_a_form_is_shown_on_its_field(client, redis):
    response = client.post("/tasks/crunch_numbers", data={"limit": "1000", "run_at": "2001-01-01T00:00"})

    assert response.status_code == 400
    assert 'id="crunch_numbers-run_at-error"' in response.get_data(as_text=True)
    assert queued_job_count(redis) == 0


@pytest.mark.e2e
def test_a_delayed_job_waits_then_runs_on_the_worker(http: httpx.Client):
    created = http.post("/api/jobs", json={"task": "crunch_numbers", "params": {"limit": 1000}, "run_in": 2}).json()
    assert created["status"] == "scheduled"

    job = wait_for(lambda: (job := http.get(created["api_url"]).json())["ended"] and job, timeout=30, what="the job")

    assert job["status"] == "finished"
    # RQ keeps due times in whole seconds: the job may start up to a second before the exact time.
    assert parse_time(job["started_at"]) >= parse_time(created["scheduled_for"]) - timedelta(seconds=1)
