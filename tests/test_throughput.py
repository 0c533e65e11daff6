"""Per-minute throughput counters (offload.throughput): written by the worker where it records
a job's outcome, read back as the dashboard's series, bounded in time and memory."""

from __future__ import annotations

from rq import Queue, Retry
from rq.serializers import JSONSerializer

from offload import throughput
from offload.worker import OffloadWorker
from tests.conftest import log_in


def _work(redis, *names: str) -> None:
    queues = [Queue(name, connection=redis, serializer=JSONSerializer) for name in names]
    OffloadWorker(queues, connection=redis).work(burst=True)


def test_the_worker_counts_finished_failed_and_retried_attempts_per_queue_and_task(redis):
    default = Queue("default", connection=redis, serializer=JSONSerializer)
    low = Queue("low", connection=redis, serializer=JSONSerializer)
    for n in range(3):
        default.enqueue("tests.fixtures.echo", n)
    low.enqueue("tests.fixtures.fail_with", "boom", retry=Retry(max=1))  # fails, is retried, fails for good
    low.enqueue("tests.fixtures.echo", "x")

    _work(redis, "default", "low")

    data = throughput.read(redis, "hour")
    series, totals = data["series"], data["totals"]
    assert data["points"] == 60 and data["step"] == 60
    assert totals["finished|all"] == 4 and totals["failed|all"] == 1 and totals["retried|all"] == 1
    assert totals["finished|queue|default"] == 3 and totals["finished|queue|low"] == 1
    assert totals["failed|task|tests.fixtures.fail_with"] == 1
    assert totals["retried|task|tests.fixtures.fail_with"] == 1
    assert series["finished|all"][-1] == 4  # all in the current minute, the last point
    # Sampled at the worker's maintenance pass, before it took the first job.
    assert max(depth for depth in series["depth|default"] if depth is not None) == 3


def test_depth_is_sampled_and_the_day_sums_quarter_hours(redis):
    Queue("default", connection=redis, serializer=JSONSerializer).enqueue("tests.fixtures.echo", 1)
    moment = 1_800_000_000.0
    throughput.sample_depths(redis, ["default", "low"], moment=moment)
    with redis.pipeline() as pipe:
        throughput.record_outcome(pipe, "low", "t", "finished", moment=moment - 60)
        throughput.record_outcome(pipe, "low", "t", "finished", moment=moment - 16 * 60)
        pipe.execute()

    day = throughput.read(redis, "day", moment=moment)

    assert day["points"] == 96 and day["step"] == 900
    assert day["series"]["depth|default"][-1] == 1 and day["series"]["depth|low"][-1] == 0
    assert day["series"]["depth|default"][0] is None  # no sample then: a gap, not a zero
    assert sum(day["series"]["finished|all"]) == 2 and day["series"]["finished|all"][-1] == 1
    assert throughput.read(redis, "hour", moment=moment + 3600)["totals"]["finished|all"] == 0


def test_counts_expire_and_a_busy_day_stays_small(redis, figures):
    """Every minute of a day busy on 3 queues and 8 tasks: the memory Redis reports, all keys expiring."""
    start = 1_800_000_000
    with redis.pipeline(transaction=False) as pipe:
        for minute in range(1440):
            for n in range(8):
                for outcome in throughput.OUTCOMES:
                    throughput.record_outcome(
                        pipe, ("high", "default", "low")[n % 3], f"task_{n}", outcome, start + minute * 60
                    )
        pipe.execute()

    keys = list(redis.scan_iter(f"{throughput.PREFIX}*"))
    used = sum(redis.memory_usage(key) for key in keys)

    assert len(keys) == 1440
    assert all(0 < redis.ttl(key) <= throughput.KEEP_SECONDS for key in keys)
    assert used < 3 * 1024 * 1024
    figures.record("throughput counters, a busy day (3 queues, 8 tasks)", bytes=used, bytes_per_minute=used // 1440)


def test_the_dashboard_serves_its_series_to_operators_only(app, redis, client):
    operator = app.test_client()
    log_in(operator)
    default = Queue("default", connection=redis, serializer=JSONSerializer)
    default.enqueue("tests.fixtures.fail_with", "boom")
    default.enqueue("tests.fixtures.echo", 1)
    _work(redis, "default")
    Queue("ondemand", connection=redis, serializer=JSONSerializer).enqueue("tests.fixtures.echo", 2)  # no worker

    page = operator.get("/operator/dashboard")
    data = operator.get("/operator/dashboard.json?span=hour").get_json()

    assert page.status_code == 200 and 'id="throughput-chart"' in page.get_data(as_text=True)
    assert data["totals"]["failed|task|tests.fixtures.fail_with"] == 1 and data["totals"]["finished|all"] == 1
    assert data["series"]["depth|ondemand"][-1] == 1  # sampled as it was read: a queue no worker drains
    assert "ondemand" in data["queues"]
    assert operator.get("/operator/dashboard.json?span=day").get_json()["points"] == 96
    assert operator.get("/operator/dashboard.json?span=year").status_code == 400
    assert client.get("/operator/dashboard.json").status_code == 302  # to the login
    assert client.get("/operator/dashboard").status_code == 302
