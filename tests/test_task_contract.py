"""What a task is promised, as another app uses Offload: in a job, its function gets the types its
signature declares and must give back JSON; its registration, its schedule and its progress
refuse what would go wrong later; the stock ``rq worker`` refuses a Redis that is not the app's.

The jobs run in the real worker CLIs (``flask offload worker``, ``rq worker``) in subprocesses,
on an app written to a temporary folder, as a user's own app would be.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from flask import Flask
from redis import Redis
from rq import Queue, Retry
from rq.job import JobStatus
from rq.serializers import JSONSerializer

from offload import InvalidParams, Offload
from offload.progress import report_progress
from tests.conftest import ROOT, process_env, queued_job_count, refreshed

TYPED_APP = """
import enum
import os
from datetime import datetime
from typing import Literal

from flask import Flask
from pydantic import BaseModel
from rq import Retry

from offload import Offload

app = Flask(__name__)
app.config["OFFLOAD_REDIS_URL"] = os.environ["TYPED_REDIS_URL"]
app.config["OFFLOAD_QUEUES"] = ["urgent", "default"]
offload = Offload(app)


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Point(BaseModel):
    x: int
    y: int


@offload.task(queue="urgent")
def typed(when: datetime, color: Color, mode: Literal["fast", "slow"], tags: list[str], at: Point,
          note: str | None = None) -> dict:
    return {
        "when": type(when).__name__, "year": when.year, "aware": when.tzinfo is not None,
        "color": type(color).__name__, "is_red": color is Color.RED, "mode": mode,
        "tags": tags, "at": type(at).__name__, "sum": at.x + at.y, "note": note,
    }


@offload.task(retry=Retry(max=3))
def unserializable() -> set:
    return {1, 2}
