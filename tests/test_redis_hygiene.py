"""Redis hygiene on real redis-servers: an evicting policy or no persistence is logged with the fix,
shown to operators, exported as a metric, and (OFFLOAD_REQUIRE_SAFE_REDIS) refused at start."""

from __future__ import annotations

import logging
import math
import shlex
import subprocess
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis

import dev
from offload import redis_hygiene
from offload.connection import connect, redact
from offload.redis_hygiene import UnsafeRedis
from tests.conftest import OPERATOR_ACCOUNT, ROOT, log_in, process_env
from tests.faults import redis_with

EVICTING = ("--maxmemory", "50mb", "--maxmemory-policy", "allkeys-lru", "--appendonly", "yes")
NOT_PERSISTENT = ("--save", "", "--appendonly", "no")
SAFE = ("--maxmemory-policy", "noeviction", "--appendonly", "yes")


def make_app(url: str, **config):
    from app import create_app

    return create_app(
        {"TESTING": True, "OFFLOAD_REDIS_URL": url, "WTF_CSRF_ENABLED": False, **OPERATOR_ACCOUNT, **config}
    )


def scrape(app) -> dict[tuple[str, str], float]:
    app.config["OFFLOAD_METRICS_TOKEN"] = "t"
    text = app.test_client().get("/metrics", headers={"Authorization": "Bearer t"}).get_data(as_text=True)
    return {
        (sample.name, sample.labels.get("check", "")): sample.value
        for family in text_string_to_metric_families(text)
        if family.name.startswith("offload_redis")
        for sample in family.samples
    }


def hygiene_errors(caplog, url: str) -> list[str]:
    """The hygiene module's error lines about the Redis at ``url``."""
    return [
        message
        for r in caplog.records
        if r.name == redis_hygiene.__name__ and r.levelno == logging.ERROR and url in (message := r.getMessage())
    ]


