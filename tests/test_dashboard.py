"""rq-dashboard at /rq: every route closed to anyone but an operator, CSRF on its actions,
its JSON-serializer bug fixed, its job data escaped."""

from __future__ import annotations

import re
from http.cookies import SimpleCookie
from pathlib import Path

import httpx
import pytest
import rq_dashboard.web
from markupsafe import escape
from rq import Queue, SimpleWorker
from rq.serializers import JSONSerializer

from app import create_app
from offload.web import auth
from tests.conftest import (
    OPERATOR_ACCOUNT,
    OPERATOR_PASSWORD,
    OPERATOR_USERNAME,
    Stack,
    log_in,
    process_env,
    wait_for,
)

XSS = '<img src=x onerror="window.__xss=1">'

SAMPLE_ARGS = {
    "instance_number": 0,
    "queue_name": "default",
    "registry_name": "failed",
    "per_page": 8,
    "order": "asc",
    "page": 1,
    "filename": "js/jquery-3.5.1.min.js",
}


@pytest.fixture
def failed_job(redis):
    """A job in the default queue's failed registry, run by a real (in-process) worker."""
    queue = Queue("default", connection=redis, serializer=JSONSerializer)
    job = queue.enqueue("tests.fixtures.fail_with", XSS, description="Fails on purpose")
    SimpleWorker([queue], connection=redis, serializer=JSONSerializer).work(burst=True)
    assert job.get_status() == "failed"
    return job


DASHBOARD_ENDPOINTS = {
    f"rq_dashboard.{name}"
    for name in (
        "compact_queue", "delete_job_view", "empty_queue", "favicon", "job_info", "job_view", "jobs_overview",
        "list_jobs", "list_queues", "list_workers", "queues_overview", "requeue_all", "requeue_job_view",
        "static", "workers_overview",
    )
}  # fmt: skip


def dashboard_requests(app, job_id: str) -> list[tuple[str, str]]:
    """Every (method, URL) rq-dashboard answers, from the app's URL map."""
    found = []
    with app.test_request_context():
        for rule in app.url_map.iter_rules():
            if not rule.endpoint.startswith("rq_dashboard."):
                continue
            values = {name: SAMPLE_ARGS.get(name, job_id) for name in rule.arguments}
            url = app.url_for(rule.endpoint, **values)
            found += [(method, url) for method in sorted(rule.methods - {"OPTIONS"})]
    return found


def registry_state(redis) -> tuple[int, int]:
    queue = Queue("default", connection=redis, serializer=JSONSerializer)
    return queue.count, queue.failed_job_registry.count


def csrf_app(redis_url: str, **config):
    return create_app({"OFFLOAD_REDIS_URL": redis_url, **config})


def test_every_dashboard_route_refuses_anonymous_users_and_changes_nothing(redis_url, redis, failed_job):
    app = csrf_app(redis_url, **OPERATOR_ACCOUNT)
    client = app.test_client()
    requests = dashboard_requests(app, failed_job.id)
    before = registry_state(redis)

    answers = {(method, url): client.open(url, method=method) for method, url in requests}

    endpoints = {rule.endpoint for rule in app.url_map.iter_rules() if rule.endpoint.startswith("rq_dashboard.")}
    assert endpoints == DASHBOARD_ENDPOINTS  # a route a new rq-dashboard adds shows up here
    for (method, url), response in answers.items():
        if method in ("GET", "HEAD"):
            assert response.status_code == 302, (method, url)
            assert response.headers["Location"].startswith("/login?next=/rq/"), (method, url)
        else:
            assert response.status_code == 403, (method, url)
    assert registry_state(redis) == before
    assert ("GET", "/rq/requeue/default") in requests


def test_without_an_operator_account_every_dashboard_route_says_it_is_off(redis_url, redis, failed_job):
    app = csrf_app(redis_url)
    client = app.test_client()

    for method, url in dashboard_requests(app, failed_job.id):
        response = client.open(url, method=method)
        assert response.status_code == 503, (method, url)
        if method != "HEAD":
            assert "OPERATOR_USERNAME and OPERATOR_PASSWORD_HASH" in response.get_data(as_text=True)


def operator_client(app):
    client = app.test_client()
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").get_data(as_text=True)).group(1)
    assert log_in(client, csrf_token=token).status_code == 303
    return client