"""


def run_worker(folder: Path, redis_url: str, *command: str, **env: str) -> subprocess.CompletedProcess[str]:
    env = {**process_env(redis_url), "TYPED_REDIS_URL": redis_url, "PYTHONPATH": f"{folder}{os.pathsep}{ROOT}", **env}
    return subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def typed_app(tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Flask]:
    (tmp_path / "typedapp.py").write_text(textwrap.dedent(TYPED_APP))
    monkeypatch.setenv("TYPED_REDIS_URL", redis_url)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("typedapp", None)
    import typedapp  # type: ignore[import-not-found]

    yield typedapp.app
    sys.modules.pop("typedapp", None)


def test_in_a_job_a_task_gets_the_types_its_signature_declares_and_must_return_json(typed_app, tmp_path, redis_url):
    from typedapp import offload  # type: ignore[import-not-found]

    with typed_app.app_context():
        params = {
            "when": "2026-01-01T10:00:00Z",
            "color": "red",
            "mode": "fast",
            "tags": ["a", "b"],
            "at": {"x": 2, "y": 3},
        }
        typed = offload.submit("typed", params)
        unserializable = offload.submit("unserializable")
        # Stored as JSON, as RQ keeps every job's arguments.
        assert typed.kwargs["when"] == "2026-01-01T10:00:00Z" and typed.kwargs["color"] == "red"

    done = run_worker(tmp_path, redis_url, "flask", "--app", "typedapp", "offload", "worker", "--burst")
    assert done.returncode == 0, done.stderr

    typed, unserializable = refreshed(typed), refreshed(unserializable)
    assert typed.get_status() == JobStatus.FINISHED, typed.latest_result()
    assert typed.return_value() == {
        "when": "datetime",
        "year": 2026,
        "aware": True,
        "color": "Color",
        "is_red": True,
        "mode": "fast",
        "tags": ["a", "b"],
        "at": "Point",
        "sum": 5,
        "note": None,
    }
    # Not RQ's "Unserializable return value" placeholder stored as a success: a failure, at once.
    assert unserializable.get_status() == JobStatus.FAILED
    assert "returned a value that is not JSON" in unserializable.latest_result().exc_string
    assert len(unserializable.results()) == 1  # ran once: no retry makes it JSON


def test_a_job_whose_arguments_do_not_fit_the_signature_fails_at_once_naming_them(typed_app, tmp_path, redis_url):
    # Another client enqueues the task's path with arguments no form would have let through.
    queue = Queue("urgent", connection=typed_app.extensions["offload"].redis, serializer=JSONSerializer)
    job = queue.enqueue(
        "typedapp.typed",
        kwargs={"when": "not a time", "color": "green", "mode": "fast", "tags": [], "at": {"x": 1, "y": 1}},
        retry=Retry(max=2),
    )

    done = run_worker(tmp_path, redis_url, "flask", "--app", "typedapp", "offload", "worker", "--burst")
    assert done.returncode == 0, done.stderr

    job = refreshed(job)
    assert job.get_status() == JobStatus.FAILED
    error = job.latest_result().exc_string
    assert "ParamsRefused" in error and "when:" in error and "color:" in error
    assert len(job.results()) == 1  # ran once: no retry makes them fit


def test_called_outside_a_job_the_function_runs_on_what_it_is_given(typed_app):
    from typedapp import typed  # type: ignore[import-not-found]

    class Anything:
        x, y = 1, 2

    got = typed(when=datetime(2030, 5, 1, tzinfo=UTC), color="red", mode="slow", tags=[], at=Anything())
    assert got["color"] == "str" and got["is_red"] is False and got["at"] == "Anything"


def test_the_stock_rq_worker_refuses_a_redis_that_is_not_the_apps(typed_app, tmp_path, redis_url):
    other_database = redis_url.rsplit("/", 1)[0] + "/9"
    command = ["rq", "worker", "-w", "offload.worker.OffloadWorker", "--burst"]

    refused = run_worker(tmp_path, redis_url, *command, "--url", other_database, "urgent", OFFLOAD_APP="typedapp")
    assert refused.returncode != 0
    assert "is not the app's" in refused.stderr and "database 9" in refused.stderr

    # The app's own Redis: it starts, and says which of the app's queues it leaves out.
    started = run_worker(tmp_path, redis_url, *command, "--url", redis_url, "urgent", OFFLOAD_APP="typedapp")
    assert started.returncode == 0, started.stderr
    assert "leaves out the app's queue(s) default" in started.stderr


def make_app(redis_url: str) -> Flask:
    app = Flask("host")
    app.config.update(SECRET_KEY="host-secret", OFFLOAD_REDIS_URL=redis_url)
    return app


def test_misspelled_or_mistyped_task_options_are_refused_at_registration():
    offload = Offload()

    def job() -> None:
        return None

    with pytest.raises(TypeError, match=r"unknown option.*timout"):
        offload.task(timout=30)(job)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="timeout must be a whole number of at least 1, not -1"):
        offload.task(timeout=-1)(job)
    with pytest.raises(TypeError, match=r"retry must be rq.Retry"):
        offload.task(retry=3)(job)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="access must be one of"):
        offload.task(access="everyone")(job)
    assert len(offload.tasks) == 0


def test_a_task_registered_after_init_app_on_a_queue_the_app_lacks_is_refused_there(redis_url):
    app = make_app(redis_url)  # held, as an app is: Offload keeps only a weak reference to it
    offload = Offload(app)

    with pytest.raises(RuntimeError, match="'late' uses queue 'mail', which is not in OFFLOAD_QUEUES"):

        @offload.task(queue="mail")
        def late() -> None:
            return None

    assert "late" not in offload.tasks


def test_submit_refuses_a_schedule_the_api_would_refuse_and_enqueues_nothing(redis_url, redis):
    offload = Offload()

    @offload.task
    def ping() -> str:
        return "pong"

    app = make_app(redis_url)
    offload.init_app(app)
    now = datetime.now(UTC)
    with app.app_context():
        for run_at, message in [
            (datetime.now() + timedelta(minutes=5), "aware datetime"),  # naive: whose 10:00?
            ("2030-01-01T10:00:00Z", "aware datetime"),
            (now - timedelta(days=1), "in the past"),
            (now + timedelta(days=400), "at most"),
        ]:
            with pytest.raises(InvalidParams) as caught:
                offload.submit("ping", run_at=run_at)
            assert message in caught.value.fields["run_at"]
        assert queued_job_count(redis) == 0 and redis.zcard("rq:scheduled:default") == 0
        later = offload.submit("ping", run_at=now + timedelta(hours=1))
        assert later.get_status() == JobStatus.SCHEDULED


def test_report_progress_refuses_a_percentage_and_offloads_own_keys():
    with pytest.raises(ValueError, match=r"fraction from 0\.0 to 1\.0, not 50"):
        report_progress(50)
    with pytest.raises(ValueError, match="task is Offload's own key"):
        report_progress(0.5, task="oops")
    report_progress(1.0, rows=10)  # outside a job: nothing to record, nothing refused


def test_progress_redis_does_not_take_is_said_once_per_job_and_outage_not_at_every_report(redis, monkeypatch, caplog):
    # A tester saw 41 WARNING lines in 20 s of outage from one job, one per progress report.
    from redis.backoff import NoBackoff
    from redis.retry import Retry as RedisRetry

    import dev
    from offload import progress

    job = Queue(connection=redis, serializer=JSONSerializer).enqueue("tests.fixtures.echo", 1)
    monkeypatch.setattr(progress, "get_current_job", lambda: job)
    unreachable = Redis(port=dev.free_port(), socket_connect_timeout=0.5, retry=RedisRetry(NoBackoff(), 0))
    caplog.set_level(logging.INFO, logger="offload.progress")

    job.connection = unreachable  # Redis down
    for step in range(40):
        report_progress(step / 100)
    job.connection = redis  # back
    report_progress(0.5)
    report_progress(0.6)
    job.connection = unreachable  # down again
    report_progress(0.7)
    report_progress(0.8)
    job.connection = redis

    said = [(record.levelname, record.getMessage()) for record in caplog.records if record.name == "offload.progress"]
    assert [level for level, _ in said] == ["WARNING", "INFO", "WARNING"], said
    assert f"job {job.id}: progress not saved, Redis unreachable" in said[0][1]
    assert "saved again" in said[1][1] and "40 reports" in said[1][1]
    assert refreshed(job).meta["progress"] == 60.0


def test_with_jobs_run_inline_a_host_apps_tests_need_no_worker(tmp_path, redis_url, redis, monkeypatch):
    """README, "Test your own app": RUN_JOBS_INLINE runs a submitted job inside the submit, through
    the same checks a worker's run has (typed arguments, a JSON result), and stores it as usual."""
    (tmp_path / "inlineapp.py").write_text(
        textwrap.dedent(TYPED_APP).replace(
            '"OFFLOAD_QUEUES"', '"OFFLOAD_RUN_JOBS_INLINE"] = True\napp.config["OFFLOAD_QUEUES"'
        )
    )
    monkeypatch.setenv("TYPED_REDIS_URL", redis_url)
    monkeypatch.syspath_prepend(str(tmp_path))
    import inlineapp  # type: ignore[import-not-found]

    from offload.web import api_blueprint

    app = inlineapp.app
    app.config.update(TESTING=True, SECRET_KEY="host-secret")
    app.register_blueprint(api_blueprint)
    params = {"when": "2026-01-01T10:00:00Z", "color": "blue", "mode": "slow", "tags": [], "at": {"x": 1, "y": 1}}

    answer = app.test_client().post("/api/jobs", json={"task": "typed", "params": params})
    with app.app_context():
        failing = inlineapp.offload.submit("unserializable")

    assert answer.status_code == 202 and answer.get_json()["status"] == "finished"
    assert answer.get_json()["result"]["when"] == "datetime" and answer.get_json()["result"]["sum"] == 2
    assert failing.get_status() == JobStatus.FAILED and "not JSON" in failing.latest_result().exc_string
    assert redis.llen("rq:queue:urgent") == redis.llen("rq:queue:default") == 0  # nothing left for a worker
    sys.modules.pop("inlineapp", None)


def test_jobs_run_inline_is_refused_in_production():
    from offload import settings

    with pytest.raises(settings.SettingsError, match="RUN_JOBS_INLINE is for tests"):
        settings.from_environ({"OFFLOAD_ENV": "production", "SECRET_KEY": "k" * 64, "RUN_JOBS_INLINE": "on"})
