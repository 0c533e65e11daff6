"""Security by default, the parts around the routes: headers, proxies, rate limits, no pickle,
unguessable ids, no secret in logs or pages, SECRET_KEY required outside development.

(Login, operator routes, the dashboard and CSRF on operator actions are tested with them.)
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shlex
import signal
import subprocess
import uuid
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from flask import Flask
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

import dev
from offload import settings
from tests.conftest import OPERATOR_ACCOUNT, ROOT, Stack, log_in, process_env, queued_job_count, wait_for

REQUIRED_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def _directive(policy: str, name: str) -> str:
    return next((part.strip() for part in policy.split(";") if part.strip().startswith(name + " ")), "")


def _assert_secure_headers(response, where: str) -> None:
    csp = response.headers.get("Content-Security-Policy", "")
    assert "frame-ancestors 'none'" in csp, where
    assert "'self'" in _directive(csp, "script-src") and "unsafe-inline" not in _directive(csp, "script-src"), where
    if " /rq" not in where:  # rq-dashboard's own pages need eval and inline styles (dashboard.py)
        assert "unsafe" not in csp, where
    for name, value in REQUIRED_HEADERS.items():
        assert response.headers.get(name) == value, (where, name)
    assert "Strict-Transport-Security" not in response.headers, where  # plain HTTP here


@pytest.fixture
def unlimited_app(redis_url: str) -> Flask:
    from app import create_app

    app = create_app(
        {
            "TESTING": True,
            "OFFLOAD_REDIS_URL": redis_url,
            "WTF_CSRF_ENABLED": False,
            "RATELIMIT_ENABLED": False,
            **OPERATOR_ACCOUNT,
        }
    )

    @app.get("/test-only/boom")
    def boom():
        raise RuntimeError("boom")

    return app


# --------------------------------------------------------------------------- headers


@pytest.mark.parametrize("operator", [False, True], ids=["anonymous", "operator"])
def test_every_route_and_error_sends_the_security_headers(unlimited_app: Flask, figures, operator: bool):
    client = unlimited_app.test_client()
    if operator:
        assert log_in(client).status_code == 303
    job_id = client.post("/api/jobs", json={"task": "crunch_numbers", "params": {"limit": 100}}).get_json()["id"]
    samples = {
        "name": "crunch_numbers",
        "job_id": job_id,
        "filename": "job.js",
        "instance_number": 0,
        "queue_name": "default",
        "registry_name": "finished",
        "per_page": 8,
        "order": "asc",
        "page": 1,
        "batch_id": "no-such-batch",
    }
    checked = 0
    # Reads first, then the actions (which may delete the sample job).
    rules = sorted(unlimited_app.url_map.iter_rules(), key=lambda rule: "POST" in rule.methods)
    for rule in rules:
        url = rule.build({arg: samples[arg] for arg in rule.arguments})[1]
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            response = client.open(url, method=method, json={} if method == "POST" else None)
            _assert_secure_headers(response, f"{method} {url} -> {response.status_code}")
            if rule.endpoint != "boom" and not rule.endpoint.endswith("static") and response.status_code != 308:
                # A view's answer (not a file's, the host's own route's, or the router's slash redirect):
                # Jobs, results, tracebacks: never kept by a browser or a shared cache; files are revalidated.
                caching = response.headers.get("Cache-Control", "")
                assert "no-store" in caching or "no-cache" in caching, (method, url, caching)
            checked += 1
    for method, url in [("GET", "/no/such/page"), ("GET", "/api/nothing"), ("DELETE", "/"), ("GET", "/jobs/x" * 20)]:
        response = client.open(url, method=method)
        assert response.status_code >= 400
        _assert_secure_headers(response, f"{method} {url} -> {response.status_code}")
        checked += 1
    figures.add("security headers", f"{'operator' if operator else 'anonymous'}_requests_checked", checked)
    assert checked >= 10


@pytest.mark.e2e
def test_headers_come_through_gunicorn_too(http: httpx.Client):
    for url in ("/", "/jobs", "/offload-static/job.js", "/no/such/page"):
        _assert_secure_headers(http.get(url), url)


def test_hsts_only_over_https_and_only_from_a_trusted_proxy(redis_url: str):
    from app import create_app

    behind_proxy = create_app(
        {
            "TESTING": True,
            "OFFLOAD_REDIS_URL": redis_url,
            "OFFLOAD_TRUSTED_PROXY_COUNT": 1,
            "OFFLOAD_TRUSTED_PROXIES": ["127.0.0.1"],
        }
    ).test_client()
    direct = create_app({"TESTING": True, "OFFLOAD_REDIS_URL": redis_url}).test_client()
    https = {"X-Forwarded-Proto": "https"}

    assert behind_proxy.get("/", headers=https).headers["Strict-Transport-Security"].startswith("max-age=")
    assert "Strict-Transport-Security" not in behind_proxy.get("/").headers
    # Without a trusted proxy, a client's X-Forwarded-Proto is ignored.
    assert "Strict-Transport-Security" not in direct.get("/", headers=https).headers


class _InlineCode(HTMLParser):
    """Collects what a strict CSP would block: inline scripts, handlers, styles, javascript: URLs."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        if tag == "script" and "src" not in names:
            self.found.append("inline <script>")
        if tag == "style":
            self.found.append("<style> element")
        for name, value in attrs:
            if name.startswith("on") or name == "style":
                self.found.append(f"{tag}[{name}]")
            if value and value.strip().lower().startswith("javascript:"):
                self.found.append(f"{tag}[{name}]=javascript:")


