"""Fuzzing every form and the JSON API with Hypothesis, in process against a real Redis.

The properties, for any input: the answer is 2xx or 4xx, never 5xx; a 4xx enqueues
nothing and says what is wrong, naming the field; a 2xx enqueues exactly one job. Params
are drawn from each task's own JSON schema (valid ones), from its field names with any
JSON value (wrong types, huge numbers, odd Unicode), and from anything at all.
"""

from __future__ import annotations

import json
import math
from io import BytesIO
from typing import Any
from urllib.parse import quote

import pytest
from flask import Flask
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from rq.job import Job
from rq.serializers import JSONSerializer

from tasks import offload
from tests.conftest import OPERATOR_ACCOUNT, log_in, queued_job_count

TASKS = offload.tasks


FUZZ = settings(
    max_examples=250,
    deadline=None,  # a shared 2-core machine: timing is not the property here
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    print_blob=True,
)

TASK_NAMES = sorted(name for name, task in TASKS.items() if task.access == "public")
"""What an anonymous visitor may submit; the rest answers 401 (tests/test_access.py)."""
ODD_TEXT = st.text(
    st.characters(codec=None, categories=["L", "M", "N", "P", "S", "Z", "C"]), max_size=30
)  # includes lone surrogates, NUL, RTL marks, combining characters
FORM_TEXT = st.text(st.characters(codec="utf-8"), max_size=30)  # what a browser can send: no lone surrogates
HUGE_NUMBERS = st.sampled_from([10**40, -(10**40), 2**63, 2**64, 10**300, 1e308, -1e308, math.inf, -math.inf, math.nan])
JSON_LEAVES = st.none() | st.booleans() | st.integers() | HUGE_NUMBERS | st.floats() | ODD_TEXT
WHEN_AT = st.datetimes().map(lambda moment: moment.isoformat()) | st.sampled_from(["now", "2026-13-01T00:00", ""])
WHEN_IN = st.integers(-(10**6), 10**8) | HUGE_NUMBERS
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(ODD_TEXT, children, max_size=4),
    max_leaves=12,
)


@pytest.fixture
def fuzz_app(redis_url: str) -> Flask:
    from app import create_app

    # Rate limits would turn most cases into 429s; they have their own test.
    return create_app(
        {
            "TESTING": True,
            "OFFLOAD_REDIS_URL": redis_url,
            "WTF_CSRF_ENABLED": False,
            "RATELIMIT_ENABLED": False,
            "MAX_CONTENT_LENGTH": 64 * 1024,
            **OPERATOR_ACCOUNT,
        }
    )


def operator_client(app: Flask):
    """A test client logged in as the operator: the newsletter is for signed-in users (test_access.py)."""
    client = app.test_client()
    assert log_in(client).status_code == 303
    return client


