"""My jobs for everyone; all jobs, the queue overview and tracebacks for operators only."""

from __future__ import annotations

import re

import httpx
import pytest
from redis.client import Pipeline
from rq import Queue, SimpleWorker
from rq.serializers import JSONSerializer

from tests.conftest import OPERATOR_PASSWORD, OPERATOR_USERNAME, log_in, wait_for


def submit(client, limit: str = "1000") -> str:
    response = client.post("/tasks/crunch_numbers", data={"limit": limit})
    assert response.status_code == 303
    return response.headers["Location"].rsplit("/", 1)[1]


def test_my_jobs_lists_only_the_jobs_this_browser_submitted(app):
    mine, theirs = app.test_client(), app.test_client()
    my_job, their_job = submit(mine), submit(theirs)

    page = mine.get("/jobs").get_data(as_text=True)

    assert my_job in page and their_job not in page
    assert "No jobs right now" in app.test_client().get("/jobs").get_data(as_text=True)


def test_my_jobs_keeps_the_newest_thirty(app):
    client = app.test_client()
    ids = [submit(client) for _ in range(31)]

    page = client.get("/jobs").get_data(as_text=True)

    assert ids[0] not in page
    assert all(job_id[:8] in page for job_id in ids[1:])


@pytest.mark.parametrize("path", ["/operator/jobs", "/operator/queues"])
def test_operator_pages_send_anonymous_users_to_login(client, path):
    response = client.get(path)

    assert response.status_code == 302
    assert response.headers["Location"] == f"/login?next={path}"


def test_all_jobs_filters_by_state_task_and_queue(app, redis):
    visitor, operator = app.test_client(), app.test_client()
    log_in(operator)
    queued = submit(visitor)
    low = Queue("low", connection=redis, serializer=JSONSerializer).enqueue("tests.fixtures.fail_with", "x")
    SimpleWorker(
        [Queue("low", connection=redis, serializer=JSONSerializer)], connection=redis, serializer=JSONSerializer
    ).work(burst=True)

    def listed(query: str) -> str:
        response = operator.get(f"/operator/jobs{query}")
        assert response.status_code == 200
        return response.get_data(as_text=True)

    assert queued[:8] in listed("") and low.id[:8] in listed("")
    assert queued[:8] in listed("?state=queued") and low.id[:8] not in listed("?state=queued")
    assert low.id[:8] in listed("?state=failed&queue=low") and queued[:8] not in listed("?queue=low")
    assert queued[:8] in listed("?task=crunch_numbers") and low.id[:8] not in listed("?task=crunch_numbers")
    assert "No failed jobs match" in listed("?state=failed&queue=default")
    assert operator.get("/operator/jobs?queue=nope").status_code == 400
    assert operator.get("/operator/jobs?task=nope").status_code == 400


def test_queue_overview_counts_each_queue_and_registry(app, redis):
    operator = app.test_client()
    log_in(operator)
    submit(operator)
    submit(operator)
    low = Queue("low", connection=redis, serializer=JSONSerializer)
    low.enqueue("tests.fixtures.fail_with", "x")
    SimpleWorker([low], connection=redis, serializer=JSONSerializer).work(burst=True)

    page = operator.get("/operator/queues").get_data(as_text=True)

    default_row = re.search(r'<tr data-queue="default">(.*?)</tr>', page, re.DOTALL).group(1)
    low_row = re.search(r'<tr data-queue="low">(.*?)</tr>', page, re.DOTALL).group(1)
    assert '<td data-count="queued">2</td>' in default_row
    assert '<td data-count="failed">0</td>' in default_row
    assert '<td data-count="queued">0</td>' in low_row
    assert 'data-count="failed"><a href="/operator/jobs?queue=low&amp;state=failed">1</a>' in low_row
    assert "No worker is running" in page


def test_traceback_shows_for_operators_only(app, redis):
    queue = Queue("default", connection=redis, serializer=JSONSerializer)
    job = queue.enqueue("tests.fixtures.fail_with", "<b>secret detail</b>")
    SimpleWorker([queue], connection=redis, serializer=JSONSerializer).work(burst=True)
    visitor, operator = app.test_client(), app.test_client()
    log_in(operator)

    visitor_page = visitor.get(f"/jobs/{job.id}").get_data(as_text=True)
    operator_page = operator.get(f"/jobs/{job.id}").get_data(as_text=True)

    assert "Traceback (most recent call last)" not in visitor_page
    assert "traceback" not in visitor.get(f"/api/jobs/{job.id}").get_json()
    assert "Traceback (most recent call last)" in operator_page
    assert "&lt;b&gt;secret detail&lt;/b&gt;" in operator_page and "<b>secret" not in operator_page
    assert "Traceback (most recent call last)" in operator.get(f"/api/jobs/{job.id}").get_json()["traceback"]