def test_pages_need_nothing_the_content_security_policy_blocks(unlimited_app: Flask):
    client = unlimited_app.test_client()
    job_id = client.post("/api/jobs", json={"task": "crunch_numbers", "params": {"limit": 100}}).get_json()["id"]
    invalid = client.post("/tasks/crunch_numbers", data={"limit": "5"})
    pages = {
        "/": client.get("/"),
        "/jobs": client.get("/jobs"),
        f"/jobs/{job_id}": client.get(f"/jobs/{job_id}"),
        "form with errors": invalid,
        "404 page": client.get("/jobs/none"),
    }
    for name, page in pages.items():
        parser = _InlineCode()
        parser.feed(page.get_data(as_text=True))
        assert parser.found == [], name
    script = (ROOT / "offload" / "web" / "static" / "job.js").read_text()
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|eval\(|new Function|\.style\b", script)


# --------------------------------------------------------------------------- rate limits


def test_submissions_are_rate_limited_per_client_with_a_clear_429(redis_url: str, redis: Redis):
    from app import create_app

    app = create_app(
        {
            "TESTING": True,
            "OFFLOAD_REDIS_URL": redis_url,
            "WTF_CSRF_ENABLED": False,
            "OFFLOAD_TRUSTED_PROXY_COUNT": 1,
            "OFFLOAD_TRUSTED_PROXIES": ["127.0.0.1"],  # the test client's address plays the proxy
            "OFFLOAD_SUBMIT_RATE_LIMIT": "2 per minute",
        }
    )
    client = app.test_client()
    alice = {"X-Forwarded-For": "203.0.113.7"}
    bob = {"X-Forwarded-For": "198.51.100.9"}
    body = {"task": "crunch_numbers", "params": {"limit": 100}}

    assert client.post("/api/jobs", json=body, headers=alice).status_code == 202
    assert client.post("/tasks/crunch_numbers", data={"limit": "100"}, headers=alice).status_code == 303
    over_api = client.post("/api/jobs", json=body, headers=alice)
    over_form = client.post("/tasks/crunch_numbers", data={"limit": "100"}, headers=alice)
    # A client cannot escape by prepending addresses: only the proxy's last entry counts.
    spoofed = client.post("/api/jobs", json=body, headers={"X-Forwarded-For": "10.9.9.9, 203.0.113.7"})
    other_client = client.post("/api/jobs", json=body, headers=bob)

    assert over_api.status_code == 429
    assert "Too many jobs submitted from your address" in over_api.get_json()["error"]
    assert int(over_api.headers["Retry-After"]) > 0
    assert over_form.status_code == 429 and "Too many jobs submitted" in over_form.get_data(as_text=True)
    assert spoofed.status_code == 429
    assert other_client.status_code == 202
    assert queued_job_count(redis) == 3  # the refused ones enqueued nothing
    limit_keys = list(redis.scan_iter("LIMITS:*"))
    assert limit_keys and all(redis.ttl(key) > 0 for key in limit_keys)


# --------------------------------------------------------------------------- no pickle


class _RunsCommandWhenUnpickled:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


@pytest.mark.e2e
def test_a_pickled_job_is_refused_by_the_worker_and_hidden_by_the_web(stack: Stack, redis: Redis, tmp_path: Path):
    marker = tmp_path / "unpickled"
    payload = _RunsCommandWhenUnpickled(marker)
    # Someone with write access to Redis enqueues with RQ's default (pickle) serializer.
    job = Queue("default", connection=redis).enqueue("tests.fixtures.burn_cpu", payload, meta={"x": payload})
    worker = next(process for name, process in stack.processes if name == "worker")

    wait_for(lambda: redis.hget(f"rq:job:{job.id}", "status") == b"failed", what="the job to be refused")
    follow_up = Queue("default", connection=redis, serializer=JSONSerializer).enqueue("tests.fixtures.burn_cpu", 0)
    wait_for(lambda: redis.hget(f"rq:job:{follow_up.id}", "status") == b"finished", what="the next job to run")

    assert not marker.exists()
    assert worker.poll() is None
    assert f"refused job {job.id}: its function and arguments are not JSON" in stack.log("worker")
    with httpx.Client(base_url=stack.base_url) as http:
        assert http.get(f"/api/jobs/{job.id}").status_code == 404
        assert http.get(f"/jobs/{job.id}").status_code == 404
        assert http.get("/jobs").status_code == 200
        assert http.get("/jobs?state=failed").status_code == 200
    assert not marker.exists()


# --------------------------------------------------------------------------- ids, secrets


def test_job_ids_are_random_uuid4(client, redis):
    ids = [client.post("/api/jobs", json={"task": "crunch_numbers", "params": {}}).get_json()["id"] for _ in range(3)]
    form = client.post("/tasks/crunch_numbers", data={"limit": "100"})
    ids.append(form.headers["Location"].rsplit("/", 1)[1])

    assert all(uuid.UUID(job_id).version == 4 for job_id in ids)
    assert len(set(ids)) == len(ids)


def test_the_503_log_line_names_no_password(caplog):
    from app import create_app

    password = "pw-" + secrets.token_hex(8)
    port = dev.free_port()
    with dev.redis_server(dev.find_redis_server(), port):
        Redis(port=port).config_set("requirepass", "the-right-one")
        # A wrong password (AuthenticationError), then a closed port (ConnectionError).
        for url in (f"redis://:{password}@127.0.0.1:{port}/0", f"redis://:{password}@127.0.0.1:{dev.free_port()}/0"):
            client = create_app({"TESTING": True, "OFFLOAD_REDIS_URL": url}).test_client()
            with caplog.at_level(logging.ERROR, logger="offload"):
                response = client.post("/api/jobs", json={"task": "crunch_numbers", "params": {}})
            assert response.status_code == 503
            assert password not in response.get_data(as_text=True)
    assert caplog.text.count("Redis unavailable during POST /api/jobs") == 2
    assert password not in caplog.text


@pytest.mark.e2e
def test_no_redis_password_or_secret_key_in_logs_or_pages(tmp_path: Path):
    password, secret_key = "pw-" + secrets.token_hex(8), "sk-" + secrets.token_hex(16)
    port = dev.free_port()
    url = f"redis://:{password}@127.0.0.1:{port}/0"
    stack = Stack(redis_url=url, logs=tmp_path, env={**process_env(url), "SECRET_KEY": secret_key})
    pages: list[str] = []
    try:
        with dev.redis_server(dev.find_redis_server(), port):
            Redis(port=port).config_set("requirepass", password)
            stack.start_web()
            stack.start_worker()
            http = httpx.Client(base_url=stack.base_url, timeout=10)
            index = http.get("/").text
            token = re.search(r'name="csrf_token" value="([^"]+)"', index).group(1)
            job_url = http.post("/tasks/crunch_numbers", data={"limit": "1000", "csrf_token": token}).headers[
                "Location"
            ]
            wait_for(lambda: http.get("/api" + job_url).json()["ended"], what="the job to end")
            for url_path in ("/", job_url, "/api" + job_url, "/jobs", "/api/tasks", "/healthz", "/nowhere"):
                pages.append(http.get(url_path).text)
            logged = len(stack.log("worker"))
        # Redis is gone: the outage paths log and answer too.
        pages += [http.get("/jobs").text, http.post("/api/jobs", json={"task": "crunch_numbers"}).text]
        pages.append(http.get("/healthz").text)
        wait_for(lambda: "Redis" in stack.log("worker")[logged:], what="the worker to log the outage")
        stack.stop(next(p for n, p in stack.processes if n == "worker"), signal.SIGTERM)
    finally:
        stack.close()
    logs = stack.log("web") + stack.log("worker")
    assert "Redis unavailable during" in logs
    for text in [logs, *pages]:
        assert password not in text
        assert secret_key not in text


def test_secret_key_is_required_outside_development():
    with pytest.raises(settings.SettingsError, match="SECRET_KEY"):
        settings.from_environ({"OFFLOAD_ENV": "production"})
    # docker-compose.yml's old fallback (shipped with OFFLOAD_ENV=production), the development
    # key, and a short one are refused too, by the environment and by an app's own config alike,
    # each saying how to make a real one.
    for weak in ("change-me-compose-only-not-a-real-secret", settings.DEVELOPMENT_SECRET_KEY, "k" * 31):
        with pytest.raises(settings.SettingsError, match=r"SECRET_KEY .*secrets\.token_hex\(32\)"):
            settings.from_environ({"OFFLOAD_ENV": "production", "SECRET_KEY": weak})
        config = {settings.key("ENV"): "production", "SECRET_KEY": weak}
        with pytest.raises(settings.SettingsError, match="SECRET_KEY"):
            settings.apply_defaults(config)
    assert settings.from_environ({"OFFLOAD_ENV": "production", "SECRET_KEY": "k" * 32})["SECRET_KEY"] == "k" * 32
    assert settings.from_environ({})["SECRET_KEY"] == settings.DEVELOPMENT_SECRET_KEY


@pytest.mark.e2e
@pytest.mark.parametrize(
    "command",
    [["gunicorn", "app:app", "--bind", "127.0.0.1:0"], shlex.split(dev.WORKER_COMMAND)],
    ids=["web", "worker"],
)
def test_web_and_worker_refuse_to_start_in_production_without_secret_key(command):
    env = {**process_env(f"redis://127.0.0.1:{dev.free_port()}/0"), "OFFLOAD_ENV": "production"}
    env.pop("SECRET_KEY", None)

    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)

    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stdout + result.stderr