def schema_values(prop: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Valid values for one property of a task's JSON schema (any JSON value when unknown)."""
    if "enum" in prop:
        return st.sampled_from(prop["enum"])
    kind = prop.get("type")
    if kind == "integer":
        return st.integers(prop.get("minimum"), prop.get("maximum"))
    if kind == "number":
        return st.floats(prop.get("minimum"), prop.get("maximum"), allow_nan=False, allow_infinity=False)
    if kind == "boolean":
        return st.booleans()
    if kind == "string" and prop.get("format") == "email":
        return st.emails()
    if kind == "string":
        return st.text(min_size=prop.get("minLength", 0), max_size=min(prop.get("maxLength", 50), 50))
    return JSON_VALUES


def valid_params(name: str) -> st.SearchStrategy[dict[str, Any]]:
    """Params a task's schema accepts: every required field, some optional ones."""
    schema = TASKS[name].params.model_json_schema()
    required = set(schema.get("required", []))
    props = schema.get("properties", {})
    return st.fixed_dictionaries(
        {key: schema_values(prop) for key, prop in props.items() if key in required},
        optional={key: schema_values(prop) for key, prop in props.items() if key not in required},
    )


def task_name() -> st.SearchStrategy[str]:
    return st.sampled_from(TASK_NAMES) | ODD_TEXT


@st.composite
def params_for(draw, name: str) -> Any:
    task = TASKS.get(name)
    if task is None:
        return draw(JSON_VALUES)
    fields = list(task.params.model_json_schema().get("properties", {}))
    return draw(
        st.one_of(
            valid_params(name),
            st.dictionaries(st.sampled_from(fields) if fields else ODD_TEXT, JSON_VALUES, max_size=4),
            st.dictionaries(ODD_TEXT, JSON_VALUES, max_size=3),
            JSON_VALUES,
        )
    )


@st.composite
def api_bodies(draw) -> Any:
    """A JSON body for POST /api/jobs: mostly job-shaped, sometimes anything."""
    if draw(st.integers(0, 9)) == 0:
        return draw(JSON_VALUES)
    body: dict[str, Any] = {}
    if draw(st.booleans()) or draw(st.booleans()):
        body["task"] = draw(task_name() | JSON_VALUES)
    if draw(st.booleans()) or draw(st.booleans()):
        body["params"] = draw(params_for(body.get("task") if isinstance(body.get("task"), str) else ""))
    if draw(st.integers(0, 3)) == 0:
        body["run_at"] = draw(WHEN_AT | JSON_VALUES)
    if draw(st.integers(0, 3)) == 0:
        body["run_in"] = draw(WHEN_IN | JSON_VALUES)
    if draw(st.integers(0, 5)) == 0:
        body[draw(ODD_TEXT)] = draw(JSON_VALUES)
    return body


def _check_error(response, enqueued_before: int, redis, what: str) -> dict:
    assert response.status_code < 500, (what, response.status_code, response.get_data(as_text=True)[:500])
    assert queued_job_count(redis) == enqueued_before, f"a {response.status_code} enqueued a job: {what}"
    return response.get_json(silent=True) or {}


@FUZZ
@given(body=api_bodies())
@example(body={"task": "crunch_numbers", "params": {"limit": 10**400}})
@example(body={"task": "crunch_numbers", "params": {"limit": math.nan}})
@example(body={"task": "crunch_numbers", "params": {"limit": "١٢٣٤٥"}})
@example(body={"task": "crunch_numbers", "params": {"limit": "\ud800"}})
@example(body={"task": "\ud800\u202e", "params": {}})
@example(body={"task": "crunch_numbers", "params": {"\x00": 1}})
@example(body={"task": "crunch_numbers", "params": {"": None}})
@example(body={"params": [{"\ud800": None}], "run_in": 0, "": None})
# The outside tester's 500s: a time with no UTC equivalent, a bare CR in a CSV cell, a payload
# nested past the parser's recursion, and 3,000 unknown params (every one named in the answer before).
@example(body={"task": "run_model", "params": {"text": "hi"}, "run_at": "0001-01-01T00:00:00+23:59"})
@example(body={"task": "run_model", "params": {"text": "hi"}, "run_at": "9999-12-31T23:59:59-23:59"})
@example(body={"task": "generate_report", "params": {"title": "t", "table": "a\rb"}})
@example(body={"task": "call_api", "params": {"path": "/get", "payload": "[" * 5000}})
@example(body={"task": "run_model", "params": {"text": "hi", **{f"k{i}": [1] for i in range(3_000)}}})
def test_api_answers_any_json_with_2xx_or_a_4xx_naming_the_field(fuzz_app, redis, figures, body):
    figures.add("fuzz POST /api/jobs (JSON)", "cases")
    before = queued_job_count(redis)
    # Encoded here, like any client: the test client's json= would send no body at all for None.
    client = fuzz_app.test_client()
    response = client.post("/api/jobs", data=json.dumps(body), content_type="application/json")

    if response.status_code == 202:
        assert queued_job_count(redis) == before + 1
        job = response.get_json()
        assert TASKS[job["task"]].params.model_validate(job["params"])
        # What was accepted can be shown: the job's page and JSON print its params.
        assert client.get(job["url"]).status_code == 200
        assert client.get(job["api_url"]).status_code == 200
        return
    figures.add("fuzz POST /api/jobs (JSON)", "5xx", int(response.status_code >= 500))
    answer = _check_error(response, before, redis, json.dumps(body, default=str)[:300])
    assert response.status_code in (400, 404), response.status_code
    assert isinstance(answer.get("error"), str) and answer["error"]
    fields = answer["fields"]
    assert fields and all(isinstance(message, str) and message for message in fields.values())
    named = set(body) if isinstance(body, dict) else set()
    params = body.get("params") if isinstance(body, dict) else None
    task = TASKS.get(body.get("task")) if isinstance(body, dict) and isinstance(body.get("task"), str) else None
    param_names = set(params) if isinstance(params, dict) else set()
    if task:
        param_names |= set(task.params.model_json_schema().get("properties", {}))
    for field in fields:
        if field.startswith("params."):
            shown = {f"params.{name}" if name else 'params.""' for name in param_names}
            if not isinstance(params, dict):  # a list's items are named by index: params.0...
                shown.add("params")
            assert any(field == name or field.startswith(name + ".") for name in shown), (field, body)
        else:
            named_by = {"body", "task", "params", "run_at", "run_in"} | named
            assert any(field == name or field.startswith(name + ".") for name in named_by), (field, body)


@FUZZ
@given(
    data=st.binary(max_size=300) | ODD_TEXT.map(lambda text: text.encode("utf-8", "surrogatepass")),
    content_type=st.sampled_from(["application/json", "application/json; charset=latin-1", "text/plain", ""]),
)
@example(
    data=b'{"task": "crunch_numbers", "params": {"limit": 1' + b"0" * 5000 + b"}}", content_type="application/json"
)
@example(data=b'{"task": "crunch_numbers", "params": {"limit": NaN}}', content_type="application/json")
@example(data=b"\xff\xfe{}", content_type="application/json")
@example(
    data=b'{"task": "run_model", "params": {"text": "hi", "x": ' + b"[" * 30_000 + b"]" * 30_000 + b"}}",
    content_type="application/json",
)
def test_api_answers_malformed_bodies_with_a_4xx_and_enqueues_nothing(fuzz_app, redis, figures, data, content_type):
    figures.add("fuzz POST /api/jobs (raw bytes)", "cases")
    before = queued_job_count(redis)
    response = fuzz_app.test_client().post("/api/jobs", data=data, content_type=content_type)

    if response.status_code == 202:
        assert queued_job_count(redis) == before + 1
        return
    figures.add("fuzz POST /api/jobs (raw bytes)", "5xx", int(response.status_code >= 500))
    answer = _check_error(response, before, redis, repr(data[:200]))
    assert response.status_code in (400, 404, 415)
    assert answer.get("error")


@st.composite
def form_posts(draw) -> tuple[str, dict[str, Any]]:
    name = draw(task_name())
    task = TASKS.get(name)
    fields = [field["name"] for field in task.form_fields()] if task else []
    value = st.one_of(
        FORM_TEXT,
        st.integers().map(str),
        HUGE_NUMBERS.map(str),
        st.sampled_from(["", " ", "1e5", " 12 ", "0x10", "١٢٣٤٥", "on", "true", "-0", "10_000"]),
    )
    data: dict[str, Any] = draw(st.dictionaries(st.sampled_from(fields) if fields else FORM_TEXT, value, max_size=4))
    if draw(st.integers(0, 3)) == 0:
        data[draw(FORM_TEXT.filter(bool))] = draw(value)
    for key, when in (("run_at", WHEN_AT), ("run_in", WHEN_IN.map(str))):
        if draw(st.integers(0, 4)) == 0:
            data[key] = draw(when | value)
    if draw(st.integers(0, 4)) == 0:
        field = draw(st.sampled_from(fields) if fields else FORM_TEXT.filter(bool))
        data[field] = (BytesIO(draw(st.binary(max_size=2000))), draw(FORM_TEXT) or "upload.bin")
    return name, data


@FUZZ
@given(post=form_posts())
@example(post=("crunch_numbers", {"limit": "9" * 5000}))
@example(post=("crunch_numbers", {"limit": "\u0000"}))
@example(post=("../../etc/passwd", {}))
def test_forms_answer_any_input_with_a_redirect_or_a_4xx(fuzz_app, redis, figures, post):
    name, data = post
    figures.add("fuzz POST /tasks/<name> (forms)", "cases")
    before = queued_job_count(redis)
    # Surrogates cannot travel in a URL; the browser would have percent-encoded UTF-8.
    url = "/tasks/" + quote(name.encode("utf-8", "surrogatepass"), safe="")
    response = fuzz_app.test_client().post(url, data=data, content_type="multipart/form-data")

    if response.status_code == 303:
        assert queued_job_count(redis) == before + 1
        assert response.headers["Location"].startswith("/jobs/")
        return
    figures.add("fuzz POST /tasks/<name> (forms)", "5xx", int(response.status_code >= 500))
    _check_error(response, before, redis, f"{name!r} {data!r}"[:300])
    page = response.get_data(as_text=True)
    # 308: werkzeug's redirect for a name that decodes to a double slash.
    assert response.status_code in (308, 400, 404), response.status_code
    if response.status_code == 400 and name in TASKS:
        # The message sits next to the field it names, or says the name itself is unreadable.
        assert "field-error" in page or "A form field has a name that cannot be read." in page


@FUZZ
@given(
    data=st.binary(max_size=300),
    content_type=st.sampled_from(
        ["application/x-www-form-urlencoded", "multipart/form-data; boundary=xyz", "multipart/form-data", "text/plain"]
    ),
)
@example(data=b"limit=%ff%fe%00", content_type="application/x-www-form-urlencoded")
@example(
    data=b'--xyz\r\nContent-Disposition: form-data; name="limit"\r\n\r\n\xff\r\n--xyz--',
    content_type="multipart/form-data; boundary=xyz",
)
def test_forms_answer_raw_bytes_with_a_redirect_or_a_4xx(fuzz_app, redis, figures, data, content_type):
    figures.add("fuzz POST /tasks/<name> (raw bytes)", "cases")
    before = queued_job_count(redis)

    response = fuzz_app.test_client().post("/tasks/crunch_numbers", data=data, content_type=content_type)

    if response.status_code == 303:
        assert queued_job_count(redis) == before + 1
        return
    figures.add("fuzz POST /tasks/<name> (raw bytes)", "5xx", int(response.status_code >= 500))
    _check_error(response, before, redis, repr(data[:200]))
    assert response.status_code == 400


@FUZZ
@given(text=ODD_TEXT)
@example(text="../../../etc/passwd")
@example(text="%00")
def test_pages_and_api_reads_answer_any_id_or_filter_without_a_5xx(fuzz_app, figures, text):
    client = fuzz_app.test_client()
    piece = quote(text.encode("utf-8", "surrogatepass"), safe="")
    for url in (f"/jobs/{piece}", f"/api/jobs/{piece}", f"/jobs?state={piece}"):
        figures.add("fuzz GET pages and API", "cases")
        response = client.get(url)
        figures.add("fuzz GET pages and API", "5xx", int(response.status_code >= 500))
        assert response.status_code in (200, 308, 400, 404), (url, response.status_code)


@settings(FUZZ, max_examples=50)
@given(post=form_posts(), token=st.none() | FORM_TEXT)
def test_forms_without_a_valid_csrf_token_are_refused_and_enqueue_nothing(redis_url, redis, figures, post, token):
    from app import create_app

    app = create_app({"TESTING": True, "OFFLOAD_REDIS_URL": redis_url, "RATELIMIT_ENABLED": False})
    name, data = post
    if token is not None:
        data = {**data, "csrf_token": token}
    figures.add("fuzz POST /tasks/<name> without CSRF token", "cases")
    before = queued_job_count(redis)

    response = app.test_client().post(
        "/tasks/" + quote(name.encode("utf-8", "surrogatepass"), safe=""), data=data, content_type="multipart/form-data"
    )

    figures.add("fuzz POST /tasks/<name> without CSRF token", "5xx", int(response.status_code >= 500))
    _check_error(response, before, redis, repr(post)[:300])
    assert response.status_code in (308, 400, 404)


NEWSLETTER_VALUES = {
    "subject": FORM_TEXT | JSON_VALUES,
    "body": FORM_TEXT | JSON_VALUES,
    "recipients": st.lists(st.emails() | FORM_TEXT, max_size=4) | JSON_VALUES,
    "skip_invalid": st.booleans() | JSON_VALUES,
    "run_at": WHEN_AT | JSON_VALUES,
    "run_in": WHEN_IN | JSON_VALUES,
}


@st.composite
def newsletter_bodies(draw) -> Any:
    if draw(st.integers(0, 9)) == 0:
        return draw(JSON_VALUES)
    body = {key: draw(values) for key, values in NEWSLETTER_VALUES.items() if draw(st.booleans())}
    if draw(st.integers(0, 5)) == 0:
        body[draw(ODD_TEXT)] = draw(JSON_VALUES)
    return body


@FUZZ
@given(body=newsletter_bodies())
@example(body={"subject": "Hi", "body": "Text", "recipients": ["a@example.com", "A@EXAMPLE.COM", "nope"]})
@example(body={"subject": "Hi", "body": "Text", "recipients": ["a@example.com"], "run_in": 10**400})
def test_newsletter_api_answers_any_json_with_2xx_or_a_4xx_naming_the_field(fuzz_app, redis, figures, body):
    before = queued_job_count(redis)
    response = operator_client(fuzz_app).post(
        "/api/newsletters", data=json.dumps(body), content_type="application/json"
    )
    figures.add("fuzz POST /api/newsletters (JSON)", "cases")
    figures.add("fuzz POST /api/newsletters (JSON)", "5xx", int(response.status_code >= 500))

    if response.status_code == 202:
        assert 1 <= queued_job_count(redis) - before <= len(body["recipients"])
        return
    answer = _check_error(response, before, redis, json.dumps(body, default=str)[:300])
    assert response.status_code == 400, response.status_code
    assert answer["error"] and answer["fields"]
    named = set(body) if isinstance(body, dict) else set()
    assert set(answer["fields"]) <= set(NEWSLETTER_VALUES) | {"body"} | named, (answer["fields"], body)


@FUZZ
@given(
    data=st.fixed_dictionaries(
        {},
        optional={
            "subject": FORM_TEXT,
            "body": FORM_TEXT,
            "recipients": st.lists(st.emails() | FORM_TEXT, max_size=4).map(", ".join),
            "skip_invalid": st.just("on"),
            "run_at": WHEN_AT,
            "run_in": WHEN_IN.map(str),
            "recipients_csv": st.binary(max_size=500).map(lambda raw: (BytesIO(raw), "list.csv")),
        },
    )
)
@example(data={"subject": "Hi", "body": "x", "recipients_csv": (BytesIO(b"email\n\xff\xfe,\n"), "list.csv")})
def test_newsletter_form_answers_any_input_with_a_redirect_or_a_4xx(fuzz_app, redis, figures, data):
    before = queued_job_count(redis)
    response = operator_client(fuzz_app).post("/newsletter", data=data, content_type="multipart/form-data")
    figures.add("fuzz POST /newsletter (form)", "cases")
    figures.add("fuzz POST /newsletter (form)", "5xx", int(response.status_code >= 500))

    if response.status_code == 303:
        assert queued_job_count(redis) > before
        return
    _check_error(response, before, redis, repr(data)[:300])
    assert response.status_code == 400, response.status_code
    assert "field-error" in response.get_data(as_text=True)


# --------------------------------------------------------------------------- oversized


def test_oversized_json_body_is_a_clean_413_and_enqueues_nothing(fuzz_app, redis):
    body = json.dumps({"task": "crunch_numbers", "params": {"limit": 100}, "pad": "x" * 70_000})

    response = fuzz_app.test_client().post("/api/jobs", data=body, content_type="application/json")

    assert response.status_code == 413
    assert response.get_json()["error"] == "The request body is larger than the limit of 64 KiB."
    assert queued_job_count(redis) == 0


def test_oversized_upload_is_a_clean_413_page_and_enqueues_nothing(fuzz_app, redis):
    data = {"limit": "100", "attachment": (BytesIO(b"\0" * 70_000), "big.bin")}

    response = fuzz_app.test_client().post("/tasks/crunch_numbers", data=data, content_type="multipart/form-data")

    assert response.status_code == 413
    page = response.get_data(as_text=True)
    assert "larger than the limit of 64 KiB" in page and "<!doctype html>" in page
    assert queued_job_count(redis) == 0


@pytest.mark.e2e
def test_oversized_bodies_get_413_through_gunicorn(http, redis):
    big = 3 * 1024 * 1024  # over the shipped MAX_CONTENT_LENGTH (2 MiB)

    api = http.post("/api/jobs", content=b"{" + b" " * big + b"}", headers={"Content-Type": "application/json"})
    upload = http.post("/tasks/crunch_numbers", files={"attachment": ("big.bin", b"\0" * big)})

    assert api.status_code == 413 and "limit of 2048 KiB" in api.json()["error"]
    assert upload.status_code == 413 and "limit of 2048 KiB" in upload.text
    # The worker's scheduler may have queued the periodic jobs meanwhile; none is ours.
    ids = [key.decode().removeprefix("rq:job:") for key in redis.scan_iter("rq:job:*")]
    jobs = Job.fetch_many(ids, connection=redis, serializer=JSONSerializer)
    assert [job.func_name for job in jobs if job and job.func_name == "tasks.crunch_numbers"] == []
