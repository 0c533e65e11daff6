"""Newsletters end to end: the stock ``rq worker`` CLI mails through a real SMTP server
(aiosmtpd, in this process) that accepts, refuses for a while, refuses for good, or drops
the line; every recipient ends with exactly one mail, or a failure with its reason."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from rq import Queue, Retry
from rq.job import Job
from rq.serializers import JSONSerializer

from offload import jobs
from offload.jobs import attempts as job_attempts
from offload.workloads import newsletter
from tests.conftest import OPERATOR_PASSWORD, OPERATOR_USERNAME, Stack, wait_for
from tests.mailserver import MailServer, mail_server

pytestmark = pytest.mark.e2e

FAST_RETRY = Retry(max=8, interval=1)
"""The task's policy waits minutes between attempts; these tests wait a second."""


@pytest.fixture
def smtp() -> Iterator[MailServer]:
    with mail_server() as server:
        yield server


@pytest.fixture
def stack_env(smtp: MailServer) -> dict[str, str]:
    return {"SMTP_URL": f"smtp://127.0.0.1:{smtp.port}"}


@pytest.fixture
def workers(workers: Stack) -> Stack:
    """conftest's workers, mailing through ``smtp``, with the README's worker command running;
    call ``start_web()`` for the web too."""
    workers.start_worker()
    return workers


def submit(app, recipients: list[str], retry: Retry = FAST_RETRY) -> str:
    """Enqueue a batch as the form does, with a short retry policy."""
    with app.app_context():
        text = newsletter.NewsletterText(subject="Exactly once", body="Hello there.")
        return newsletter.submit_batch(jobs.get_queue("low"), text, recipients, config=app.config, retry=retry)


def finished(redis, batch_id: str, timeout: float = 90) -> dict:
    return wait_for(
        lambda: (batch := newsletter.batch_view(redis, batch_id)) and batch["done"] and batch,
        timeout=timeout,
        what=f"batch {batch_id} to finish",
    )


def test_the_form_mails_every_recipient_once_and_the_batch_page_shows_it(workers, smtp, redis):
    base_url = workers.start_web()
    recipients = [f"reader{i}@example.org" for i in range(20)]
    with httpx.Client(base_url=base_url, timeout=10) as http:
        token = re.search(r'name="csrf_token" value="([^"]+)"', http.get("/login").text).group(1)
        login = {"username": OPERATOR_USERNAME, "password": OPERATOR_PASSWORD, "csrf_token": token}
        assert http.post("/login", data=login).status_code == 303  # the newsletter is for signed-in users
        token = re.search(r'name="csrf_token" value="([^"]+)"', http.get("/newsletter").text).group(1)
        form = {"subject": "Issue #1", "body": "Hello.", "recipients": "\n".join(recipients), "csrf_token": token}

        response = http.post("/newsletter", data=form)

        assert response.status_code == 303
        batch_id = response.headers["Location"].rsplit("/", 1)[1]
        batch = finished(redis, batch_id)
        page = http.get(response.headers["Location"]).text

    assert (batch["sent"], batch["failed"], batch["pending"]) == (20, 0, 0)
    assert smtp.received() == dict.fromkeys(recipients, 1)
    assert {message["Subject"] for _, message in smtp.messages} == {"Issue #1"}
    assert 'data-field="sent">20<' in page and 'src="/offload-static/batch.js"' in page


def test_a_server_that_refuses_for_a_while_still_delivers_each_mail_exactly_once(workers, smtp, redis, app):
    smtp.refuse_next = 24  # half answered 451, half a dropped connection
    recipients = [f"patient{i}@example.org" for i in range(8)]

    batch = finished(redis, submit(app, recipients))

    assert (batch["sent"], batch["failed"], batch["pending"]) == (8, 0, 0)
    assert smtp.received() == dict.fromkeys(recipients, 1)
    assert (smtp.refused, smtp.dropped) == (12, 12)
    ids = {recipient: message["Message-ID"] for recipient, message in smtp.messages}
    assert len(set(ids.values())) == 8 and all(batch["id"] in value for value in ids.values())


def test_a_batch_turned_away_comes_back_spread_over_its_retry_interval(workers, smtp, redis, app):
    smtp.refuse_next = 6  # every recipient's first attempt: a 451 or a dropped connection
    recipients = [f"spread{i}@example.org" for i in range(6)]

    batch_id = submit(app, recipients, retry=Retry(max=3, interval=[100, 1, 1]))

    scheduled = Queue("low", connection=redis, serializer=JSONSerializer).scheduled_job_registry
    wait_for(lambda: scheduled.count == 6, what="every mail to wait for its retry")
    jobs_ = Job.fetch_many(scheduled.get_job_ids(), connection=redis, serializer=JSONSerializer)
    waits = [job.retry_intervals[0] for job in jobs_]
    assert all(80 <= wait <= 120 for wait in waits), waits  # 100 s give or take 20%
    assert len(set(waits)) > 1, waits  # drawn per mail when it failed, not one wait for all
    assert {job.retry_intervals[1:] == [1, 1] for job in jobs_} == {True}
    assert newsletter.batch_view(redis, batch_id)["pending"] == 6 and smtp.received() == {}


def test_a_recipient_refused_for_good_fails_alone_without_retries(workers, smtp, redis, app):
    smtp.permanent["gone@example.org"] = "550 5.1.1 No such mailbox here"
    recipients = ["first@example.org", "gone@example.org", "last@example.org"]

    batch = finished(redis, submit(app, recipients))

    assert (batch["sent"], batch["failed"], batch["pending"]) == (2, 1, 0)
    assert smtp.received() == {"first@example.org": 1, "last@example.org": 1}
    [failure] = batch["failures"]
    assert failure["to"] == "gone@example.org"
    assert failure["reason"] == "recipient refused: 550 5.1.1 No such mailbox here"
    with app.app_context():
        job = jobs.fetch_job(failure["job_id"])
        assert job.get_status() == "failed"
        assert len(job_attempts(job)) == 1  # the retry policy was not applied to a 5xx


def test_a_job_run_again_after_the_server_accepted_its_mail_does_not_mail_again(workers, smtp, redis, app):
    batch_id = submit(app, ["once@example.org"])
    finished(redis, batch_id)
    queue = Queue("low", connection=redis, serializer=JSONSerializer)

    again = queue.enqueue("tasks.send_newsletter", batch_id=batch_id, to="once@example.org")
    wait_for(lambda: again.get_status() == "finished", what="the second job to finish")

    assert again.return_value()["already_delivered"] is True
    assert smtp.received() == {"once@example.org": 1}
    assert newsletter.batch_view(redis, batch_id)["sent"] == 1


def test_a_connection_dropped_after_the_server_accepted_is_not_retried(workers, smtp, redis, app):
    smtp.drop_after_accept = True
    recipients = [f"abrupt{i}@example.org" for i in range(4)]

    batch = finished(redis, submit(app, recipients))

    assert (batch["sent"], batch["failed"]) == (4, 0)
    assert smtp.received() == dict.fromkeys(recipients, 1)
