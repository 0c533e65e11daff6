"""The newsletter form and API, in process against a real Redis: what they accept, what they
refuse (and that a refusal enqueues nothing), and the batch they enqueue."""

from __future__ import annotations

import io
import re

import pytest
from rq import Queue
from rq.group import Group
from rq.serializers import JSONSerializer

from app import create_app
from offload.workloads import newsletter
from tasks import offload
from tests.conftest import log_in, queued_job_count

TASKS = offload.tasks


@pytest.fixture
def client(app):
    """The newsletter is for signed-in users only (tests/test_access.py): the operator sends it here."""
    client = app.test_client()
    assert log_in(client).status_code == 303
    return client


def form(recipients: str = "", **extra) -> dict:
    return {"subject": "November news", "body": "Hello,\nwe shipped things.", "recipients": recipients, **extra}


def batch_jobs(redis, batch_id: str) -> list:
    ids = [raw.decode() for raw in redis.smembers(Group.get_key(batch_id))]
    return Queue("low", connection=redis, serializer=JSONSerializer).job_class.fetch_many(
        ids, connection=redis, serializer=JSONSerializer
    )


def test_form_enqueues_one_job_per_distinct_recipient_under_one_batch(client, redis):
    pasted = "Ada@Example.org\nbob@example.org, ada@example.ORG; carol@example.org\n\n  bob@example.org  "

    response = client.post("/newsletter", data=form(pasted))

    assert response.status_code == 303
    batch_id = re.fullmatch(r"/batches/([0-9a-f]{32})", response.headers["Location"]).group(1)
    assert redis.llen("rq:queue:low") == 3
    jobs = batch_jobs(redis, batch_id)
    assert sorted(job.kwargs["to"] for job in jobs) == ["Ada@example.org", "bob@example.org", "carol@example.org"]
    assert {job.kwargs["batch_id"] for job in jobs} == {batch_id}
    assert {job.group_id for job in jobs} == {batch_id}
    assert all(job.retries_left == 6 and len(job.retry_intervals) == 6 for job in jobs)
    assert {job.timeout for job in jobs} == {TASKS["send_newsletter"].timeout}
    # The task's policy, the same for all: each retry's jitter is drawn when a mail fails.
    assert {tuple(job.retry_intervals) for job in jobs} == {tuple(TASKS["send_newsletter"].retry.intervals)}
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "November news" in page and 'data-field="pending">3<' in page
    job_page = client.get(f"/jobs/{jobs[0].id}").get_data(as_text=True)
    assert f'href="/batches/{batch_id}"' in job_page


def test_a_csv_upload_is_read_by_its_email_column_and_merged_with_the_pasted_list(client, redis):
    csv_file = (io.BytesIO(b"name,email\nAda,ada@example.org\nDan,dan@example.org\n"), "list.csv")

    response = client.post(
        "/newsletter", data=form("ADA@example.org", recipients_csv=csv_file), content_type="multipart/form-data"
    )

    assert response.status_code == 303
    batch_id = response.headers["Location"].rsplit("/", 1)[1]
    assert sorted(job.kwargs["to"] for job in batch_jobs(redis, batch_id)) == ["ADA@example.org", "dan@example.org"]


def test_bad_addresses_are_listed_back_and_nothing_is_enqueued(client, redis):
    pasted = "good@example.org\nnot-an-address\nbob@localhost\n<script>@example.org"

    response = client.post("/newsletter", data=form(pasted))

    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert "3 addresses are not valid" in page
    assert "<code>not-an-address</code>" in page and "<code>bob@localhost</code>" in page
    assert "&lt;script&gt;@example.org" in page and "<script>@" not in page
    assert "good@example.org" in page  # what the user typed is kept
    assert queued_job_count(redis) == 0
    assert not list(redis.scan_iter("offload:newsletter*"))


def test_skipping_invalid_addresses_sends_to_the_others(client, redis):
    response = client.post("/newsletter", data=form("good@example.org\nnope", skip_invalid="on"))

    assert response.status_code == 303
    assert redis.llen("rq:queue:low") == 1


def test_more_than_the_maximum_is_refused_with_a_clear_400_and_nothing_enqueued(client, redis):
    pasted = "\n".join(f"reader{i}@example.org" for i in range(10_001))

    response = client.post("/newsletter", data=form(pasted))

    assert response.status_code == 400
    assert "10,001 distinct addresses is more than the 10,000 a newsletter may have" in response.get_data(as_text=True)
    assert queued_job_count(redis) == 0


def test_the_maximum_is_accepted_and_enqueued_in_one_go(client, redis):
    pasted = "\n".join(f"reader{i}@example.org" for i in range(10_000))

    response = client.post("/newsletter", data=form(pasted))

    assert response.status_code == 303
    assert redis.llen("rq:queue:low") == 10_000
    batch = client.get("/api" + response.headers["Location"]).get_json()
    assert (batch["total"], batch["pending"], batch["sent"], batch["failed"]) == (10_000, 10_000, 0, 0)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (form("a@example.org", subject=""), "subject"),
        (form("a@example.org", subject="two\nlines"), "subject"),
        (form("a@example.org", body=""), "body"),
        (form(""), "recipients"),
        (form("a@example.org", run_in="-5"), "run_in"),
        (form("a@example.org", run_at="2001-01-01T00:00"), "run_at"),
    ],
)
def test_each_wrong_field_is_named_and_nothing_is_enqueued(client, redis, data, field):
    response = client.post("/newsletter", data=data)

    assert response.status_code == 400
    assert f'id="newsletter-{field}-error"' in response.get_data(as_text=True)
    assert queued_job_count(redis) == 0