OPERATOR_BLUEPRINTS = ("rq_dashboard", "operators", "control", "bulk")
"""Blueprints whose every route is for operators only."""


def test_every_operator_route_refuses_anonymous_users(app: Flask, redis: Redis, figures):
    client = app.test_client()
    job_id = client.post("/api/jobs", json={"task": "crunch_numbers", "params": {"limit": 100}}).get_json()["id"]
    keys_before = sorted(redis.keys("*"))
    samples = {
        "job_id": job_id,
        "batch_id": "b" * 32,
        "name": "default",  # a queue's (or, for the worker routes, a worker's) name
        "filename": "js/dashboard.js",
        "instance_number": 0,
        "queue_name": "default",
        "registry_name": "finished",
        "per_page": 8,
        "order": "asc",
        "page": 1,
    }
    routes = [rule for rule in app.url_map.iter_rules() if rule.endpoint.split(".")[0] in OPERATOR_BLUEPRINTS]
    let_through = []
    requests = 0
    for rule in routes:
        url = rule.build({arg: samples[arg] for arg in rule.arguments})[1]
        for method in sorted(rule.methods - {"OPTIONS"}):
            response = client.open(url, method=method)
            if response.status_code == 308:  # Werkzeug's canonical-URL redirect: judge where it leads
                response = client.open(response.headers["Location"], method=method)
            requests += 1
            refused = response.status_code in (401, 403, 405) or (
                response.status_code in (302, 303) and "/login" in response.headers.get("Location", "")
            )
            if not refused:
                let_through.append(f"{method} {url} -> {response.status_code}")
    figures.record("operator routes, anonymous", routes=len(routes), requests=requests, let_through=len(let_through))
    assert len(routes) >= 20
    assert let_through == []
    assert sorted(redis.keys("*")) == keys_before  # nothing changed


