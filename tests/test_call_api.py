"""call_api against a real HTTP server in the test process that behaves like a flaky third party.

Its paths pick the behaviour: ``/flaky/<name>?fail=N&status=S[&retry_after=T]`` fails N times
with status S then answers 200; ``/bad`` always answers 400; ``/hang`` never answers in time;
``/slow?seconds=T`` answers after T seconds and counts how many calls overlap.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from urllib.parse import unquote

import pytest
from rq import Queue, Retry
from rq.job import Job
from rq.serializers import JSONSerializer

from offload import retries, settings
from offload.workloads import thirdparty
from tests.conftest import queued_job_count, wait_for
from tests.thirdparty_server import ThirdParty

TOKEN = "tok-" + "S3cr3t" * 4
"""The stack's THIRD_PARTY_TOKEN: it must never show in a result."""


@pytest.fixture
def third_party() -> Iterator[ThirdParty]:
    with ThirdParty() as server:
        yield server


@pytest.fixture
def stack_env(third_party: ThirdParty) -> dict[str, str]:
    """The stack's web and workers talk to the test server, with short timeouts and backoff."""
    return {
        "THIRD_PARTY_URL": third_party.url,
        "THIRD_PARTY_CONNECT_TIMEOUT": "1",
        "THIRD_PARTY_READ_TIMEOUT": "1",
        "THIRD_PARTY_BACKOFF_BASE": "1",
        "THIRD_PARTY_BACKOFF_CAP": "2",
        "THIRD_PARTY_CONCURRENCY": "2",
        "THIRD_PARTY_TOKEN": TOKEN,
    }


def config(url: str, **overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "THIRD_PARTY_URL": url,
        "THIRD_PARTY_TOKEN": "",
        "THIRD_PARTY_CONNECT_TIMEOUT": 1,
        "THIRD_PARTY_READ_TIMEOUT": 1,
        "THIRD_PARTY_BACKOFF_BASE": 1,
        "THIRD_PARTY_BACKOFF_CAP": 8,
        "THIRD_PARTY_RETRY_AFTER_MAX": 60,
    }
    return {f"OFFLOAD_{name}": value for name, value in {**base, **overrides}.items()}


def submit(http, path: str) -> str:
    response = http.post("/api/jobs", json={"task": "call_api", "params": {"path": path}})
    assert response.status_code == 202, response.text
    return response.headers["Location"]


def follow(http, api_url: str, until=lambda job: job["ended"], timeout: float = 60) -> dict:
    return wait_for(lambda: (job := http.get(api_url).json()) and until(job) and job, timeout=timeout, what=api_url)


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# --------------------------------------------------------------------------- backoff and hints


