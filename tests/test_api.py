"""The JSON API, in process against a real Redis: 202 + Location, and 4xx that enqueue nothing."""

from __future__ import annotations

import json
import zlib

import pytest

from tests.conftest import log_in, queued_job_count


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


def test_a_refused_newsletter_answers_a_json_client_in_its_own_terms(client, redis):
    log_in(client)  # the newsletter is for signed-in users
    body = {"subject": "Hi", "body": "Hello", "recipients": ["ada@example.org", "not-an-address"]}

    response = client.post("/api/newsletters", json=body)

    assert response.status_code == 400
    answer = response.get_json()
    message = answer["fields"]["recipients"]
    assert '"invalid_recipients"' in message and '"skip_invalid": true' in message
    assert "listed below" not in message and "choose to skip" not in message
    assert answer["invalid_recipients"][0]["address"] == "not-an-address"
    assert queued_job_count(redis) == 0


def test_the_openapi_document_is_built_from_the_models_that_validate_the_forms(client):
    from tasks import offload

    document = client.get("/api/openapi.json").get_json()

    assert document["openapi"].startswith("3.1")
    schemas = document["components"]["schemas"]
    crunch = offload.tasks["crunch_numbers"].params
    assert schemas["crunch_numbers_job"]["properties"]["params"]["$ref"].endswith(crunch.__name__)
    assert schemas[crunch.__name__]["properties"] == crunch.model_json_schema()["properties"]
    assert set(document["paths"]["/api/jobs/{job_id}"]) == {"get", "delete"}
    assert "generate_report" in schemas["JobRequest"]["discriminator"]["mapping"]


def test_the_job_list_shows_a_client_its_own_jobs_in_pages_and_an_operator_every_job(app, client):

    made = [client.post("/api/jobs", json={"task": "crunch_numbers", "params": {"limit": 100}}) for _ in range(3)]
    ids = [response.get_json()["id"] for response in made]
    other = app.test_client()
    other_id = other.post("/api/jobs", json={"task": "crunch_numbers", "params": {"limit": 100}}).get_json()["id"]

    first = client.get("/api/jobs?limit=2").get_json()
    second = client.get(first["next"]).get_json()

    assert [job["id"] for job in first["jobs"] + second["jobs"]] == ids[::-1]
    assert second["next"] is None
    assert [job["id"] for job in other.get("/api/jobs").get_json()["jobs"]] == [other_id]
    assert client.get("/api/jobs?state=finished").get_json()["jobs"] == []
    assert client.get("/api/jobs?task=generate_report").get_json()["jobs"] == []
    assert len(client.get("/api/jobs?task=crunch_numbers&queue=default").get_json()["jobs"]) == 3
    assert client.get("/api/jobs?state=exploded").status_code == 400
    assert client.get("/api/jobs?limit=0").get_json()["error"].startswith("limit must be")
    operator = app.test_client()
    log_in(operator)
    assert {job["id"] for job in operator.get("/api/jobs").get_json()["jobs"]} == {*ids, other_id}
    assert operator.get("/api/jobs?queue=low").get_json()["jobs"] == []


def test_a_client_cancels_its_own_waiting_job_and_nobody_elses(app, client, redis):
    scheduled = client.post("/api/jobs", json={"task": "crunch_numbers", "params": {"limit": 100}, "run_in": 600})
    job_id = scheduled.get_json()["id"]
    stranger = app.test_client()

    refused = stranger.delete(f"/api/jobs/{job_id}")
    assert refused.status_code == 403 and "cancel" in refused.get_json()["error"]
    assert client.get(f"/api/jobs/{job_id}").get_json()["status"] == "scheduled"

    canceled = client.delete(f"/api/jobs/{job_id}")

    assert canceled.status_code == 200 and canceled.get_json()["status"] == "canceled"
    assert redis.zcard("rq:scheduled:default") == 0
    again = client.delete(f"/api/jobs/{job_id}")
    assert again.status_code == 409 and again.is_json
    assert client.delete("/api/jobs/no-such-job").status_code == 404
    assert client.post(f"/api/jobs/{job_id}").status_code == 405