@pytest.mark.parametrize(
    ("url", "logged"),
    [
        ("redis://127.0.0.1:6390/0?password=S3cret", "redis://127.0.0.1:6390/0?password=***"),
        (
            "redis://h/1?username=u&password=S3cret&socket_timeout=3",
            "redis://h/1?username=u&password=***&socket_timeout=3",
        ),
        ("unix:///run/redis.sock?db=2&password=S3cret", "unix:///run/redis.sock?db=2&password=***"),
        ("rediss://user:S3cret@h:6380/0", "rediss://user:***@h:6380/0"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ],
)
def test_a_redis_url_is_logged_without_its_password_wherever_it_is_written(url, logged):
    assert redact(url) == logged


def test_evicting_policy_is_logged_with_the_fix_shown_to_operators_and_exported(caplog):
    with redis_with(*EVICTING) as server:
        caplog.set_level(logging.WARNING)
        app = make_app(server.url)

        [error] = hygiene_errors(caplog, server.url)
        assert "maxmemory-policy allkeys-lru" in error and "set maxmemory-policy noeviction" in error
        metrics = scrape(app)
        assert metrics[("offload_redis_unsafe", "eviction")] == 1
        assert metrics[("offload_redis_unsafe", "persistence")] == 0

        client = app.test_client()
        # Anyone may ask /healthz: the problem, without where Redis is.
        problem = error.split(": ", 1)[1]
        assert client.get("/healthz").get_json()["redis_problems"] == [problem.replace(f" at {server.url}", "")]
        assert server.url.split("//")[1].split("/")[0] not in client.get("/healthz").get_data(as_text=True)
        assert b"redis-hygiene" not in client.get("/").data  # not shown to the public
        log_in(client)
        page = client.get("/operator/queues").get_data(as_text=True)
        assert 'id="redis-hygiene"' in page and "maxmemory-policy allkeys-lru" in page


def test_redis_without_persistence_is_logged_with_the_fix_and_exported(caplog):
    with redis_with(*NOT_PERSISTENT) as server:
        caplog.set_level(logging.WARNING)
        app = make_app(server.url)

        [error] = hygiene_errors(caplog, server.url)
        assert "no persistence" in error and "appendonly yes" in error
        metrics = scrape(app)
        assert metrics[("offload_redis_unsafe", "persistence")] == 1
        assert metrics[("offload_redis_unsafe", "eviction")] == 0


def test_safe_redis_raises_nothing(caplog):
    with redis_with(*SAFE) as server:
        caplog.set_level(logging.WARNING)
        app = make_app(server.url, OFFLOAD_REQUIRE_SAFE_REDIS="on")

        assert hygiene_errors(caplog, server.url) == []
        assert app.test_client().get("/healthz").get_json() == {"status": "ok", "redis_problems": []}
        metrics = scrape(app)
        assert metrics[("offload_redis_unsafe", "eviction")] == metrics[("offload_redis_unsafe", "persistence")] == 0


def test_managed_redis_that_refuses_config_degrades_to_info_and_unknown(caplog):
    with redis_with(*EVICTING, "--rename-command", "CONFIG", "") as server:
        caplog.set_level(logging.WARNING)
        found = redis_hygiene.inspect(connect({**_timeouts(), "OFFLOAD_REDIS_URL": server.url}))
        app = make_app(server.url)

        # INFO still tells the policy and that AOF is on; the save points are unknown, but AOF suffices.
        assert (found.policy, found.aof, found.save_points, found.persistent) == ("allkeys-lru", True, None, True)
        assert "maxmemory-policy allkeys-lru" in hygiene_errors(caplog, server.url)[0]
        assert scrape(app)[("offload_redis_unsafe", "eviction")] == 1

    with redis_with(*NOT_PERSISTENT, "--rename-command", "CONFIG", "") as server:
        caplog.clear()
        app = make_app(server.url)
        metrics = scrape(app)

        assert math.isnan(metrics[("offload_redis_unsafe", "persistence")])
        assert any("persistence unknown" in r.getMessage() for r in caplog.records)


def _timeouts() -> dict[str, float]:
    return {"OFFLOAD_REDIS_CONNECT_TIMEOUT": 1.0, "OFFLOAD_REDIS_SOCKET_TIMEOUT": 1.0}


def test_require_safe_redis_refuses_the_app_and_is_on_in_production():
    with redis_with(*EVICTING) as server:
        with pytest.raises(UnsafeRedis, match=r"refusing to start: Redis at .* maxmemory-policy allkeys-lru"):
            make_app(server.url, OFFLOAD_REQUIRE_SAFE_REDIS="on")
        with pytest.raises(UnsafeRedis):
            make_app(server.url, OFFLOAD_ENV="production", SECRET_KEY="a-real-secret-for-the-redis-hygiene-test")
        make_app(server.url, OFFLOAD_ENV="production", SECRET_KEY="s" * 32, OFFLOAD_REQUIRE_SAFE_REDIS="off")


@pytest.mark.e2e
def test_production_web_and_worker_refuse_an_evicting_redis_with_one_line(tmp_path: Path):
    with redis_with(*EVICTING) as server:
        env = {**process_env(server.url), "OFFLOAD_ENV": "production", "SECRET_KEY": "s" * 32}
        env.pop("OFFLOAD_REQUIRE_SAFE_REDIS", None)
        port = dev.free_port()
        web = subprocess.run(
            ["gunicorn", "app:app", "--bind", f"127.0.0.1:{port}"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        worker = subprocess.run(
            shlex.split(dev.WORKER_COMMAND), cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
        )
        flask_worker = subprocess.run(
            ["flask", "--app", "app", "offload", "worker", "--burst"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    for result in (web, worker, flask_worker):
        output = result.stdout + result.stderr
        refusals = [line for line in output.splitlines() if "refusing to start" in line]
        assert result.returncode != 0, output
        assert len(refusals) == 1, output
        assert "maxmemory-policy allkeys-lru" in refusals[0] and "noeviction" in refusals[0]
        assert "Traceback" not in output, output


def test_redis_that_lost_its_data_is_said_at_once_counted_once_and_shown(caplog):
    with redis_with(*SAFE) as server:
        web, worker = make_app(server.url), make_app(server.url)  # two processes watching one Redis
        client = web.test_client()
        log_in(client)
        assert 'id="redis-hygiene"' not in client.get("/operator/queues").get_data(as_text=True)
        caplog.set_level(logging.WARNING)

        Redis.from_url(server.url).flushall()  # what a restart without persistence leaves
        log_in(client)  # the operator's login went with the rest
        page = client.get("/operator/queues").get_data(as_text=True)
        redis_hygiene.get_watch(worker).check()

        assert 'id="redis-hygiene"' in page and "lost its data 1 time(s)" in page
        losses = [m for m in hygiene_errors(caplog, server.url) if "lost its data (restarted" in m]
        assert len(losses) == 2  # each process says so, once
        assert scrape(web)[("offload_redis_data_losses_total", "")] == 1  # counted once