# --------------------------------------------------------------------------- issue 14: newsletter subjects


@pytest.mark.parametrize("breaker", ["\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\r", "\x00", "\x1b"])
def test_a_newsletter_subject_with_a_line_separator_or_control_char_is_a_400_naming_it(client, redis, breaker):
    # Logged in, so the refusal is the subject's, whoever else may send newsletters.
    assert log_in(client).status_code == 303
    body = {"subject": f"Hello{breaker}Bcc: everyone", "body": "Text", "recipients": ["a@example.org"]}

    response = client.post("/api/newsletters", json=body)
    page = client.post("/newsletter", data={**body, "recipients": "a@example.org"})

    assert response.status_code == 400, response.get_json()
    assert set(response.get_json()["fields"]) == {"subject"}
    assert f"U+{ord(breaker):04X}" in response.get_json()["fields"]["subject"]
    assert page.status_code == 400 and 'id="newsletter-subject-error"' in page.get_data(as_text=True)
    assert queued_job_count(redis) == 0


def test_a_newsletter_subject_in_any_script_is_still_accepted(client, redis):
    assert log_in(client).status_code == 303
    body = {"subject": "Nouvelles — 新闻 ニュース 🎉", "body": "Text", "recipients": ["a@example.org"]}

    assert client.post("/api/newsletters", json=body).status_code == 202