def test_operator_sees_the_dashboard_under_a_strict_csp_with_a_csrf_cookie(redis_url, failed_job):
    client = operator_client(csrf_app(redis_url, **OPERATOR_ACCOUNT))

    response = client.get("/rq/")

    assert response.status_code == 200
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self' 'unsafe-eval' 'sha256-" in policy
    assert "'unsafe-inline'" not in policy.split("script-src")[1].split(";")[0]
    cookie = SimpleCookie(response.headers["Set-Cookie"])
    assert cookie["_csrf_token"]["path"] == "/rq"
    assert cookie["_csrf_token"]["samesite"] == "Strict"


def test_dashboard_actions_need_post_and_the_csrf_token_its_script_sends(redis_url, redis, failed_job):
    client = operator_client(csrf_app(redis_url, **OPERATOR_ACCOUNT))
    client.get("/rq/")
    token = client.get_cookie("_csrf_token", path="/rq").value
    before = registry_state(redis)

    as_get = client.get("/rq/requeue/default")
    as_head = client.head("/rq/requeue/default")
    without_token = client.post("/rq/requeue/default")
    assert (as_get.status_code, as_head.status_code, without_token.status_code) == (405, 405, 400)
    assert registry_state(redis) == before

    with_token = client.post("/rq/requeue/default", headers={"X-CSRFToken": token})

    assert with_token.status_code == 200
    assert with_token.get_json() == {"status": "OK", "count": 1}
    assert registry_state(redis) == (1, 0)
    assert failed_job.get_status(refresh=True) == "queued"
    # Requeued through rq-dashboard (which fetches with pickle), the JSON job still runs as it was.
    queue = Queue("default", connection=redis, serializer=JSONSerializer)
    SimpleWorker([queue], connection=redis, serializer=JSONSerializer).work(burst=True)
    assert failed_job.get_status(refresh=True) == "failed"
    assert failed_job.latest_result().exc_string.strip().endswith(f"RuntimeError: {XSS}")


def test_dashboard_job_data_is_html_escaped_for_its_raw_template(redis_url, failed_job):
    client = operator_client(csrf_app(redis_url, **OPERATOR_ACCOUNT))
    failed_job.meta["note"] = XSS
    failed_job.save_meta()

    data = client.get(f"/rq/0/data/job/{failed_job.id}.json").get_json()

    assert "<img" not in str(data)
    assert "&lt;img src=x onerror=" in data["exc_info"]
    assert "&lt;img src=x onerror=" in data["metadata"]


def test_unknown_dashboard_job_and_instance_are_404(redis_url):
    client = operator_client(csrf_app(redis_url, **OPERATOR_ACCOUNT))

    assert client.get("/rq/0/data/job/nope.json").status_code == 404
    assert client.get("/rq/0/view/job/nope").status_code == 404
    assert client.get("/rq/1/view/queues").status_code == 404


@pytest.mark.e2e
def test_workers_json_shows_a_busy_workers_job_where_rq_dashboard_alone_fails(stack, redis, redis_url):
    queue = Queue("default", connection=redis, serializer=JSONSerializer)
    job = queue.enqueue("tests.fixtures.block_until_released", "release-me")
    with httpx.Client(base_url=stack.base_url, timeout=10) as http:
        token = re.search(r'name="csrf_token" value="([^"]+)"', http.get("/login").text).group(1)
        login = {"username": OPERATOR_USERNAME, "password": OPERATOR_PASSWORD, "csrf_token": token}
        assert http.post("/login", data=login).status_code == 303
        try:
            wait_for(lambda: job.get_status(refresh=True) == "started", what="the job to start")

            response = http.get("/rq/0/data/workers.json")

            assert response.status_code == 200, response.text
            (worker,) = response.json()["workers"]
            assert worker["state"] == "busy"
            assert worker["current_job"]["job_id"] == job.id
            assert worker["current_job"]["call_string"].startswith("tests.fixtures.block_until_released(")
            # The view rq-dashboard ships cannot read the same busy worker: that is what we replaced.
            app = create_app({"OFFLOAD_REDIS_URL": redis_url, **OPERATOR_ACCOUNT})
            with app.test_request_context("/rq/0/data/workers.json"), pytest.raises(Exception):  # noqa: B017
                rq_dashboard.web.list_workers.__wrapped__(0)
        finally:
            redis.rpush("release-me", "go")
    wait_for(lambda: job.get_status(refresh=True) == "finished", what="the job to finish")


