"""Redis down: the web answers 503 with a clear message, then recovers by itself."""

from __future__ import annotations

from pathlib import Path

import httpx

import dev
from tests.conftest import Stack, process_env, queued_job_count, wait_for


def test_web_answers_503_while_redis_is_down_and_recovers_when_it_returns(tmp_path: Path):
    port = dev.free_port()
    url = f"redis://127.0.0.1:{port}/0"
    binary = dev.find_redis_server()
    stack = Stack(redis_url=url, logs=tmp_path, env=process_env(url))
    try:
        with dev.redis_server(binary, port):
            stack.start_web()
            http = httpx.Client(base_url=stack.base_url, timeout=10)
            assert http.get("/jobs").status_code == 200

        # Redis is gone now.
        api = http.post("/api/jobs", json={"task": "crunch_numbers", "params": {"limit": 100}})
        page = http.get("/jobs/a-job-id")  # a page that must read Redis
        health = http.get("/healthz")

        assert api.status_code == 503
        assert "Redis" in api.json()["error"] and api.headers["Retry-After"] == "5"
        assert page.status_code == 503
        assert "unreachable" in page.text and "Traceback" not in page.text
        assert health.status_code == 503

        with dev.redis_server(binary, port):
            created = wait_for(
                lambda: (
                    (r := http.post("/api/jobs", json={"task": "crunch_numbers", "params": {"limit": 100}})).status_code
                    == 202
                    and r
                ),
                what="the web to recover",
            )
            assert created.json()["status"] == "queued"
            assert http.get("/jobs").status_code == 200
            from redis import Redis

            assert queued_job_count(Redis.from_url(url)) == 1
    finally:
        stack.close()
        print(stack.log("web")[-3000:])
