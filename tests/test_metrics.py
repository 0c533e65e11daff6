"""GET /metrics: Prometheus text computed from Redis, behind a bearer token."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from offload.jobs import attempts as job_attempts
from tests.conftest import wait_for

TOKEN = "metrics-test-token"


def scrape(client) -> dict[tuple[str, tuple], float]:
    """Every sample of a scrape, keyed by name and sorted labels."""
    response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.text
    assert response.content_type.startswith("text/plain; version=")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.get_data(as_text=True))
        for sample in family.samples
    }


@pytest.fixture
def metrics_client(redis_url: str):
    from app import create_app

    return create_app({"TESTING": True, "OFFLOAD_REDIS_URL": redis_url, "OFFLOAD_METRICS_TOKEN": TOKEN}).test_client()


def test_metrics_are_not_served_when_no_token_is_configured(client):
    assert client.get("/metrics").status_code == 404


@pytest.mark.parametrize("header", [None, "Bearer wrong-token", TOKEN, f"Basic {TOKEN}"])
def test_metrics_refuse_a_missing_or_wrong_token(metrics_client, header):
    response = metrics_client.get("/metrics", headers={"Authorization": header} if header else {})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "offload_" not in response.get_data(as_text=True)


def test_queue_depth_per_queue_and_no_workers_alive(metrics_client, redis: Redis):
    for name, count in (("default", 3), ("low", 1)):
        queue = Queue(name, connection=redis, serializer=JSONSerializer)
        for _ in range(count):
            queue.enqueue("tests.fixtures.burn_cpu", 0)

    samples = scrape(metrics_client)

    depth = {dict(labels)["queue"]: value for (name, labels), value in samples.items() if name == "offload_queue_depth"}
    assert depth == {"high": 0, "default": 3, "low": 1, "ondemand": 0}
    assert samples[("offload_workers_alive", ())] == 0


@pytest.mark.e2e
def test_job_counts_and_durations_add_up_across_worker_processes(metrics_client, workers, redis: Redis):
    workers.start_worker("one")
    workers.start_worker("two")
    queue = Queue("default", connection=redis, serializer=JSONSerializer)
    held = [queue.enqueue("tests.fixtures.run_until_released", "release") for _ in range(2)]
    wait_for(lambda: all(_status(redis, job.id) == "started" for job in held), what="each worker to take a job")
    failing = queue.enqueue("tests.fixtures.fail_with", "no disk")
    redis.set("release", 1)
    for job in [*held, failing]:
        wait_for(lambda job=job: _status(redis, job.id) in ("finished", "failed"), what=f"job {job.id}")
    runners = {
        job_attempts(Job.fetch(job.id, connection=redis, serializer=JSONSerializer))[0]["worker"] for job in held
    }
    assert len(runners) == 2, "both worker processes ran a job"

    samples = scrape(metrics_client)

    held_task = (("task", "tests.fixtures.run_until_released"),)
    failing_task = (("task", "tests.fixtures.fail_with"),)
    assert samples[("offload_jobs_started_total", held_task)] == 2
    assert samples[("offload_jobs_finished_total", held_task)] == 2
    assert samples[("offload_jobs_failed_total", held_task)] == 0
    assert samples[("offload_jobs_started_total", failing_task)] == 1
    assert samples[("offload_jobs_failed_total", failing_task)] == 1
    assert samples[("offload_job_duration_seconds_count", held_task)] == 2
    assert samples[("offload_job_duration_seconds_bucket", (("le", "+Inf"), *held_task))] == 2
    assert samples[("offload_job_duration_seconds_sum", held_task)] > 0
    assert samples[("offload_workers_alive", ())] == 2


def _status(redis: Redis, job_id: str) -> str:
    return Job.fetch(job_id, connection=redis, serializer=JSONSerializer).get_status(refresh=True)


def test_the_autoscaler_scales_the_worker_group_on_queue_depth_the_app_exports(metrics_client):
    import re

    import yaml

    from tests.conftest import ROOT

    config = yaml.safe_load((ROOT / "deploy" / "autoscaler" / "fly-autoscaler.yml").read_text())
    assert config["process-group"] == "worker"
    (collector,) = config["metric-collectors"]
    assert collector["metric-name"] in config["started-machine-count"]
    exported = {name for name, _ in scrape(metrics_client)}
    queried = set(re.findall(r"\b(offload_\w+)\{", collector["query"]))
    assert queried and queried <= exported
