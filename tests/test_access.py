"""Who may submit what, and read what: each task's ``access`` level (tasks.py) enforced on every
submit path (the forms, the JSON API, the newsletter) and on every read of a job, as the outside
tester tried it anonymously."""

from __future__ import annotations

import time

from redis import Redis
from rq.job import Job
from rq.serializers import JSONSerializer

from offload import periodic
from tasks import offload
from tests.conftest import log_in, queued_job_count

NEWSLETTER = {"subject": "Hello", "body": "Text", "recipients": ["a@example.org", "b@example.org"]}


def test_anonymous_visitors_cannot_send_a_newsletter_on_any_path(client, redis: Redis):
    form = {"subject": "Hello", "body": "Text", "recipients": "a@example.org\nb@example.org"}

    api = client.post("/api/newsletters", json=NEWSLETTER)
    page = client.post("/newsletter", data=form)
    form_page = client.get("/newsletter")
    one_by_one = client.post(
        "/api/jobs", json={"task": "send_newsletter", "params": {"batch_id": "0" * 32, "to": "a@b.c"}}
    )

    assert api.status_code == 401 and "log in first" in api.get_json()["error"]
    assert page.status_code == 401 and "log in first" in page.get_data(as_text=True)
    assert page.mimetype == "text/html"
    assert form_page.status_code == 302 and form_page.headers["Location"].startswith("/login?next=/newsletter")
    assert one_by_one.status_code == 401
    assert queued_job_count(redis) == 0
    assert not list(redis.scan_iter("offload:newsletter*"))


def test_the_operator_sends_a_newsletter(client, redis: Redis):
    assert log_in(client).status_code == 303

    api = client.post("/api/newsletters", json=NEWSLETTER)

    assert api.status_code == 202
    assert queued_job_count(redis) == 2
    batch_url = api.headers["Location"]
    assert client.get(batch_url).status_code == 200
    # The batch is no more readable anonymously than the form is usable.
    anonymous = client.application.test_client()
    assert anonymous.get(batch_url).status_code == 404


def test_operator_only_tasks_are_refused_to_anonymous_visitors_on_the_api_and_the_forms(client, redis: Redis):
    for name in ("cleanup_expired", "hourly_digest"):
        api = client.post("/api/jobs", json={"task": name, "params": {}})
        form = client.post(f"/tasks/{name}", data={})
        assert api.status_code == 401, name
        assert api.get_json()["error"].endswith("log in first (/login). Nothing was started.")
        assert form.status_code == 401, name
    assert queued_job_count(redis) == 0

    assert log_in(client).status_code == 303
    assert client.post("/api/jobs", json={"task": "hourly_digest", "params": {}}).status_code == 202


def test_the_forms_page_and_the_task_list_offer_only_what_the_visitor_may_submit(client):
    anonymous_page = client.get("/").get_data(as_text=True)
    anonymous_tasks = {task["name"] for task in client.get("/api/tasks").get_json()["tasks"]}

    assert 'id="task-crunch_numbers"' in anonymous_page
    for name in ("send_newsletter", "cleanup_expired", "hourly_digest"):
        assert f'id="task-{name}"' not in anonymous_page
        assert name not in anonymous_tasks
    assert "crunch_numbers" in anonymous_tasks

    assert log_in(client).status_code == 303
    operator_page = client.get("/").get_data(as_text=True)
    for name in ("send_newsletter", "cleanup_expired", "hourly_digest"):
        assert f'id="task-{name}"' in operator_page


def test_periodic_results_at_predictable_ids_are_not_readable_anonymously(app, client, redis: Redis):
    now = time.time()
    ids = periodic.enqueue_due(redis, app.config, offload.tasks, {"low"}, now=now)
    digest = f"periodic-hourly_digest-{int(now // 3600)}"
    assert digest in ids

    for job_id in ids:
        assert client.get(f"/api/jobs/{job_id}").status_code == 404, job_id
        assert client.get(f"/jobs/{job_id}").status_code == 404, job_id

    assert log_in(client).status_code == 303
    assert client.get(f"/api/jobs/{digest}").get_json()["task"] == "hourly_digest"
    assert client.get(f"/jobs/{digest}").status_code == 200


def test_a_forged_session_listing_an_operators_job_cannot_cancel_it_on_any_path(app, client, redis: Redis):
    # The outside tester's attack: with SECRET_KEY known, a session cookie can claim any job as
    # "mine". The test client's session is that cookie, signed with the app's key.
    digest = next(i for i in periodic.enqueue_due(redis, app.config, offload.tasks, {"low"}) if "digest" in i)
    with client.session_transaction() as session:
        session["my_jobs"] = [digest]

    page = client.post(f"/jobs/{digest}/withdraw")
    api = client.delete(f"/api/jobs/{digest}")

    assert page.status_code == 404 and api.status_code == 404
    assert Job.fetch(digest, connection=redis, serializer=JSONSerializer).get_status() == "queued"
    # The operator, who may read it, still cancels it from the same page.
    assert log_in(client).status_code == 303
    assert client.post(f"/jobs/{digest}/withdraw").status_code == 303
    assert Job.fetch(digest, connection=redis, serializer=JSONSerializer).get_status() == "canceled"


def test_a_job_of_no_registered_task_is_the_operators_alone(client, queue):
    job = queue.enqueue("os.getcwd")

    assert client.get(f"/api/jobs/{job.id}").status_code == 404
    assert log_in(client).status_code == 303
    assert client.get(f"/api/jobs/{job.id}").status_code == 200


def test_a_public_task_stays_open_to_anyone(client, redis: Redis):
    created = client.post("/api/jobs", json={"task": "crunch_numbers", "params": {"limit": 100}})

    assert created.status_code == 202
    assert client.get(created.headers["Location"]).status_code == 200


def test_a_job_id_with_a_trailing_newline_is_a_404_not_a_500(client):
    # `$` in the id pattern matched before a final newline, which RQ then refused with a ValueError.
    assert client.get("/jobs/0%0A").status_code == 404
    assert client.get("/api/jobs/0%0A").status_code == 404
