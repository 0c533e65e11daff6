"""The Flask extension as another app uses it: Offload(app) / init_app, tasks, submit and fetch,
and each blueprint registered on its own."""

from __future__ import annotations

import re
from typing import Annotated

import pytest
from flask import Flask
from pydantic import BaseModel, Field

from offload import InvalidParams, Offload, UnknownTask
from offload.state import get_state
from offload.web import api_blueprint, console_blueprint, pages_blueprint
from tests.conftest import OPERATOR_ACCOUNT, queued_job_count


class Address(BaseModel):
    street: str
    zip: str


def ship(addr: Address, qty: Annotated[int, Field(ge=1)] = 1) -> int:
    """A task whose parameters a form cannot give (a nested model)."""
    return qty


def make_app(redis_url: str, **config: object) -> Flask:
    app = Flask("host")
    app.config.update(SECRET_KEY="host-secret", OFFLOAD_REDIS_URL=redis_url, **config)
    return app


@pytest.fixture
def offload() -> Offload:
    extension = Offload()

    @extension.task(title="Add", queue="default", timeout=10)
    def add(a: Annotated[int, Field(ge=0, le=100)], b: int = 1) -> int:
        return a + b

    return extension


def test_init_app_fills_in_defaults_keeps_the_apps_own_and_refuses_a_second_call(redis_url, offload):
    app = make_app(redis_url, OFFLOAD_RESULT_TTL=60)
    offload.init_app(app)

    assert app.config["OFFLOAD_RESULT_TTL"] == 60
    assert app.config["OFFLOAD_QUEUES"] == ["high", "default", "low"]
    assert get_state(app).tasks is offload.tasks
    assert not hasattr(offload, "app")
    with pytest.raises(RuntimeError, match="already set up"):
        offload.init_app(app)


def test_one_offload_serves_two_apps_each_with_its_own_redis(redis_url, offload):
    first, second = make_app(redis_url), make_app(redis_url.rsplit("/", 1)[0] + "/1")
    offload.init_app(first)
    offload.init_app(second)

    assert get_state(first).redis is not get_state(second).redis
    with first.app_context():
        job = offload.submit("add", {"a": 2})
        assert offload.fetch(job.id).kwargs == {"a": 2, "b": 1}
    with second.app_context():
        assert offload.fetch(job.id) is None


def test_submit_names_each_bad_field_and_enqueues_nothing(redis_url, redis, offload):
    app = make_app(redis_url)
    offload.init_app(app)

    with app.app_context():
        with pytest.raises(InvalidParams) as caught:
            offload.submit("add", {"a": 101, "c": 3})
        with pytest.raises(UnknownTask, match="'nope'"):
            offload.submit("nope", {})
        assert offload.fetch("no-such-job") is None
        assert offload.fetch("../../etc/passwd") is None

    assert set(caught.value.fields) == {"a", "c"}
    assert "a:" in str(caught.value) and "'add'" in str(caught.value)
    assert queued_job_count(redis) == 0


def test_a_task_on_a_queue_the_app_does_not_have_is_refused_at_init(redis_url):
    offload = Offload()

    @offload.task(queue="nightly")
    def late() -> None:
        return None

    with pytest.raises(RuntimeError, match="'late' uses queue 'nightly'"):
        offload.init_app(make_app(redis_url))


def test_the_api_blueprint_alone_takes_and_shows_jobs(redis_url, offload):
    app = make_app(redis_url, TESTING=True)
    offload.init_app(app)
    app.register_blueprint(api_blueprint)
    client = app.test_client()

    created = client.post("/api/jobs", json={"task": "add", "params": {"a": 1}})
    bad = client.post("/api/jobs", json={"task": "add", "params": {"a": -1}})

    assert created.status_code == 202, created.get_data(as_text=True)
    assert created.get_json()["url"] is None  # no pages registered: no link to one
    assert client.get(created.headers["Location"]).get_json()["status"] == "queued"
    assert bad.status_code == 400 and "params.a" in bad.get_json()["fields"]


def test_the_console_alone_logs_an_operator_in(redis_url, offload):
    app = make_app(redis_url, TESTING=True, WTF_CSRF_ENABLED=False, **OPERATOR_ACCOUNT)
    offload.init_app(app)
    app.register_blueprint(console_blueprint, url_prefix="/ops")
    client = app.test_client()

    assert client.get("/ops/queues").location == "/ops/login?next=/ops/queues"
    assert client.get("/login").status_code == 404  # the host's to have: the login follows the prefix
    from tests.conftest import OPERATOR_PASSWORD, OPERATOR_USERNAME

    client.post("/ops/login", data={"username": OPERATOR_USERNAME, "password": OPERATOR_PASSWORD})
    page = client.get("/ops/queues")
    assert page.status_code == 200 and "default" in page.get_data(as_text=True)
    assert client.get("/rq/").status_code == 200