def test_backoff_grows_exponentially_with_jitter_up_to_the_cap():
    rng = random.Random(7)

    delays = [[retries.backoff_delay(n, base=2, cap=60, rng=rng) for _ in range(200)] for n in range(8)]

    for n, seen in enumerate(delays):
        ceiling = min(60, 2 * 2**n)
        assert min(seen) >= max(1, ceiling // 2) and max(seen) <= ceiling, (n, min(seen), max(seen))
    assert len(set(delays[4])) > 5  # jittered: jobs that failed together spread out
    assert retries.backoff_intervals(6, base=5, cap=120) == [5, 10, 20, 40, 80, 120]


def test_a_permanent_error_leaves_no_retry_even_with_a_policy(queue):
    job = queue.enqueue("tests.fixtures.fail_with", "x", retry=Retry(max=3, interval=[5, 10, 20]))

    retries.apply_retry_hints(job, retries.PermanentError("400 Bad Request"))

    assert not job.should_retry
    assert queue.fetch_job(job.id).retries_left == 0  # stored, so the job page says so too


@pytest.mark.parametrize("retries_left", [3, 2, 1])
def test_a_retry_later_delay_becomes_the_interval_rq_reads_next(queue, retries_left):
    job = queue.enqueue("tests.fixtures.fail_with", "x", retry=Retry(max=3, interval=[5, 10, 20]))
    job.retries_left = retries_left

    retries.apply_retry_hints(job, retries.RetryLater("503", delay=7))

    assert job.get_retry_interval() == 7  # RQ's own lookup for a raised exception
    assert job.should_retry


def test_other_exceptions_keep_the_policy(queue):
    job = queue.enqueue("tests.fixtures.fail_with", "x", retry=Retry(max=2, interval=[5, 10]))

    retries.apply_retry_hints(job, RuntimeError("boom"))

    assert job.retries_left == 2 and job.get_retry_interval() == 5


# --------------------------------------------------------------------------- one call, classified


def test_retry_after_accepts_seconds_and_http_dates():
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)

    assert thirdparty.retry_after_seconds("7") == 7
    assert thirdparty.retry_after_seconds(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30
    assert thirdparty.retry_after_seconds("soon") is None
    assert thirdparty.retry_after_seconds(None) is None


@pytest.mark.parametrize("base", ["http://api.test", "http://api.test/", "http://api.test/v1", "http://api.test/v1/"])
@pytest.mark.parametrize("path", ["/@evil.test/x", "/..//evil.test", "/%2e%2e/admin", "/v1/../../admin"])
def test_no_path_reaches_another_host_or_leaves_the_base_path(base, path):
    try:
        url = thirdparty.target_url(base, path)
    except thirdparty.APIRejected:
        return
    assert url.host == "api.test"
    assert url.path.startswith(base.removeprefix("http://api.test").rstrip("/") + "/")
    assert ".." not in unquote(url.raw_path.decode()).split("/")


@pytest.mark.parametrize(
    "url", ["https://ops:hunter2-pass@api.test/v1", "https://hunter2-pass@api.test", "http://@api.test"]
)
def test_a_third_party_url_with_credentials_is_refused_without_echoing_them(url):
    with pytest.raises(settings.SettingsError, match="THIRD_PARTY_URL must not hold credentials") as refused:
        settings.from_environ({"THIRD_PARTY_URL": url})
    assert "hunter2" not in str(refused.value)
    assert settings.from_environ(
        {"THIRD_PARTY_URL": "https://api.test/v1?key=@"}
    )  # an "@" past the host is no credential


@pytest.mark.parametrize("base", ["http://api.test:8080/v1", "http://api.test:8080/v1/"])
def test_a_path_joins_under_the_base_url_with_its_query(base):
    assert str(thirdparty.target_url(base, "/items/7?q=a%20b&n=1")) == "http://api.test:8080/v1/items/7?q=a%20b&n=1"


def test_successful_call_returns_status_timing_and_json(third_party):
    result = thirdparty.call(config(third_party.url), "/flaky/ok?fail=0&status=503")

    assert result["status"] == 200 and result["method"] == "GET"
    assert result["body"] == {"ok": True, "call": 1}
    assert result["elapsed_ms"] > 0 and not result["truncated"]


def test_payload_is_posted_as_json_with_the_configured_token_which_the_result_never_shows(third_party):
    result = thirdparty.call(config(third_party.url, THIRD_PARTY_TOKEN="s3cret"), "/echo", {"n": 1})

    assert result["status"] == 201 and result["method"] == "POST"
    # The server got the token (it echoes it back); the result holds it redacted.
    assert result["body"] == {"received": {"n": 1}, "auth": "Bearer [redacted]"}


@pytest.mark.parametrize(
    ("path", "payload"),
    [
        ("/headers", None),
        ("/get?q=1", None),
        ("/anything/x", None),
        ("/anything", {"a": 1}),
        ("/text/headers", None),
    ],
)
def test_an_api_echoing_the_request_headers_never_puts_the_token_in_the_result(third_party, path, payload):
    result = thirdparty.call(config(third_party.url, THIRD_PARTY_TOKEN=TOKEN), path, payload)

    assert result["status"] == 200
    assert TOKEN not in json.dumps(result)
    assert "Bearer [redacted]" in json.dumps(result)  # the echo is there, the secret is not


def test_a_token_spelled_with_json_escapes_or_in_a_key_is_redacted_too():
    escaped = "".join(f"\\u{ord(char):04x}" for char in TOKEN)
    raw = ('{"headers": {"Authorization": "Bearer ' + escaped + '"}}').encode()
    decoded = json.loads(thirdparty.redact(raw, TOKEN))  # the bytes do not show it...

    assert decoded["headers"]["Authorization"] == f"Bearer {TOKEN}"  # ...the decoded JSON does
    assert thirdparty.redact(decoded, TOKEN) == {"headers": {"Authorization": "Bearer [redacted]"}}
    assert thirdparty.redact({TOKEN: [f"x{TOKEN}", 1]}, TOKEN) == {"[redacted]": ["x[redacted]", 1]}


@pytest.mark.parametrize(
    ("path", "kind", "message"),
    [
        ("/flaky/a?fail=1&status=503", thirdparty.APIUnavailable, "503 Service Unavailable from GET /flaky/a"),
        ("/flaky/b?fail=1&status=429", thirdparty.APIUnavailable, "429 Too Many Requests"),
        ("/hang", thirdparty.APIUnavailable, "no answer within 1 s"),
        ("/bad", thirdparty.APIRejected, "400 Bad Request from GET /bad"),
        ("/nowhere", thirdparty.APIRejected, "404 Not Found"),
    ],
)
def test_failures_are_classified_transient_or_permanent(third_party, path, kind, message):
    with pytest.raises(kind, match=re.escape(message)):
        thirdparty.call(config(third_party.url), path)


def test_connection_refused_is_transient():
    with pytest.raises(thirdparty.APIUnavailable, match="connection failed"):
        thirdparty.call(config("http://127.0.0.1:9"), "/x")  # discard port: nothing listens


def test_retry_after_sets_the_least_delay_and_too_long_a_wait_is_permanent(third_party):
    with pytest.raises(thirdparty.APIUnavailable, match="Retry-After 30 s") as caught:
        thirdparty.call(config(third_party.url), "/flaky/c?fail=1&status=429&retry_after=30")
    assert caught.value.delay == 30

    with pytest.raises(thirdparty.APIRejected, match="over the 60 s we wait"):
        thirdparty.call(config(third_party.url), "/flaky/d?fail=1&status=503&retry_after=3600")


# --------------------------------------------------------------------------- the web, in process


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"path": "http://169.254.169.254/latest"}, "params.path", "not a URL"),
        ({"path": "//evil.test/x"}, "params.path", "not a URL"),
        ({"path": "evil.test/x"}, "params.path", "not a URL"),
        ({"path": "/a/../../admin"}, "params.path", "no .. segments"),
        ({"path": "/a/%2e%2e/admin"}, "params.path", "no .. segments"),
        ({"path": "/a b"}, "params.path", "no spaces"),
        ({"path": "/get", "payload": "{not json"}, "params.payload", "not valid JSON"),
        ({"path": "/get", "url": "http://x"}, "params.url", "Extra inputs"),
    ],
)
def test_bad_call_params_are_a_400_naming_the_field_and_enqueue_nothing(client, redis, params, field, message):
    response = client.post("/api/jobs", json={"task": "call_api", "params": params})

    assert response.status_code == 400
    assert message in response.get_json()["fields"][field]
    assert queued_job_count(redis) == 0


