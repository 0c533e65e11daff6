"""Periodic jobs: one job per period however many schedulers try, proven with two real workers."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from redis import Redis

from offload import periodic
from offload.workloads import housekeeping, newsletter
from tasks import offload
from tests.conftest import Stack, process_env, wait_for

CONFIG = {
    "OFFLOAD_CLEANUP_EVERY": 86400,
    "OFFLOAD_CLEANUP_OFFSET": 3 * 3600,
    "OFFLOAD_DIGEST_EVERY": 3600,
    "OFFLOAD_RESULT_TTL": 60,
    "OFFLOAD_FAILURE_TTL": 60,
}
MIDNIGHT = 1_777_593_600  # 2026-05-01T00:00:00Z


def test_periods_count_from_their_offset():
    nightly = periodic.Periodic("cleanup_expired", every=86400, offset=3 * 3600)

    assert nightly.period(MIDNIGHT + 3 * 3600) == nightly.period(MIDNIGHT + 27 * 3600 - 1)
    assert nightly.period(MIDNIGHT + 3 * 3600 - 1) == nightly.period(MIDNIGHT + 3 * 3600) - 1


def test_two_schedulers_in_the_same_period_enqueue_one_job(redis_url, redis):
    other = Redis.from_url(redis_url)  # a second scheduler, with its own connection

    first = periodic.enqueue_due(redis, CONFIG, offload.tasks, {"low"}, now=MIDNIGHT + 3 * 3600 + 5)
    second = periodic.enqueue_due(other, CONFIG, offload.tasks, {"low"}, now=MIDNIGHT + 3 * 3600 + 50)

    assert sorted(first) == sorted(
        [f"periodic-cleanup_expired-{(MIDNIGHT // 86400)}", f"periodic-hourly_digest-{(MIDNIGHT + 3 * 3600) // 3600}"]
    )
    assert second == []
    assert redis.llen("rq:queue:low") == 2


def test_the_next_period_gets_its_own_job(redis):
    periodic.enqueue_due(redis, CONFIG, offload.tasks, {"low"}, now=MIDNIGHT + 10)

    later = periodic.enqueue_due(redis, CONFIG, offload.tasks, {"low"}, now=MIDNIGHT + 3600 + 10)

    assert later == [f"periodic-hourly_digest-{MIDNIGHT // 3600 + 1}"]


def test_a_scheduler_only_enqueues_for_the_queues_whose_lock_it_holds(redis):
    assert periodic.enqueue_due(redis, CONFIG, offload.tasks, {"high", "default"}, now=MIDNIGHT) == []
    assert redis.llen("rq:queue:low") == 0


def test_the_cleanup_prunes_the_index_of_expired_newsletters(app, redis):
    with app.app_context():
        text = newsletter.NewsletterText(subject="Old", body="Text")
        from offload import jobs

        kept = newsletter.submit_batch(jobs.get_queue("low"), text, ["a@example.org"], config=app.config)
        gone = newsletter.submit_batch(jobs.get_queue("low"), text, ["b@example.org"], config=app.config)
    redis.delete(newsletter.batch_key(gone))  # as its TTL would

    counts = housekeeping.cleanup_expired(redis, ["high", "default", "low"])

    assert counts["newsletters_pruned"] == 1
    assert [raw.decode() for raw in redis.zrange(newsletter.INDEX_KEY, 0, -1)] == [kept]


@pytest.mark.e2e
def test_two_workers_run_each_period_exactly_once_even_when_the_scheduler_changes_hands(redis_url, redis, tmp_path):
    env = {**process_env(redis_url), "DIGEST_EVERY": "2", "CLEANUP_EVERY": "3", "CLEANUP_OFFSET": "0"}
    stack = Stack(redis_url=redis_url, logs=tmp_path, env=env)
    # An idle worker without the lock tries to take it at its maintenance passes, which it runs
    # when it wakes from waiting for a job: every 5 s here (worker TTL - 15), every 405 s by default.
    extra = ["--maintenance-interval", "1", "--worker-ttl", "20"]
    try:
        workers = {name: stack.start_worker(name, extra) for name in ("worker-a", "worker-b")}
        holder = wait_for(
            lambda: next((n for n in workers if "Acquired scheduler lock" in stack.log(n)), None),
            what="one scheduler to take the lock",
        )
        wait_for(lambda: len(digests(redis)) >= 3, timeout=30, what="three digests")

        stack.stop(workers[holder])  # a graceful stop releases the lock; the other worker takes it
        other = next(name for name in workers if name != holder)
        wait_for(lambda: "Acquired scheduler lock" in stack.log(other), timeout=30, what="the other to take over")
        seen = len(digests(redis))
        wait_for(lambda: len(digests(redis)) >= seen + 3, timeout=30, what="three more digests")
    finally:
        stack.close()
        for name in ("worker-a", "worker-b"):
            print(f"----- {name} log -----\n{stack.log(name)[-4000:]}")

    runs = Counter(digest["job_id"] for digest in digests(redis))
    assert set(runs.values()) == {1}, runs
    assert len(runs) >= 6  # one job id per period: a slow handover may skip a period, never repeat one
    cleanups = [key for key in redis.scan_iter("rq:job:periodic-cleanup_expired-*")]
    assert cleanups, "the nightly job (every 3 s here) ran too"


def digests(redis: Redis) -> list[dict]:
    return [json.loads(raw) for raw in redis.lrange(housekeeping.DIGESTS_KEY, 0, -1)]


def test_the_digest_counts_the_jobs_that_ended_and_names_no_newsletter(app, redis):
    from rq import Queue, SimpleWorker
    from rq.serializers import JSONSerializer

    from offload import jobs

    queue = Queue("default", connection=redis, serializer=JSONSerializer)
    queue.enqueue("tests.fixtures.fail_with", "broken", meta={"task": "crunch_numbers"})
    queue.enqueue("tasks.crunch_numbers", limit=100, meta={"task": "crunch_numbers"})
    SimpleWorker([queue], connection=redis, serializer=JSONSerializer).work(burst=True)
    with app.app_context():
        text = newsletter.NewsletterText(subject="Secret launch", body="Text")
        batch_id = newsletter.submit_batch(jobs.get_queue("low"), text, ["a@example.org"], config=app.config)

        digest = housekeeping.hourly_digest(redis, app.config, hours=1, job_id=None)

    assert digest["jobs"] == {"crunch_numbers": {"finished": 1, "failed": 1}}
    assert digest["newsletters"] == {"newsletters": 1, "mails": 1, "sent": 0, "failed": 0}
    stored = redis.lindex(housekeeping.DIGESTS_KEY, 0).decode()
    assert batch_id not in stored and "Secret launch" not in stored


def test_a_scheduler_waits_out_redis_but_a_misconfiguration_fails_loudly(redis, monkeypatch, caplog):
    """Only a Redis error is retried next round; anything else ends the scheduler where someone sees it."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from rq import Queue
    from rq.serializers import JSONSerializer

    low = Queue("low", connection=redis, serializer=JSONSerializer)
    broken = {**CONFIG, "OFFLOAD_DIGEST_EVERY": "hourly"}  # not a number of seconds
    scheduler = periodic.OffloadScheduler([low], connection=redis, config=broken, tasks=offload.tasks)
    scheduler.acquire_locks()
    try:
        with pytest.raises(TypeError):
            scheduler.enqueue_scheduled_jobs()

        def redis_gone(*args, **kwargs):
            raise RedisConnectionError("Connection refused")

        scheduler.config = dict(CONFIG)
        monkeypatch.setattr(periodic, "enqueue_due", redis_gone)
        scheduler.enqueue_scheduled_jobs()  # logged, not raised: the next round tries again
        assert "Redis unavailable (Connection refused)" in caplog.text
    finally:
        scheduler.release_locks()


def test_the_digest_and_the_cleanup_cover_the_ondemand_queues(app, redis):
    from rq import Queue, SimpleWorker
    from rq.serializers import JSONSerializer

    import tasks

    queue = Queue("ondemand", connection=redis, serializer=JSONSerializer)
    queue.enqueue("tasks.crunch_numbers", limit=100, meta={"task": "crunch_numbers"})
    SimpleWorker([queue], connection=redis, serializer=JSONSerializer).work(burst=True)
    # An entry whose job has expired, as RQ leaves them for the cleanup to drop.
    redis.zadd("rq:finished:ondemand", {"long-gone": 1})

    with app.app_context():
        digest = housekeeping.hourly_digest(redis, app.config, hours=1, job_id=None)
        tasks.cleanup_expired()

    assert digest["jobs"] == {"crunch_numbers": {"finished": 1}}
    assert redis.zscore("rq:finished:ondemand", "long-gone") is None