def test_a_csv_that_is_not_utf8_is_refused(client, redis):
    csv_file = (io.BytesIO("café@example.org".encode("utf-16")), "list.csv")

    response = client.post("/newsletter", data=form(recipients_csv=csv_file), content_type="multipart/form-data")

    assert response.status_code == 400
    assert "not UTF-8" in response.get_data(as_text=True)
    assert queued_job_count(redis) == 0


def test_a_scheduled_newsletter_waits_in_the_scheduled_registry(client, redis):
    response = client.post("/newsletter", data=form("a@example.org\nb@example.org", run_in="3600"))

    assert response.status_code == 303
    assert redis.llen("rq:queue:low") == 0
    assert redis.zcard("rq:scheduled:low") == 2
    batch_id = response.headers["Location"].rsplit("/", 1)[1]
    assert {job.get_status() for job in batch_jobs(redis, batch_id)} == {"scheduled"}
    batch = client.get(f"/api/batches/{batch_id}").get_json()
    assert batch["send_at"] > batch["created_at"]


def test_the_api_takes_a_list_and_answers_202_with_the_batch(client, redis):
    body = {"subject": "Hi", "body": "Text", "recipients": ["a@example.org", "A@example.org", "b@example.org"]}

    response = client.post("/api/newsletters", json=body)

    assert response.status_code == 202
    batch = response.get_json()
    assert response.headers["Location"] == f"/api/batches/{batch['id']}"
    assert (batch["total"], batch["pending"]) == (2, 2)
    assert redis.llen("rq:queue:low") == 2


def test_the_api_lists_invalid_recipients_in_its_400(client, redis):
    body = {"subject": "Hi", "body": "Text", "recipients": ["a@example.org", "broken@", "x@y"]}

    response = client.post("/api/newsletters", json=body)

    assert response.status_code == 400
    answer = response.get_json()
    assert "recipients" in answer["fields"]
    assert [entry["address"] for entry in answer["invalid_recipients"]] == ["broken@", "x@y"]
    assert queued_job_count(redis) == 0


def test_newsletter_jobs_cannot_be_started_one_by_one_through_the_jobs_api(client, redis):
    body = {"task": "send_newsletter", "params": {"batch_id": "0" * 32, "to": "a@example.org"}}

    response = client.post("/api/jobs", json=body)

    assert response.status_code == 400
    assert "task" in response.get_json()["fields"]
    assert queued_job_count(redis) == 0


def test_the_newsletter_form_needs_its_csrf_token(redis_url, redis):
    app = create_app({"OFFLOAD_REDIS_URL": redis_url})  # CSRF on, as in production

    response = app.test_client().post("/newsletter", data=form("a@example.org"))

    assert response.status_code == 400
    assert queued_job_count(redis) == 0


def test_an_unknown_batch_is_404(client):
    assert client.get(f"/batches/{'f' * 32}").status_code == 404
    assert client.get("/api/batches/not-an-id").status_code == 404


def test_reading_recipients_drops_case_insensitive_duplicates_and_keeps_the_first_spelling():
    recipients = newsletter.read_recipients("X@Example.org\nx@example.ORG\ny@example.org")

    assert recipients.valid == ["X@example.org", "y@example.org"]
    assert recipients.duplicates == 1


def test_the_task_list_links_to_the_newsletter_form_instead_of_a_generated_one(client):
    page = client.get("/").get_data(as_text=True)

    assert 'href="/newsletter"' in page
    assert 'action="/tasks/send_newsletter"' not in page
    assert client.get("/newsletter").status_code == 200


def test_callbacks_stored_by_a_release_before_the_package_still_resolve(redis):
    """Newsletter jobs queued before the move name ``newsletter.on_mail_failed``; the worker's job class finds it."""
    from rq import Callback, Queue
    from rq.serializers import JSONSerializer

    from offload.worker import OffloadJob
    from offload.workloads.newsletter import on_mail_failed, on_mail_stopped

    queue = Queue("low", connection=redis, serializer=JSONSerializer)
    job = queue.enqueue(
        "tests.fixtures.burn_cpu",
        0,
        on_failure=Callback("newsletter.on_mail_failed"),
        on_stopped=Callback("newsletter.on_mail_stopped"),
    )

    stored = OffloadJob.fetch(job.id, connection=redis, serializer=JSONSerializer)

    assert stored.failure_callback is on_mail_failed
    assert stored.stopped_callback is on_mail_stopped


def test_an_internationalized_domain_is_kept_in_its_ascii_form_for_the_smtp_envelope():
    """``a@exämple.com`` was accepted as typed, then every attempt to mail it failed on smtplib's
    ASCII envelope (UnicodeEncodeError), retried for 1.7 h."""
    recipients = newsletter.read_recipients("a@exämple.com, b@example.org")

    assert recipients.valid == ["a@xn--exmple-cua.com", "b@example.org"]
    assert all(address.isascii() for address in recipients.valid)