@pytest.mark.e2e
def test_queue_overview_shows_what_each_busy_worker_runs(stack, redis):
    queue = Queue("default", connection=redis, serializer=JSONSerializer)
    job = queue.enqueue("tests.fixtures.block_until_released", "release-overview", meta={"task": "crunch_numbers"})
    with httpx.Client(base_url=stack.base_url, timeout=10) as http:
        token = re.search(r'name="csrf_token" value="([^"]+)"', http.get("/login").text).group(1)
        http.post("/login", data={"username": OPERATOR_USERNAME, "password": OPERATOR_PASSWORD, "csrf_token": token})
        try:
            wait_for(lambda: job.get_status(refresh=True) == "started", what="the job to start")

            page = http.get("/operator/queues").text

            assert f'href="/jobs/{job.id}"' in page
            assert ">busy<" in page
        finally:
            redis.rpush("release-overview", "go")


def _listed_ids(page: str) -> list[str]:
    return re.findall(r'<tr data-job-id="([^"]+)">', page)


def test_all_jobs_pages_through_every_job_with_an_exact_count(app, redis):
    operator = app.test_client()
    log_in(operator)
    queue = Queue("low", connection=redis, serializer=JSONSerializer)
    ids = [queue.enqueue("tests.fixtures.echo", n).id for n in range(130)]  # more than the old limit of 100

    pages = [operator.get(f"/operator/jobs?page={n}").get_data(as_text=True) for n in (1, 2, 3)]

    assert all('id="job-count">130 jobs<' in page for page in pages)
    seen = [job_id for page in pages for job_id in _listed_ids(page)]
    assert sorted(seen) == sorted(ids) and len(seen) == 130  # every job once, none missing
    assert "Page 3 of 3" in pages[2] and 'rel="prev"' in pages[2] and 'rel="next"' not in pages[2]
    assert operator.get("/operator/jobs?page=0").status_code == 400
    assert operator.get("/operator/jobs?page=x").status_code == 400


def test_all_jobs_reads_jobs_a_thousand_a_round_trip_however_many_redis_holds(app, redis, monkeypatch):
    # A day at 10 jobs/s keeps 864,000 jobs: a listing must not hold them all at once (issue 14).
    operator = app.test_client()
    log_in(operator)
    queue = Queue("low", connection=redis, serializer=JSONSerializer)
    jobs = queue.enqueue_many([Queue.prepare_data("tests.fixtures.echo", (n,)) for n in range(2300)])
    pipelines: list[int] = []
    execute = Pipeline.execute

    def counted(self, *args, **kwargs):
        pipelines.append(len(self.command_stack))
        return execute(self, *args, **kwargs)

    monkeypatch.setattr(Pipeline, "execute", counted)
    first, last = (operator.get(f"/operator/jobs?page={n}").get_data(as_text=True) for n in (1, 46))

    assert 'id="job-count">2300 jobs<' in first and "Page 46 of 46" in last
    created = sorted(jobs, key=lambda job: (job.created_at, job.id), reverse=True)
    assert _listed_ids(first) == [job.id for job in created[:50]]
    assert _listed_ids(last) == [job.id for job in created[-50:]]
    assert max(pipelines) <= 1000 and sum(pipelines) >= 2 * 2300  # every job read, a chunk at a time


def test_all_jobs_finds_a_job_by_its_id_or_a_word_in_its_arguments(app, redis):
    operator = app.test_client()
    log_in(operator)
    queue = Queue("default", connection=redis, serializer=JSONSerializer)
    wanted = queue.enqueue("tests.fixtures.echo", {"customer": "Zoë Quartermaine"})
    others = [queue.enqueue("tests.fixtures.echo", {"customer": f"someone {n}"}) for n in range(5)]

    by_word = operator.get("/operator/jobs?q=quartermaine").get_data(as_text=True)
    by_id = operator.get(f"/operator/jobs?q={wanted.id[:13]}").get_data(as_text=True)

    assert _listed_ids(by_word) == [wanted.id] and 'id="job-count">1 job<' in by_word
    assert _listed_ids(by_id) == [wanted.id]
    assert sorted(_listed_ids(operator.get("/operator/jobs?q=someone").get_data(as_text=True))) == sorted(
        job.id for job in others
    )
    assert operator.get("/operator/jobs?q=" + "x" * 201).status_code == 400