def test_the_pages_alone_render_with_their_own_templates_and_static_files(redis_url, offload):
    app = make_app(redis_url, TESTING=True)
    offload.init_app(app)
    app.register_blueprint(pages_blueprint, url_prefix="/jobs-ui")

    client = app.test_client()
    index = client.get("/jobs-ui/")
    assert index.status_code == 200 and "Add" in index.get_data(as_text=True)
    assert client.get("/offload-static/app.css").status_code == 200
    assert "Operator login" not in index.get_data(as_text=True)  # no console registered


def test_the_blueprints_leave_the_host_apps_own_template_filters_alone(redis_url, offload):
    app = make_app(redis_url, TESTING=True)
    for name in ("pretty_json", "short_id", "utc_iso"):
        app.add_template_filter(lambda value, name=name: f"host {name}", name)
    offload.init_app(app)
    for blueprint in (pages_blueprint, api_blueprint, console_blueprint):
        app.register_blueprint(blueprint)

    with app.app_context():
        rendered = app.jinja_env.from_string("{{ 1|pretty_json }}, {{ 1|short_id }}, {{ 1|utc_iso }}").render()
    assert rendered == "host pretty_json, host short_id, host utc_iso"


def test_the_apis_errors_are_json_in_a_host_app_that_keeps_its_own_handlers(redis_url, offload):
    from redis import Redis
    from werkzeug.exceptions import HTTPException

    import dev

    app = make_app(redis_url, TESTING=True)
    app.register_error_handler(HTTPException, lambda exc: (f"host page: {exc.code}", exc.code))
    offload.init_app(app)
    app.register_blueprint(api_blueprint)
    client = app.test_client()

    missing = client.get("/api/jobs/no-such-job")
    assert missing.status_code == 404 and missing.is_json and "error" in missing.get_json()
    assert client.get("/nowhere").get_data(as_text=True) == "host page: 404"  # the host's own

    get_state(app).redis = Redis(port=dev.free_port(), socket_connect_timeout=1)  # Redis gone
    away = client.get("/api/jobs/some-job")
    assert away.status_code == 503 and away.is_json and away.headers["Retry-After"] == "5"


def test_a_blueprint_registered_before_offload_says_so(redis_url):
    app = make_app(redis_url)
    with pytest.raises(RuntimeError, match="after Offload"):
        app.register_blueprint(api_blueprint)


def test_the_console_without_the_pages_lists_jobs_without_links_to_missing_pages(redis_url, offload):
    app = make_app(redis_url, TESTING=True, WTF_CSRF_ENABLED=False, **OPERATOR_ACCOUNT)
    offload.init_app(app)
    app.register_blueprint(console_blueprint)
    client = app.test_client()
    from tests.conftest import OPERATOR_PASSWORD, OPERATOR_USERNAME

    client.post("/login", data={"username": OPERATOR_USERNAME, "password": OPERATOR_PASSWORD})
    with app.app_context():
        job = offload.submit("add", {"a": 1})

    page = client.get("/operator/jobs").get_data(as_text=True)
    assert job.id[:8] in page and 'href="None"' not in page


def test_offloads_forms_check_csrf_where_the_host_checks_only_the_views_it_chooses(redis_url, redis, offload):
    """Flask-WTF's WTF_CSRF_CHECK_DEFAULT = False (the host calls csrf.protect() view by view) left
    every Offload form unchecked: a login and a queue paused without a token."""
    from flask_wtf.csrf import CSRFProtect

    from tests.conftest import OPERATOR_PASSWORD, OPERATOR_USERNAME, form_token

    app = make_app(redis_url, WTF_CSRF_CHECK_DEFAULT=False, **OPERATOR_ACCOUNT)
    CSRFProtect(app)
    offload.init_app(app)
    app.register_blueprint(pages_blueprint)
    app.register_blueprint(api_blueprint)
    app.register_blueprint(console_blueprint)

    @app.post("/hook")
    def hook() -> str:  # the host's own view: its choice, unchecked
        return "ok"

    client = app.test_client()
    login = {"username": OPERATOR_USERNAME, "password": OPERATOR_PASSWORD}
    assert client.post("/login", data=login).status_code == 400
    assert client.post("/login", data={**login, "csrf_token": form_token(client, "/login")}).status_code == 303
    assert client.post("/operator/queues/default/pause").status_code == 400
    assert not redis.smembers("offload:paused-queues")
    assert client.post("/tasks/add", data={"a": "1"}).status_code == 400
    assert queued_job_count(redis) == 0
    assert client.post("/hook").get_data(as_text=True) == "ok"
    assert client.post("/api/jobs", json={"task": "add", "params": {"a": 1}}).status_code == 202  # JSON: exempt


