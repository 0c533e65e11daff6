"""The HTML pages, in process against a real Redis."""

from __future__ import annotations

import json
import re

import pytest

from app import create_app
from tests.conftest import log_in, queued_job_count


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


def _described_by(html: str) -> dict[str, str]:
    """Each input/select/textarea id -> the text of the elements its aria-describedby names."""
    from html.parser import HTMLParser

    class Reader(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.refs: dict[str, list[str]] = {}
            self.texts: dict[str, str] = {}
            self.open: list[str] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            found = dict(attrs)
            if tag in ("input", "select", "textarea") and found.get("id") and found.get("type") != "hidden":
                self.refs[found["id"] or ""] = (found.get("aria-describedby") or "").split()
            if tag == "small" and found.get("id"):
                self.open.append(found["id"] or "")
                self.texts[found["id"] or ""] = ""

        def handle_data(self, data: str) -> None:
            for element_id in self.open:
                self.texts[element_id] += data

        def handle_endtag(self, tag: str) -> None:
            if tag == "small" and self.open:
                self.open.pop()

    reader = Reader()
    reader.feed(html)
    return {
        field: " ".join(reader.texts.get(ref, "<missing>").strip() for ref in refs)
        for field, refs in reader.refs.items()
    }


def test_field_hints_are_tied_to_their_inputs(client):
    from tasks import offload

    log_in(client)  # every form shows to the operator (some tasks are theirs only)
    described = _described_by(client.get("/").get_data(as_text=True))
    for task in offload.tasks.values():
        if task.own_form:
            continue
        for field in task.form_fields():
            if field.get("description"):
                assert described[f"{task.name}-{field['name']}"] == field["description"].strip()
        assert "Leave both empty to run now" in described[f"{task.name}-run_at"]
        assert "Leave both empty to run now" in described[f"{task.name}-run_in"]
    newsletter = _described_by(client.get("/newsletter").get_data(as_text=True))
    assert "One address per line" in newsletter["newsletter-recipients"]
    assert "email" in newsletter["newsletter-recipients_csv"]


def test_a_field_error_replaces_the_hint_it_is_read_with(client):
    page = client.post("/tasks/crunch_numbers", data={"limit": "lots"}).get_data(as_text=True)
    described = _described_by(page)
    assert described["crunch_numbers-limit"] and "<missing>" not in described["crunch_numbers-limit"]
    assert 'id="crunch_numbers-limit-error"' in page


def _cells(page: str, column: int) -> list[str]:
    """The text of one column of the jobs table, row by row."""
    rows = re.findall(r"<tr>(.*?)</tr>", page.split("<tbody>")[1], re.DOTALL)
    return [re.sub(r"<[^>]+>", " ", re.findall(r"<td>(.*?)</td>", row, re.DOTALL)[column]).split()[0] for row in rows]


def test_my_jobs_shows_the_submit_time_it_is_sorted_by_and_the_job_page_agrees(client, redis):
    from rq.job import Job
    from rq.serializers import JSONSerializer

    older = client.post("/tasks/crunch_numbers", data={"limit": "100"}).headers["Location"].rsplit("/", 1)[1]
    newer = client.post("/tasks/crunch_numbers", data={"limit": "100"}).headers["Location"].rsplit("/", 1)[1]
    later = client.post("/tasks/crunch_numbers", data={"limit": "100", "run_in": "3600"})
    scheduled = later.headers["Location"].rsplit("/", 1)[1]
    # The older job was retried after the others were submitted: its enqueued_at is now the newest.
    redis.hset(f"rq:job:{older}", "enqueued_at", "2099-01-01T00:00:00.000000Z")

    page = client.get("/jobs").get_data(as_text=True)

    views = {job_id: client.get(f"/api/jobs/{job_id}").get_json() for job_id in (older, newer, scheduled)}
    assert '<th scope="col">Submitted</th>' in page
    shown = _cells(page, 4)
    assert shown == [views[job_id]["created_at"] for job_id in (scheduled, newer, older)]
    assert shown == sorted(shown, reverse=True)
    assert "2099" not in page
    # The scheduled job shows the same time in the list and on its page, and when it will run.
    job_page = client.get(f"/jobs/{scheduled}").get_data(as_text=True)
    assert f'data-field="created_at">{views[scheduled]["created_at"]}<' in job_page
    assert f"runs at {views[scheduled]['scheduled_for']}" in page
    assert Job.fetch(scheduled, connection=redis, serializer=JSONSerializer).get_status() == "scheduled"


def test_a_finished_job_that_logged_nothing_says_so_in_the_past_tense(client, redis):
    from rq import Queue, SimpleWorker
    from rq.serializers import JSONSerializer

    queue = Queue("default", connection=redis, serializer=JSONSerializer)
    job = queue.enqueue("tests.fixtures.echo", 1)
    assert "Nothing logged yet." in client.get(f"/jobs/{job.id}").get_data(as_text=True)
    SimpleWorker([queue], connection=redis, serializer=JSONSerializer).work(burst=True)

    page = client.get(f"/jobs/{job.id}").get_data(as_text=True)

    assert "Nothing was logged." in page and "Nothing logged yet." not in page


def test_a_failed_job_shows_its_submitter_a_sentence_not_a_class_path(client, redis):
    from rq import Queue, SimpleWorker
    from rq.serializers import JSONSerializer

    queue = Queue("default", connection=redis, serializer=JSONSerializer)
    failed = queue.enqueue("tests.fixtures.fail_with", "the disk is full")
    crashed = queue.enqueue("tests.fixtures.echo", 1)
    SimpleWorker([queue], connection=redis, serializer=JSONSerializer).work(burst=True)
    # As RQ leaves a job whose work horse died before any attempt was recorded.
    redis.hset(f"rq:job:{crashed.id}", "status", "failed")
    redis.hset(f"rq:job:{crashed.id}", "meta", '{"progress": 0}')
    crashed.refresh()
    with redis.pipeline() as pipe:
        crashed._handle_failure("Work-horse terminated unexpectedly; waitpid returned 9 (signal 9); ", pipe)
        pipe.execute()

    # As the worker records a call_api attempt that the API did not answer.
    attempt = {"started_at": None, "ended_at": None, "outcome": "failed", "worker": "w"}
    redis.hset(
        f"rq:job:{failed.id}",
        "meta",
        json.dumps({"attempts": [{**attempt, "error": "thirdparty.APIUnavailable: no answer within 5 s"}]}),
    )

    view = client.get(f"/api/jobs/{failed.id}").get_json()
    page = client.get(f"/jobs/{failed.id}").get_data(as_text=True)
    crash = client.get(f"/api/jobs/{crashed.id}").get_json()

    assert view["error"] == "No answer within 5 s."
    assert view["attempts"][-1]["error"] == "No answer within 5 s."
    assert "APIUnavailable" not in page and "thirdparty." not in page
    assert "RuntimeError" not in page
    assert crash["error"] == "The worker running this job stopped unexpectedly."


def test_a_newsletter_batch_shows_in_my_jobs_and_only_there(client, app):
    log_in(client)  # the newsletter is for signed-in users
    data = {"subject": "Autumn <news>", "body": "Hello", "recipients": "ada@example.org\nbob@example.org"}
    batch_url = client.post("/newsletter", data=data).headers["Location"]

    page = client.get("/jobs").get_data(as_text=True)

    assert f'href="{batch_url}"' in page
    assert "Autumn &lt;news&gt;" in page and "0 of 2 sent" in page
    other_browser = app.test_client()
    assert batch_url not in other_browser.get("/jobs").get_data(as_text=True)


def _token(client, path: str = "/") -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).get_data(as_text=True)).group(1)