@pytest.mark.e2e
def test_served_without_an_operator_account_rq_is_closed_and_the_log_says_why(redis_url, tmp_path):
    env = {key: value for key, value in process_env(redis_url).items() if "OPERATOR_" not in key}
    stack = Stack(redis_url=redis_url, logs=tmp_path, env=env)
    try:
        stack.start_web()
        response = httpx.get(stack.base_url + "/rq/", timeout=10)
        login = httpx.get(stack.base_url + "/login", timeout=10)
    finally:
        stack.close()

    assert response.status_code == 503 and login.status_code == 503
    assert "OPERATOR_USERNAME and OPERATOR_PASSWORD_HASH" in response.text
    assert auth.OFF_MESSAGE in stack.log("web")


# --------------------------------------------------------------------------- issue 14


STYLE_KEY = "<style>body{background:red}</style>"
QUEUE_WITH_MARKUP = "<img src=x onerror=window.__xss=1>"


def test_every_string_of_its_json_is_escaped_dict_keys_included(redis_url, redis):
    queue = Queue("default", connection=redis, serializer=JSONSerializer)
    job = queue.enqueue("tests.fixtures.echo", {STYLE_KEY: 1, "nested": {XSS: [XSS]}}, meta={XSS: XSS})
    SimpleWorker([queue], connection=redis, serializer=JSONSerializer).work(burst=True)
    Queue(QUEUE_WITH_MARKUP, connection=redis, serializer=JSONSerializer).enqueue("tests.fixtures.echo", 1)
    client = operator_client(csrf_app(redis_url, **OPERATOR_ACCOUNT))

    answers = [
        client.get(f"/rq/0/data/job/{job.id}.json"),
        client.get("/rq/0/data/queues.json"),
        client.get("/rq/0/data/jobs/default/finished/8/asc/1.json"),
    ]

    assert [answer.status_code for answer in answers] == [200, 200, 200]
    for answer in answers[:2]:
        assert "<" not in answer.get_data(as_text=True), answer.get_json()
    # The one field the jobs list's template escapes itself is left for it, so it is not shown escaped twice.
    (listed,) = answers[2].get_json()["jobs"]
    assert STYLE_KEY in listed.pop("description") and "<" not in str(listed)
    result = answers[0].get_json()["result"]
    assert set(result) == {"&lt;style&gt;body{background:red}&lt;/style&gt;", "nested"}
    assert QUEUE_WITH_MARKUP.replace("<", "&lt;").replace(">", "&gt;") in {
        queue["name"] for queue in answers[1].get_json()["queues"]
    }


def test_compact_on_an_empty_queue_answers_ok(redis_url, redis):
    client = operator_client(csrf_app(redis_url, **OPERATOR_ACCOUNT))
    client.get("/rq/")
    headers = {"X-CSRFToken": client.get_cookie("_csrf_token", path="/rq").value}

    empty = client.post("/rq/queue/default/compact", headers=headers)
    queue = Queue("default", connection=redis, serializer=JSONSerializer)
    kept, deleted = queue.enqueue("tests.fixtures.echo", 1), queue.enqueue("tests.fixtures.echo", 2)
    redis.delete(deleted.key)
    full = client.post("/rq/queue/default/compact", headers=headers)

    assert (empty.status_code, empty.get_json()) == (200, {"status": "OK"})
    assert (full.status_code, queue.get_job_ids()) == (200, [kept.id])


def test_a_malformed_id_in_a_registry_leaves_the_other_jobs_listed_and_its_view_is_404(redis_url, redis, failed_job):
    redis.zadd(failed_job.failed_job_registry.key, {"bad id <x>": 1, "a:b": 2, " ": 3})
    client = operator_client(csrf_app(redis_url, **OPERATOR_ACCOUNT))

    listed = client.get("/rq/0/data/jobs/default/failed/8/asc/1.json")
    views = [client.get(f"/rq/0/view/job/{job_id}") for job_id in ("bad id <x>", " ")]
    data = client.get("/rq/0/data/job/bad id <x>.json")

    assert listed.status_code == 200
    assert [job["id"] for job in listed.get_json()["jobs"]] == [failed_job.id]
    assert [view.status_code for view in views] == [404, 404]
    assert "No such job" in views[0].get_data(as_text=True)
    assert data.status_code == 404