def test_all_jobs_filters_by_creation_time(app, redis):
    operator = app.test_client()
    log_in(operator)
    queue = Queue("default", connection=redis, serializer=JSONSerializer)
    old, new = queue.enqueue("tests.fixtures.echo", "old"), queue.enqueue("tests.fixtures.echo", "new")
    redis.hset(old.key, "created_at", "2020-01-01T00:00:00.000000Z")

    assert _listed_ids(operator.get("/operator/jobs?since=1h").get_data(as_text=True)) == [new.id]
    assert set(_listed_ids(operator.get("/operator/jobs").get_data(as_text=True))) == {old.id, new.id}
    assert operator.get("/operator/jobs?since=1y").status_code == 400


def test_operator_pages_list_on_demand_queues_and_their_jobs(app, redis):
    operator = app.test_client()
    log_in(operator)
    job = Queue("ondemand", connection=redis, serializer=JSONSerializer).enqueue("tests.fixtures.echo", 1)

    queues_page = operator.get("/operator/queues").get_data(as_text=True)
    listed = operator.get("/operator/jobs?queue=ondemand").get_data(as_text=True)

    assert '<tr data-queue="ondemand">' in queues_page
    assert _listed_ids(listed) == [job.id]


def test_jobs_waiting_for_a_concurrency_slot_are_listed_and_counted(app, redis):
    app.config["OFFLOAD_THIRD_PARTY_CONCURRENCY"] = 1
    visitor, operator = app.test_client(), app.test_client()
    log_in(operator)
    ids = [
        visitor.post("/api/jobs", json={"task": "call_api", "params": {"path": f"/get?n={n}"}}).get_json()["id"]
        for n in range(3)
    ]

    waiting = operator.get("/operator/jobs?state=rate_limited").get_data(as_text=True)
    everything = operator.get("/operator/jobs").get_data(as_text=True)
    queues_page = operator.get("/operator/queues").get_data(as_text=True)

    assert sorted(_listed_ids(waiting)) == sorted(ids[1:])  # the first took the only slot
    assert sorted(_listed_ids(everything)) == sorted(ids) and "rate limited" in everything
    default_row = re.search(r'<tr data-queue="default">(.*?)</tr>', queues_page, re.DOTALL).group(1)
    assert (
        'data-count="rate_limited"><a href="/operator/jobs?queue=default&amp;state=rate_limited">2</a>' in default_row
    )


def test_periodic_job_ids_are_shown_whole_and_times_carry_utc(app, redis):
    operator = app.test_client()
    log_in(operator)
    queue = Queue("low", connection=redis, serializer=JSONSerializer)
    for period in (20787, 20788):
        queue.enqueue("tests.fixtures.echo", period, job_id=f"periodic-cleanup_expired-{period}")
    plain = queue.enqueue("tests.fixtures.echo", 0)

    page = operator.get("/operator/jobs").get_data(as_text=True)

    assert (
        "<code>periodic-cleanup_expired-20787</code>" in page and "<code>periodic-cleanup_expired-20788</code>" in page
    )
    assert f"<code>{plain.id[:8]}</code>" in page and f'title="{plain.id}"' in page
    created = re.search(r'<time datetime="([^"]+)" title="([^"]+)" data-local>', page)
    assert created.group(1).endswith("Z") and created.group(2).endswith(" UTC")


def test_the_list_offers_bulk_actions_only_for_the_states_it_holds_with_their_counts(app, redis):
    operator = app.test_client()
    log_in(operator)
    queue = Queue("default", connection=redis, serializer=JSONSerializer)
    queue.enqueue("tests.fixtures.echo", 1)
    assert "Retry all" not in operator.get("/operator/jobs").get_data(as_text=True)  # nothing failed

    for n in range(2):
        queue.enqueue("tests.fixtures.fail_with", n)
    SimpleWorker([queue], connection=redis, serializer=JSONSerializer).work(burst=True)
    page = operator.get("/operator/jobs").get_data(as_text=True)

    assert "Retry all 2 failed…" in page and "Delete all 2 failed…" in page and "Cancel all" not in page
