"""Per-client quotas fitting a public form (web/quotas.py): jobs queued at once, CPU seconds and
bytes stored per hour, the size of one job's arguments; a 429 naming the limit, with Retry-After,
and nothing enqueued. The attacks the outside tester ran anonymously, replayed."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from flask import Flask
from redis import Redis
from rq.job import Job
from rq.serializers import JSONSerializer

from tests.conftest import Stack, log_in, queued_job_count, reference_app

CRUNCH_MAX = {"task": "crunch_numbers", "params": {"limit": 1_000_000_000}}  # charged 21 s of CPU
CRUNCH_SMALL = {"task": "crunch_numbers", "params": {"limit": 100}}


def make_app(redis_url: str, **config: Any) -> Flask:
    quotas_off = {
        "OFFLOAD_QUOTA_ACTIVE_JOBS": 0,
        "OFFLOAD_QUOTA_CPU_SECONDS_PER_HOUR": 0,
        "OFFLOAD_QUOTA_BYTES_PER_HOUR": 0,
    }
    # The submit rate limit has its own tests.
    return reference_app(redis_url, RATELIMIT_ENABLED=False, **{**quotas_off, **config})


def post(client, body: dict, peer: str = "203.0.113.10"):
    return client.post("/api/jobs", json=body, environ_base={"REMOTE_ADDR": peer})


def test_jobs_queued_at_once_per_client_are_capped_and_a_place_frees_when_one_ends(redis_url, redis: Redis, caplog):
    client = make_app(redis_url, OFFLOAD_QUOTA_ACTIVE_JOBS=3, OFFLOAD_METRICS_TOKEN="quota-test").test_client()

    accepted = [post(client, CRUNCH_SMALL) for _ in range(3)]
    over_api = post(client, CRUNCH_SMALL)
    over_form = client.post(
        "/tasks/crunch_numbers", data={"limit": "100"}, environ_base={"REMOTE_ADDR": "203.0.113.10"}
    )
    same_64 = post(client, CRUNCH_SMALL, peer="2001:db8::1")
    other_client = post(client, CRUNCH_SMALL, peer="198.51.100.4")

    assert [response.status_code for response in accepted] == [202, 202, 202]
    assert over_api.status_code == 429
    answer = over_api.get_json()
    assert answer["limit"] == "OFFLOAD_QUOTA_ACTIVE_JOBS" and "at most 3" in answer["error"]
    assert int(over_api.headers["Retry-After"]) > 0
    assert over_form.status_code == 429 and "OFFLOAD_QUOTA_ACTIVE_JOBS=3" in over_form.get_data(as_text=True)
    assert over_form.mimetype == "text/html" and over_form.headers["Retry-After"]
    assert same_64.status_code == 202 and other_client.status_code == 202
    assert queued_job_count(redis) == 5  # the refused ones enqueued nothing

    # Loud: logged, and counted for the metrics.
    assert "client 203.0.113.10 reached OFFLOAD_QUOTA_ACTIVE_JOBS=3" in caplog.text
    scraped = client.get("/metrics", headers={"Authorization": "Bearer quota-test"}).get_data(as_text=True)
    assert 'offload_quota_refusals_total{quota="active"} 2.0' in scraped

    # One of the client's jobs ends (canceled here; finished or failed alike): its place is free.
    Job.fetch(accepted[0].get_json()["id"], connection=redis, serializer=JSONSerializer).cancel()
    assert post(client, CRUNCH_SMALL).status_code == 202
    assert post(client, CRUNCH_SMALL).status_code == 429


def test_cpu_seconds_per_hour_charge_each_tasks_declared_cost(redis_url, redis: Redis, figures):
    client = make_app(redis_url, OFFLOAD_QUOTA_CPU_SECONDS_PER_HOUR=50).test_client()

    first, second = post(client, CRUNCH_MAX), post(client, CRUNCH_MAX)  # 21 s each
    third = post(client, CRUNCH_MAX)
    cheap = post(client, CRUNCH_SMALL)  # 0.000002 s: still fits
    no_cost = post(client, {"task": "run_model", "params": {"text": "hello"}})  # declares no CPU cost

    assert (first.status_code, second.status_code) == (202, 202)
    assert third.status_code == 429
    assert third.get_json()["limit"] == "OFFLOAD_QUOTA_CPU_SECONDS_PER_HOUR"
    assert "past 50 s per hour (used: 42.0 s)" in third.get_json()["error"]
    assert 3500 <= int(third.headers["Retry-After"]) <= 3600  # when the first charge leaves the hour
    assert cheap.status_code == 202 and no_cost.status_code == 202
    figures.add("quota: CPU per hour", "crunch_1e9_accepted_of_3", 2)


def test_crunch_numbers_is_bounded_to_a_billion(client, redis: Redis):
    # The tester's 41.5 s of CPU per request.
    response = client.post("/api/jobs", json={"task": "crunch_numbers", "params": {"limit": 2_000_000_000}})

    assert response.status_code == 400
    assert "1000000000" in response.get_json()["fields"]["params.limit"]
    assert queued_job_count(redis) == 0


def test_bytes_stored_per_hour_are_capped_per_client(redis_url, redis: Redis):
    client = make_app(redis_url, OFFLOAD_QUOTA_BYTES_PER_HOUR=100_000).test_client()
    text = {"task": "run_model", "params": {"text": "x" * 10_000}}  # 10 kB + 16 KiB declared + 1 KiB

    answers = [post(client, text).status_code for _ in range(4)]
    over = post(client, text)

    assert answers == [202, 202, 202, 429]
    assert over.get_json()["limit"] == "OFFLOAD_QUOTA_BYTES_PER_HOUR"
    assert queued_job_count(redis) == 3


def test_one_jobs_arguments_are_capped_with_a_413_naming_the_setting(redis_url, redis: Redis):
    client = make_app(redis_url, OFFLOAD_MAX_ARGS_BYTES=5_000).test_client()

    response = post(client, {"task": "run_model", "params": {"text": "é" * 2_000}})  # 12 kB as JSON

    assert response.status_code == 413
    assert "OFFLOAD_MAX_ARGS_BYTES" in response.get_json()["error"]
    assert queued_job_count(redis) == 0


def test_the_operator_is_not_limited(redis_url):
    client = make_app(redis_url, OFFLOAD_QUOTA_ACTIVE_JOBS=1).test_client()
    assert log_in(client).status_code == 303

    assert [post(client, CRUNCH_SMALL).status_code for _ in range(3)] == [202] * 3


def test_the_tester_s_anonymous_crunch_flood_is_cut_to_the_quotas(redis_url, redis: Redis, figures):
    # The stock quotas: 60 requests of the largest crunch, as fast as the rate limit allowed.
    from offload import settings

    client = make_app(
        redis_url,
        **{settings.key(name): settings.DEFAULTS[name] for name in ("QUOTA_ACTIVE_JOBS", "QUOTA_CPU_SECONDS_PER_HOUR")},
    ).test_client()

    answers = [post(client, CRUNCH_MAX).status_code for _ in range(60)]

    accepted = answers.count(202)
    assert accepted == settings.DEFAULTS["QUOTA_ACTIVE_JOBS"] and answers.count(429) == 60 - accepted
    assert accepted * 21 <= settings.DEFAULTS["QUOTA_CPU_SECONDS_PER_HOUR"]
    figures.record("anonymous crunch_numbers flood (60 x limit 1e9)", accepted=accepted, refused=60 - accepted)


def test_quota_bookkeeping_is_one_redis_script_call_per_submission(redis_url, redis: Redis):
    client = make_app(
        redis_url,
        OFFLOAD_QUOTA_ACTIVE_JOBS=100,
        OFFLOAD_QUOTA_CPU_SECONDS_PER_HOUR=10_000,
        OFFLOAD_QUOTA_BYTES_PER_HOUR=10_000_000,
    ).test_client()
    post(client, CRUNCH_SMALL)  # loads the script
    redis.config_resetstat()

    for _ in range(20):
        assert post(client, CRUNCH_MAX).status_code == 202

    stats = redis.info("commandstats")
    scripts = sum(stats.get(name, {}).get("calls", 0) for name in ("cmdstat_evalsha", "cmdstat_eval"))
    assert scripts == 20


@pytest.fixture
def stack_env() -> dict[str, str]:
    # As fly.toml runs the web, on Fly (FLY_APP_NAME set), with a small jobs-at-once quota.
    return {
        "FLY_APP_NAME": "offload-test",
        "TRUSTED_PROXY_COUNT": "1",
        "FORWARDED_ALLOW_IPS": "*",
        "OFFLOAD_QUOTA_ACTIVE_JOBS": "2",  # prefixed: it overrides the tests' own (conftest)
    }


@pytest.mark.e2e
def test_through_gunicorn_on_fly_the_quota_counts_per_fly_client_ip(workers: Stack, redis: Redis):
    base_url = workers.start_web()  # no worker: accepted jobs stay queued

    def submit(fly_ip: str, forwarded: str = "") -> httpx.Response:
        headers = {"Fly-Client-IP": fly_ip, **({"X-Forwarded-For": forwarded} if forwarded else {})}
        return httpx.post(f"{base_url}/api/jobs", json=CRUNCH_SMALL, headers=headers, timeout=10)

    alice = [submit("203.0.113.1").status_code for _ in range(2)]
    alice_again = submit("203.0.113.1", forwarded="198.51.100.99")  # her own X-Forwarded-For changes nothing
    bob = submit("2001:db8:7:7::1")
    bob_same_64 = submit("2001:db8:7:7::2")
    bob_over = submit("2001:db8:7:7:1:2:3:4")

    assert alice == [202, 202]
    assert alice_again.status_code == 429 and alice_again.json()["limit"] == "OFFLOAD_QUOTA_ACTIVE_JOBS"
    assert int(alice_again.headers["Retry-After"]) > 0
    assert (bob.status_code, bob_same_64.status_code, bob_over.status_code) == (202, 202, 429)
    assert queued_job_count(redis) == 4


def test_a_result_over_its_tasks_declared_stored_bytes_fails_the_job_instead_of_being_stored():
    from offload import Offload, PermanentError
    from offload.registry import ResultTooLarge

    offload = Offload()

    @offload.task(stored_bytes=100)
    def echo(text: str) -> dict[str, str]:
        return {"text": text}

    assert echo("x" * 50) == {"text": "x" * 50}  # still callable as it was
    with pytest.raises(ResultTooLarge, match="over the 100 that task echo declares") as raised:
        echo("x" * 200)
    assert isinstance(raised.value, PermanentError)  # not retried
    assert offload.tasks["echo"].path == f"{echo.__module__}.{echo.__qualname__}"  # RQ imports the capped one


def test_jobs_waiting_for_a_concurrency_slot_count_against_the_quota_and_their_submitter_cancels_them(
    redis_url, redis: Redis
):
    """The outside tester's call_api flood: jobs past the task's concurrency cap wait in RQ's
    ``rate_limited`` state, which the quota did not count (81 accepted where 10 were allowed),
    and which nobody could cancel."""
    client = make_app(redis_url, OFFLOAD_QUOTA_ACTIVE_JOBS=2, OFFLOAD_THIRD_PARTY_CONCURRENCY=1).test_client()
    call = {"task": "call_api", "params": {"path": "/get"}}

    holding, waiting = post(client, call), post(client, call)
    over = post(client, call)

    assert (holding.status_code, waiting.status_code) == (202, 202)
    waiting_job = Job.fetch(waiting.get_json()["id"], connection=redis, serializer=JSONSerializer)
    assert waiting_job.get_status() == "rate_limited"
    assert over.status_code == 429 and over.get_json()["limit"] == "OFFLOAD_QUOTA_ACTIVE_JOBS"

    canceled = client.delete(f"/api/jobs/{waiting_job.id}", environ_base={"REMOTE_ADDR": "203.0.113.10"})
    assert canceled.status_code == 200 and canceled.get_json()["status"] == "canceled"
    assert not redis.zscore("rq:rl:OFFLOAD_THIRD_PARTY_CONCURRENCY:rate_limited", waiting_job.id)
    assert post(client, call).status_code == 202  # its place is free again
