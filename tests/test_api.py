"""The JSON API, in process against a real Redis: 202 + Location, and 4xx that enqueue nothing."""

from __future__ import annotations

import json
import zlib

import pytest

from tests.conftest import queued_job_count


def test_post_job_answers_202_with_location_and_the_job(client, redis):
    response = client.post("/api/jobs", json={"task": "crunch_numbers", "params": {"limit": 1000}})

    assert response.status_code == 202
    job = response.get_json()
    assert response.headers["Location"] == f"/api/jobs/{job['id']}"
    assert job["status"] == "queued"
    assert job["task"] == "crunch_numbers"
    assert job["params"] == {"limit": 1000}
    assert job["url"] == f"/jobs/{job['id']}"
    assert queued_job_count(redis) == 1
    assert redis.llen("rq:queue:default") == 1


def test_get_job_gives_the_same_shape_as_post(client):
    created = client.post("/api/jobs", json={"task": "crunch_numbers", "params": {}}).get_json()

    fetched = client.get(created["api_url"]).get_json()

    assert fetched.keys() == created.keys()
    assert fetched["params"] == {"limit": 100_000_000}  # the registered default


def test_jobs_are_stored_as_json_not_pickle(client, redis):
    job_id = client.post("/api/jobs", json={"task": "crunch_numbers", "params": {"limit": 50}}).get_json()["id"]

    data = zlib.decompress(redis.hget(f"rq:job:{job_id}", "data"))  # RQ compresses the payload
    assert json.loads(data) == ["tasks.crunch_numbers", None, [], {"limit": 50}]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"params": {}}, "task"),
        ({"task": 7}, "task"),
        ({"task": "crunch_numbers", "params": []}, "params"),
        ({"task": "crunch_numbers", "params": {"limit": 5}}, "params.limit"),
        ({"task": "crunch_numbers", "params": {"limit": 10**40}}, "params.limit"),
        ({"task": "crunch_numbers", "params": {"limit": "lots"}}, "params.limit"),
        ({"task": "crunch_numbers", "params": {"limit": 12.5}}, "params.limit"),
        ({"task": "crunch_numbers", "params": {"limit": None}}, "params.limit"),
        ({"task": "crunch_numbers", "params": {"limti": 100}}, "params.limti"),
        ({"task": "crunch_numbers", "extra": 1}, "extra"),
    ],
)
def test_bad_input_gets_400_naming_the_field_and_enqueues_nothing(client, redis, body, field):
    response = client.post("/api/jobs", json=body)

    assert response.status_code == 400
    assert field in response.get_json()["fields"]
    assert queued_job_count(redis) == 0


def test_malformed_json_is_a_400_and_enqueues_nothing(client, redis):
    response = client.post("/api/jobs", data="{not json", content_type="application/json")

    assert response.status_code == 400
    assert response.get_json()["fields"] == {"body": "not valid JSON"}
    assert queued_job_count(redis) == 0


def test_non_object_body_is_a_400(client, redis):
    response = client.post("/api/jobs", json=["crunch_numbers"])

    assert response.status_code == 400
    assert "body" in response.get_json()["fields"]
    assert queued_job_count(redis) == 0


def test_a_form_encoded_body_is_refused_with_415(client, redis):
    response = client.post("/api/jobs", data={"task": "crunch_numbers"})

    assert response.status_code == 415
    assert "application/json" in response.get_json()["error"]
    assert queued_job_count(redis) == 0


def test_unknown_task_is_404_and_enqueues_nothing(client, redis):
    response = client.post("/api/jobs", json={"task": "mine_bitcoin", "params": {}})

    assert response.status_code == 404
    assert response.get_json()["fields"] == {"task": "unknown task"}
    assert queued_job_count(redis) == 0


@pytest.mark.parametrize("job_id", ["0f0e6b7e-5f3c-4c1b-9d1a-000000000000", "rq:queue:default", "x" * 200])
def test_unknown_or_malformed_job_id_is_404(client, job_id):
    response = client.get(f"/api/jobs/{job_id}")

    assert response.status_code == 404
    assert "No such job" in response.get_json()["error"]


def test_task_list_describes_each_task_and_its_params(client):
    tasks = {task["name"]: task for task in client.get("/api/tasks").get_json()["tasks"]}

    crunch = tasks["crunch_numbers"]
    assert crunch["queue"] == "default"
    assert crunch["params_schema"]["properties"]["limit"]["maximum"] == 1_000_000_000


def test_wrong_method_is_405_as_json(client):
    response = client.delete("/api/jobs")

    assert response.status_code == 405
    assert "error" in response.get_json()