def test_the_hosts_default_limits_and_exemptions_are_its_own_limiters_alone(redis_url, offload):
    """A host's Flask-Limiter with RATELIMIT_DEFAULT: Offload's limiter read the same setting and
    counted it again on every route, the host's exempt ones included."""
    from flask_limiter import Limiter
    from flask_limiter.util import get_remote_address

    app = make_app(redis_url, RATELIMIT_DEFAULT="3 per minute", RATELIMIT_STORAGE_URI="memory://")
    host_limiter = Limiter(get_remote_address, app=app)
    offload.init_app(app)

    @app.get("/free")
    @host_limiter.exempt
    def free() -> str:
        return "ok"

    @app.get("/limited")
    def limited() -> str:
        return "ok"

    app.register_blueprint(pages_blueprint)
    client = app.test_client()

    assert [client.get("/free").status_code for _ in range(6)] == [200] * 6
    assert [client.get("/limited").status_code for _ in range(4)] == [200, 200, 200, 429]


def test_under_a_mount_prefix_the_login_returns_to_the_page_and_the_dashboards_cookie_reaches_it(redis_url, offload):
    """Mounted at /shop (SCRIPT_NAME): the login's way back lost the prefix (a 404 outside the app),
    and rq-dashboard's CSRF cookie had path /rq, never sent to /shop/rq/."""
    from tests.conftest import OPERATOR_PASSWORD, OPERATOR_USERNAME

    app = make_app(redis_url, **OPERATOR_ACCOUNT)
    offload.init_app(app)
    app.register_blueprint(pages_blueprint)
    app.register_blueprint(console_blueprint)
    client = app.test_client()
    shop = {"base_url": "http://localhost/shop"}  # SCRIPT_NAME /shop

    asked = client.get("/operator/queues", **shop)
    assert asked.location == "/shop/login?next=/operator/queues"
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login", **shop).text).group(1)
    form = {"username": OPERATOR_USERNAME, "password": OPERATOR_PASSWORD, "csrf_token": token}
    back = client.post("/login?next=/operator/queues", data=form, **shop)
    assert back.status_code == 303 and back.location == "/shop/operator/queues"

    dashboard = client.get("/rq/", **shop)
    assert dashboard.status_code == 200
    assert "Path=/shop/rq" in dashboard.headers["Set-Cookie"]


def test_a_task_defined_in_a_script_run_as_main_is_refused_with_the_way_out():
    """``python app.py``: its tasks were registered as __main__.<name>, which no worker can import;
    their jobs waited ten minutes for a worker that knew them, then failed."""
    extension = Offload()

    def greet(name: str) -> str:
        return name

    greet.__module__ = "__main__"
    with pytest.raises(TypeError, match=r"run as __main__ .*flask --app app run, gunicorn app:app"):
        extension.task(title="Greet")(greet)


def test_a_task_with_a_nested_model_points_to_the_api_instead_of_a_form_it_cannot_fill(redis_url, redis):
    """Its form had one text input and an empty label, and every value was refused."""
    extension = Offload()
    extension.task(title="Ship", queue="default")(ship)
    app = make_app(redis_url, WTF_CSRF_ENABLED=False)  # the page has no form to take a token from
    extension.init_app(app)
    app.register_blueprint(pages_blueprint)
    app.register_blueprint(api_blueprint)
    client = app.test_client()

    page = client.get("/").get_data(as_text=True)
    assert "takes structured parameters" in page and 'action="/tasks/ship"' not in page
    refused = client.post("/tasks/ship", data={"addr": "Main 1"})
    assert refused.status_code == 404 and "POST /api/jobs" in refused.get_data(as_text=True)
    params = {"addr": {"street": "Main 1", "zip": "12345"}, "qty": 2}
    assert client.post("/api/jobs", json={"task": "ship", "params": params}).status_code == 202
    assert queued_job_count(redis) == 1


def test_the_openapi_document_names_the_paths_where_the_api_is_mounted(redis_url, offload):
    app = make_app(redis_url)
    offload.init_app(app)
    app.register_blueprint(api_blueprint, url_prefix="/work/api")
    client = app.test_client()

    mounted = client.get("/work/api/openapi.json", base_url="http://localhost/shop").get_json()
    assert mounted["servers"] == [{"url": "/shop"}]
    assert "/work/api/jobs" in mounted["paths"] and "/api/jobs" not in mounted["paths"]
    assert "servers" not in client.get("/work/api/openapi.json").get_json()