# --------------------------------------------------------------------------- end to end


def stored_intervals(redis, job_id: str) -> list[int]:
    """The retry intervals RQ read for this job (the policy's, unless a RetryLater replaced them)."""
    return Job.fetch(job_id, connection=redis, serializer=JSONSerializer).retry_intervals


@pytest.mark.e2e
def test_transient_failures_are_retried_with_backoff_until_the_call_succeeds(http, third_party, redis):
    job = follow(http, submit(http, "/flaky/twice?fail=2&status=503"))

    assert job["status"] == "finished", job
    assert job["result"]["body"] == {"ok": True, "call": 3}
    attempts = job["attempts"]
    assert [attempt["outcome"] for attempt in attempts] == ["failed", "failed", "finished"]
    assert all("503 Service Unavailable from GET /flaky/twice" in a["error"] for a in attempts[:2])
    assert job["retries_left"] == 2 and job["max_retries"] == 4
    assert third_party.calls["/flaky/twice"] == 3
    # Jittered backoff (base 1 s: 1 s, then 1-2 s) replaced the policy's fixed 5 s and 10 s.
    first, second, *_ = stored_intervals(redis, job["id"])
    assert first == 1 and second in (1, 2)
    page = http.get(job["url"]).text  # every attempt, with its time and outcome, is on the page
    assert page.count("503 Service Unavailable from GET /flaky/twice") == 2
    for attempt in attempts:
        assert attempt["started_at"] in page and attempt["ended_at"] in page


@pytest.mark.e2e
def test_retry_after_from_a_429_is_honoured_before_the_next_attempt(http, third_party, redis):
    job = follow(http, submit(http, "/flaky/limited?fail=1&status=429&retry_after=3"))

    assert job["status"] == "finished", job
    first, second = job["attempts"]
    assert "429 Too Many Requests" in first["error"] and "Retry-After 3 s" in first["error"]
    gap = (parse_time(second["started_at"]) - parse_time(first["ended_at"])).total_seconds()
    # The backoff alone would be 1 s; RQ schedules in whole seconds, so up to 1 s early.
    assert gap > 2, gap
    assert stored_intervals(redis, job["id"])[0] == 3  # not the 1 s backoff, nor the policy's 5 s


@pytest.mark.e2e
def test_a_4xx_fails_at_once_after_one_attempt_whatever_the_policy(http, third_party, redis):
    api_url = submit(http, "/bad")

    job = follow(http, api_url)

    assert job["status"] == "failed"  # a retried job would be "scheduled" here
    assert [attempt["outcome"] for attempt in job["attempts"]] == ["failed"]
    assert job["error"] == '400 Bad Request from GET /bad: {"error": "missing field"}.'  # as its submitter reads it
    assert job["retries_left"] == 0 and job["max_retries"] == 4
    queue = Queue("default", connection=redis, serializer=JSONSerializer)
    assert job["id"] not in queue.scheduled_job_registry.get_job_ids()
    assert third_party.calls["/bad"] == 1