def test_the_submitter_cancels_their_own_scheduled_job_and_nobody_else_can(redis_url, redis):
    csrf_app = create_app({"TESTING": True, "OFFLOAD_REDIS_URL": redis_url})
    submitter, stranger = csrf_app.test_client(), csrf_app.test_client()
    token = _token(submitter)
    created = submitter.post("/tasks/crunch_numbers", data={"limit": "100", "run_in": "600", "csrf_token": token})
    job_url = created.headers["Location"]
    job_id = job_url.rsplit("/", 1)[1]
    page = submitter.get(job_url).get_data(as_text=True)
    assert f'action="/jobs/{job_id}/withdraw"' in page and "Cancel this job" in page
    assert "Cancel this job" not in stranger.get(job_url).get_data(as_text=True)

    assert stranger.post(f"/jobs/{job_id}/withdraw", data={"csrf_token": _token(stranger)}).status_code == 403
    assert submitter.post(f"/jobs/{job_id}/withdraw").status_code == 400  # no CSRF token
    assert submitter.get(f"/api/jobs/{job_id}").get_json()["status"] == "scheduled"

    response = submitter.post(f"/jobs/{job_id}/withdraw", data={"csrf_token": token})

    assert response.status_code == 303 and response.headers["Location"] == job_url
    assert submitter.get(f"/api/jobs/{job_id}").get_json()["status"] == "canceled"
    assert redis.zcard("rq:scheduled:default") == 0
    again = submitter.post(f"/jobs/{job_id}/withdraw", data={"csrf_token": token})
    assert again.status_code == 409


def test_a_json_client_gets_json_errors_from_the_pages_too(client):
    answer = client.get("/jobs/no-such-job", headers={"Accept": "application/json"})
    refused = client.post("/jobs/no-such-job/withdraw", headers={"Accept": "application/json"})
    browser = client.get("/jobs/no-such-job", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})

    assert answer.status_code == 404 and answer.get_json()["error"].startswith("No such job")
    assert refused.status_code == 404 and refused.get_json()["error"].startswith("No such job")
    assert browser.status_code == 404 and "<!doctype html>" in browser.get_data(as_text=True).lower()
