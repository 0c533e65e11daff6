"""A job's own log: captured in the worker, capped, kept exactly as long as the job."""

from __future__ import annotations

import logging

import httpx
import pytest
from rq import Queue
from rq.serializers import JSONSerializer

from offload import joblog
from tests.conftest import wait_for


@pytest.fixture(autouse=True)
def info_level(caplog):
    """Workers log at INFO (worker.DICT_CONFIG); pytest's root logger would drop those records."""
    caplog.set_level(logging.INFO)


@pytest.fixture
def job(redis):
    queue = Queue("default", connection=redis, serializer=JSONSerializer)
    return queue.enqueue("tests.fixtures.log_lines", 1, failure_ttl=3600)


def test_capture_keeps_the_tasks_lines_not_rqs_and_exceptions_as_one_line(redis, job):
    with joblog.capture(job, redis):
        logging.getLogger("tests.fixtures").info("hello %s", "<b>world</b>")
        logging.getLogger("rq.worker").info("Job OK (%s)", job.id)
        logging.getLogger("tests.fixtures").debug("too quiet to keep")
        try:
            raise ValueError("bad value")
        except ValueError:
            logging.getLogger("tests.fixtures").exception("it broke")
    logging.getLogger("tests.fixtures").info("after the job")

    lines = joblog.read(redis, job.id)

    assert len(lines) == 2
    assert lines[0].endswith(" INFO tests.fixtures: hello <b>world</b>")
    assert lines[1].endswith(" ERROR tests.fixtures: it broke\nValueError: bad value")
    assert "Traceback" not in "\n".join(lines)


def test_capture_keeps_only_the_tasks_own_loggers_not_the_libraries_under_it(redis, job):
    # The job's function is tests.fixtures.log_lines: its package is "tests".
    with joblog.capture(job, redis):
        logging.getLogger("tests.fixtures").info("the task's own")
        logging.getLogger("tests").info("its package's")
        logging.getLogger("offload.workloads.primes").info("a workload's")
        logging.getLogger("httpx").info('HTTP Request: GET http://user:pw@10.0.0.5:8091/get "HTTP/1.1 200 OK"')
        logging.getLogger("urllib3.connectionpool").info("Starting new HTTP connection (1): 10.0.0.5:8091")
        logging.getLogger("testsuite").info("another package that starts alike")
        logging.getLogger("offload.worker").info("the worker's, not the task's")
        logging.getLogger().warning("the root logger, where libraries log too")

    messages = [line.split(" ", 2)[2] for line in joblog.read(redis, job.id)]

    assert messages == [
        "tests.fixtures: the task's own",
        "tests: its package's",
        "offload.workloads.primes: a workload's",
    ]


def test_capture_keeps_the_last_lines_each_cut_to_length(redis, job):
    with joblog.capture(job, redis):
        for number in range(joblog.MAX_LINES + 50):
            logging.getLogger("tests.fixtures").warning("line %d %s", number, "x" * joblog.MAX_LINE_CHARS)

    lines = joblog.read(redis, job.id)

    assert len(lines) == joblog.MAX_LINES
    assert " line 50 " in lines[0] and f" line {joblog.MAX_LINES + 49} " in lines[-1]
    assert {len(line) for line in lines} == {joblog.MAX_LINE_CHARS}


def test_the_log_takes_the_jobs_expiry_when_it_ends(redis, job):
    redis.expire(job.key, 500)
    with joblog.capture(job, redis):
        logging.getLogger("tests.fixtures").info("one line")
        assert redis.ttl(joblog.log_key(job.id)) > 500  # while running: not before the job

    assert 490 < redis.ttl(joblog.log_key(job.id)) <= 500


def test_a_job_that_logs_nothing_sends_redis_nothing(redis, job):
    before = sum(stats["calls"] for stats in redis.info("commandstats").values())

    with joblog.capture(job, redis):
        logging.getLogger("tests.fixtures").debug("too quiet to keep")

    after = sum(stats["calls"] for stats in redis.info("commandstats").values())
    assert after - before == 1  # the first INFO itself
    assert not redis.exists(joblog.log_key(job.id))


@pytest.mark.e2e
def test_worker_records_what_the_task_logged_and_the_page_shows_it(stack, redis):
    queue = Queue("default", connection=redis, serializer=JSONSerializer)
    job = queue.enqueue("tests.fixtures.log_lines", 3, "fail", failure_ttl=3600)

    with httpx.Client(base_url=stack.base_url, timeout=10) as http:
        view = wait_for(lambda: (v := http.get(f"/api/jobs/{job.id}").json())["ended"] and v, what="the job")
        page = http.get(f"/jobs/{job.id}").text

    assert view["status"] == "failed"
    messages = [line.split(" ", 2)[2] for line in view["log"]]
    assert messages == [
        "tests.fixtures: fail 0",
        "tests.fixtures: fail 1",
        "tests.fixtures: fail 2",
        "tests.fixtures: caught one\nValueError: fail handled",
    ]
    assert "tests.fixtures: fail 2" in page
    assert "traceback" not in view  # not an operator
    assert 3500 < redis.ttl(joblog.log_key(job.id)) <= 3600  # as long as the failed job