@pytest.mark.e2e
def test_a_hanging_api_times_out_and_the_call_is_retried(http, third_party):
    api_url = submit(http, "/hang")

    job = follow(http, api_url, until=lambda job: len(job["attempts"]) >= 2, timeout=30)

    first = job["attempts"][0]
    assert first["outcome"] == "failed"
    assert first["error"] == "No answer within 1 s (GET /hang)"  # as its submitter reads it
    assert job["retries_left"] < job["max_retries"]
    wait_for(lambda: third_party.calls["/hang"] >= 2, what="the second call to arrive")


@pytest.mark.e2e
def test_a_burst_of_calls_never_exceeds_the_concurrency_cap_across_workers(http, stack, third_party):
    stack.start_worker("worker-2")
    stack.start_worker("worker-3")

    api_urls = [submit(http, "/slow?seconds=0.6") for _ in range(8)]
    jobs = [follow(http, url) for url in api_urls]

    assert [job["status"] for job in jobs] == ["finished"] * 8
    assert third_party.calls["/slow"] == 8
    workers = {job["attempts"][0]["worker"] for job in jobs}
    print(f"8 calls over {len(workers)} workers; most at once: {third_party.most_active} (cap 2)")
    assert third_party.most_active <= 2


@pytest.mark.e2e
def test_call_api_runs_from_its_form(http, third_party):
    token = re.search(r'name="csrf_token" value="([^"]+)"', http.get("/").text).group(1)

    response = http.post("/tasks/call_api", data={"csrf_token": token, "path": "/post", "payload": '{"order": 42}'})

    assert response.status_code == 303
    job = follow(http, "/api" + response.headers["Location"])
    assert job["status"] == "finished", job
    assert job["result"]["status"] == 201
    assert job["result"]["body"]["received"] == {"order": 42}


@pytest.mark.e2e
def test_the_token_is_in_no_stored_result_when_the_api_echoes_headers(http, third_party, redis):
    jobs = [follow(http, submit(http, path)) for path in ("/headers", "/get", "/anything")]

    for job in jobs:
        assert job["status"] == "finished", job
        assert "Bearer [redacted]" in json.dumps(job["result"])
        assert TOKEN not in json.dumps(job)
        stored = redis.xrange(f"rq:results:{job['id']}")  # the result as Redis holds it
        assert stored and TOKEN.encode() not in repr(stored).encode()
        assert TOKEN not in http.get(job["url"]).text


def test_a_payload_the_call_could_not_send_is_refused_at_submit(client, redis):
    """NaN and Infinity (not JSON; httpx refuses to send them, and the job burned every retry) and a
    payload nested past what the echo's redaction walks are 400s naming the field; nothing is queued."""
    refused = {
        '{"a": NaN}': "NaN is not a JSON value",
        '{"b": -Infinity}': "-Infinity is not a JSON value",
        "[" * 33 + "]" * 33: "nested too deeply (at most 32 levels)",
        '{"a": ' * 5000 + "1" + "}" * 5000: "nested too deeply",
    }
    for payload, message in refused.items():
        answer = client.post(
            "/api/jobs", json={"task": "call_api", "params": {"path": "/anything", "payload": payload}}
        )
        assert answer.status_code == 400, payload[:40]
        assert message in answer.get_json()["fields"]["params.payload"]
    assert queued_job_count(redis) == 0

    deepest = "[" * 32 + "]" * 32
    assert (
        client.post(
            "/api/jobs", json={"task": "call_api", "params": {"path": "/anything", "payload": deepest}}
        ).status_code
        == 202
    )


@pytest.mark.e2e
def test_the_job_log_shows_no_librarys_lines_nor_the_third_partys_url(http, stack, third_party):
    # The tester's find: httpx's "HTTP Request: POST http://<THIRD_PARTY_URL>/anything..." line was
    # in the log every submitter reads, on the API and on the job page.
    job = follow(http, submit(http, "/anything?seen=1"))
    assert job["status"] == "finished", job
    host = third_party.url.removeprefix("http://")

    shown = "\n".join(job["log"])
    page_log = re.search(r'data-field="log"[^>]*>(.*?)</', http.get(job["url"]).text, re.DOTALL).group(1)

    for text in (shown, page_log):
        assert "httpx" not in text and "HTTP Request" not in text and host not in text
    # The worker's own log (the operator's) still has it.
    assert f"httpx: HTTP Request: GET {third_party.url}/anything?seen=1" in stack.log("worker")
