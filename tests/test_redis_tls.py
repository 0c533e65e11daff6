"""Redis over TLS (``rediss://``), as Upstash and any Redis reached over the internet are: the web
(gunicorn, gevent), the production worker and its scheduler, each verifying the server's
certificate against the CA the URL names."""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme

import dev
from tests.conftest import Stack, process_env, wait_for
from tests.faults import RedisProcess, redis_with

pytestmark = pytest.mark.e2e


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[RedisProcess, str]]:
    """A redis-server answering TLS only on a port of its own (its plain port is for the test's
    checks), with a certificate for 127.0.0.1 from a CA of the test's; and its ``rediss://`` URL."""
    ca = trustme.CA()
    server_pem, ca_pem = tmp_path / "server.pem", tmp_path / "ca.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(server_pem))
    ca.cert_pem.write_to_path(str(ca_pem))
    port = dev.free_port()
    options = ("--tls-port", str(port), "--tls-cert-file", str(server_pem), "--tls-key-file", str(server_pem))
    with redis_with(*options, "--tls-auth-clients", "no", "--appendonly", "yes") as server:
        yield server, f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca_pem}"


def test_web_worker_and_scheduler_work_over_tls_verifying_the_certificate(tls_redis, tmp_path: Path):
    server, url = tls_redis
    stack = Stack(redis_url=url, logs=tmp_path, env=process_env(url))
    try:
        base = stack.start_web()
        stack.start_worker("worker")
        with httpx.Client(base_url=base, timeout=10) as http:
            assert http.get("/healthz").json()["status"] == "ok"
            created = http.post("/api/jobs", json={"task": "crunch_numbers", "params": {"limit": 1000}})
            assert created.status_code == 202, created.text
            job_url = created.json()["api_url"]
            done = wait_for(
                lambda: (job := http.get(job_url).json())["status"] == "finished" and job, what="the job to finish"
            )
            assert done["result"]["primes_below_limit"] == 168
            # Scheduled through the web: the scheduler listens and moves it over TLS too.
            later = http.post("/api/jobs", json={"task": "crunch_numbers", "params": {"limit": 100}, "run_in": 1})
            assert later.status_code == 202, later.text
            wait_for(lambda: http.get(later.json()["api_url"]).json()["status"] == "finished", what="the scheduled job")
        plain = server.url  # the same server, without TLS: what went over TLS is there
        from redis import Redis

        assert Redis.from_url(plain).exists(f"rq:job:{done['id']}")
        for name in ("web", "worker"):
            assert "Traceback" not in stack.log(name), stack.log(name)
    finally:
        stack.close()
        for name in ("web", "worker"):
            print(f"----- {name} log -----\n{stack.log(name)[-3000:]}")


def test_a_certificate_the_url_does_not_trust_is_refused_and_said_in_one_line(tls_redis):
    """Without the CA, verification fails: the worker says so in one line and exits 1, never
    falling back to an unverified connection."""
    _, url = tls_redis
    untrusted = url.split("?", 1)[0]

    result = subprocess.run(
        shlex.split(dev.WORKER_COMMAND),
        cwd=dev.ROOT,
        env=process_env(untrusted),
        capture_output=True,
        text=True,
        timeout=60,
    )

    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert result.returncode == 1
    assert len(lines) == 1, lines
    assert f"Redis at {untrusted} is unreachable" in lines[0] and "certificate verify failed" in lines[0], lines