def test_empty_and_requeue_all_work_around_a_malformed_id_in_the_failed_registry(redis_url, redis, failed_job):
    registry = failed_job.failed_job_registry
    client = operator_client(csrf_app(redis_url, **OPERATOR_ACCOUNT))
    client.get("/rq/")
    headers = {"X-CSRFToken": client.get_cookie("_csrf_token", path="/rq").value}

    redis.zadd(registry.key, {"bad id <x>": 1})
    requeued = client.post("/rq/requeue/default", headers=headers)
    assert (requeued.status_code, requeued.get_json()) == (200, {"status": "OK", "count": 1})
    assert failed_job.get_status(refresh=True) == "queued"

    redis.zadd(registry.key, {"bad id <x>": 1, failed_job.id: 2})
    emptied = client.post("/rq/queue/default/failed/empty", headers=headers)
    assert (emptied.status_code, registry.get_job_ids(cleanup=False)) == (200, [])
    assert not redis.exists(failed_job.key)
    assert client.post("/rq/queue/default/nonsense/empty", headers=headers).status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/rq/0/data/jobs/default/0/8/asc/1.json",  # not a registry: UnboundLocalError
        "/rq/0/view/jobs/default/bogus/8/asc/1",  # its page, which fetched the above
        "/rq/0/data/jobs/default/queued/nan/asc/1.json",  # ValueError
        "/rq/0/data/jobs/default/queued/8/asc/1e5.json",  # ValueError
        "/rq/0/data/jobs/default/queued/0/asc/1.json",  # ZeroDivisionError
        "/rq/0/data/jobs/default/queued/-8/asc/1.json",
        "/rq/0/data/jobs/default/queued/201/asc/1.json",
        "/rq/0/view/jobs/default/queued/0/asc/1",
        "/rq/0/data/jobs/default/failed/8/asc/99999999999999999999.json",  # Redis ResponseError
        "/rq/0/data/jobs/default/failed/8/asc/0.json",
        "/rq/0/view/jobs/default/failed/8/asc/1000001",
        "/rq/0/data/jobs/default/failed/8/sideways/1.json",
        "/rq/0/data/jobs/default/failed/%D9%A8/asc/1.json",  # an Arabic-Indic 8: int() takes it
    ],
)
def test_a_jobs_list_path_its_views_fail_on_is_a_404(redis_url, failed_job, path):
    client = operator_client(csrf_app(redis_url, **OPERATOR_ACCOUNT))

    page = client.get(path)
    data = client.get(path, headers={"Accept": "application/json, text/javascript, */*; q=0.01"})  # as its script asks

    assert page.status_code == 404 and "<!doctype html>" in page.get_data(as_text=True).lower()
    assert data.status_code == 404 and data.get_json()["error"]


def test_the_jobs_lists_its_own_page_offers_still_answer(redis_url, failed_job):
    client = operator_client(csrf_app(redis_url, **OPERATOR_ACCOUNT))

    for registry in rq_dashboard_registries():
        assert client.get(f"/rq/0/data/jobs/default/{registry}/200/dsc/1.json").status_code == 200, registry
    listed = client.get("/rq/0/data/jobs/default/failed/1/asc/1.json").get_json()
    assert [job["id"] for job in listed["jobs"]] == [failed_job.id]
    assert client.get("/rq/0/view/jobs/default/failed/8/dsc/1000000").status_code == 200
    assert client.get("/rq/0/view/jobs").status_code == 200


def rq_dashboard_registries() -> list[str]:
    """The lists rq-dashboard's own jobs page offers (its <select>), read from its template."""
    template = (Path(rq_dashboard.__file__).parent / "templates/rq_dashboard/jobs.html").read_text()
    return re.findall(r"%\}>(\w+)</option>", template)


def test_a_job_result_nested_deeper_than_python_s_stack_is_escaped(redis_url, redis):
    nested: object = XSS
    for _ in range(300):  # 600 containers deep
        nested = {"<k>": [nested]}
    queue = Queue("default", connection=redis, serializer=JSONSerializer)
    job = queue.enqueue("tests.fixtures.echo", nested)
    SimpleWorker([queue], connection=redis, serializer=JSONSerializer).work(burst=True)
    assert job.get_status(refresh=True) == "finished"
    client = operator_client(csrf_app(redis_url, **OPERATOR_ACCOUNT))

    answer = client.get(f"/rq/0/data/job/{job.id}.json")

    assert answer.status_code == 200
    result, depth = answer.get_json()["result"], 0
    while isinstance(result, dict):
        (result,) = result["&lt;k&gt;"]
        depth += 1
    assert (depth, result) == (300, str(escape(XSS)))
