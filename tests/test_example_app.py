"""examples/hello as its README runs it: Offload ``pip install``-ed into a fresh virtualenv, the example's
worker (``flask --app hello offload worker``) and web (``flask --app hello run``) started from that
virtualenv in a directory outside the checkout, a job submitted over HTTP and read back finished.

The virtualenv is made once per session (about 20-35 s, from pip's cache; the time is among the
figures printed at the end). It installs a copy of the checkout, so the build leaves no ``build/``
or ``*.egg-info`` in the repository, and nothing of the checkout is importable by the processes:
what they run is the installed package."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from redis import Redis

import dev
from tests.conftest import ROOT, queued_job_count, wait_for

pytestmark = pytest.mark.e2e

EXAMPLE = ROOT / "examples" / "hello" / "hello.py"
JUNK = shutil.ignore_patterns(
    ".git", ".venv", ".dev", "build", "*.egg-info", "__pycache__", "*.pyc", ".pytest_cache", ".ruff_cache",
    ".hypothesis", "test-artifacts", "node_modules",
)  # fmt: skip


@dataclass
class ExampleEnv:
    venv: Path
    app_dir: Path

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)

    def env(self, redis_url: str, **extra: str) -> dict[str, str]:
        """This process's environment without anything that points Python at the checkout or its venv."""
        env = {
            k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "FLASK_APP", "OFFLOAD_APP")
        }
        path = os.pathsep.join(
            p for p in env.get("PATH", "").split(os.pathsep) if Path(sys.executable).parent != Path(p)
        )
        env.update(PATH=f"{self.venv / 'bin'}{os.pathsep}{path}", REDIS_URL=redis_url, PYTHONUNBUFFERED="1", **extra)
        return env


@pytest.fixture(scope="session")
def example_env(tmp_path_factory: pytest.TempPathFactory, figures) -> ExampleEnv:
    """A fresh virtualenv with ``pip install <copy of the repository>``, and the example in a directory of its own."""
    base = tmp_path_factory.mktemp("example")
    source = base / "offload-src"
    shutil.copytree(ROOT, source, ignore=JUNK)
    venv = base / "venv"
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    created = time.monotonic()
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "install", "--quiet"]
    done = subprocess.run([*pip, str(source)], cwd=base, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    figures.record(
        "example app", venv_s=round(created - started, 1), pip_install_s=round(time.monotonic() - created, 1)
    )
    app_dir = base / "app"
    app_dir.mkdir()
    shutil.copy(EXAMPLE, app_dir / "hello.py")
    return ExampleEnv(venv=venv, app_dir=app_dir)


def run_in_venv(example: ExampleEnv, env: dict[str, str], code: str) -> dict:
    done = subprocess.run(
        [example.bin("python"), "-c", code], cwd=example.app_dir, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def example_web(example_env: ExampleEnv, redis_url: str, tmp_path: Path) -> Iterator[str]:
    """``flask --app hello run`` from the virtualenv; yields its base URL."""
    port = dev.free_port()
    log = tmp_path / "web.log"
    env = example_env.env(redis_url, GREETING="Hello from the web")
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [example_env.bin("flask"), "--app", "hello", "run", "--port", str(port)],
            cwd=example_env.app_dir, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    base_url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        assert process.poll() is None, log.read_text()
        try:
            return httpx.get(f"{base_url}/greetings/none", timeout=1).status_code == 404
        except httpx.HTTPError:
            return False

    try:
        wait_for(answers, what="flask run to answer")
        yield base_url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        print(f"----- web log -----\n{log.read_text(errors='replace')[-3000:]}")


def test_the_example_runs_on_the_installed_package(example_env: ExampleEnv, redis_url: str):
    code = """if True:
        import json, importlib.metadata, importlib.resources, offload, hello
        web = importlib.resources.files("offload.web")
        print(json.dumps({
            "offload": offload.__file__,
            "hello": hello.__file__,
            "data": [web.joinpath(p).is_file() for p in ("templates/offload/base.html", "static/app.css")],
            "top": sorted({str(f).split("/")[0] for f in importlib.metadata.files("offload")}),
            "version": [offload.__version__, importlib.metadata.version("offload")],
        }))
    """
    found = run_in_venv(example_env, example_env.env(redis_url), code)
    offload_file = Path(found["offload"]).resolve()
    assert offload_file.is_relative_to(example_env.venv.resolve()), offload_file
    assert not offload_file.is_relative_to(ROOT), offload_file
    assert Path(found["hello"]).resolve() == (example_env.app_dir / "hello.py").resolve()
    assert found["data"] == [True, True], "templates and static files are installed"
    # Only the package: not app, tasks, worker, dev, gunicorn.conf, tests, bench or examples.
    assert found["top"] == ["offload", f"offload-{found['version'][0]}.dist-info"]
    assert found["version"][0] == found["version"][1]


def test_a_job_submitted_over_http_runs_on_the_example_s_worker(example_env, example_web: str, redis_url: str):
    with httpx.Client(base_url=example_web, timeout=10) as http:
        answer = http.post("/greetings", json={"name": "Ada", "times": 2})
        assert answer.status_code == 202, answer.text
        job_id = answer.json()["id"]
        assert http.get(answer.json()["url"]).json()["status"] == "queued"

        # The README's worker command, in burst mode: it takes the job, runs it and exits. The greeting
        # comes from the config of the app the worker loaded (GREETING in its environment, not the web's).
        worker = subprocess.run(
            [example_env.bin("flask"), "--app", "hello", "offload", "worker", "--burst"],
            cwd=example_env.app_dir, env=example_env.env(redis_url, GREETING="Bonjour"),
            capture_output=True, text=True, timeout=45,  # redis-py 8.2 made a worker's exit hang 60 s at times
        )  # fmt: skip
        assert worker.returncode == 0, worker.stdout + worker.stderr

        job = http.get(f"/greetings/{job_id}").json()
        assert job == {"id": job_id, "status": "finished", "result": "Bonjour, Ada! Bonjour, Ada!"}, (
            job,
            worker.stderr[-3000:],
        )
        assert http.get("/greetings/no-such-job").status_code == 404


def test_a_job_runs_with_the_example_app_s_context(example_env: ExampleEnv, redis_url: str, tmp_path: Path):
    """A long-running worker, whose app says GREETING=Hej, runs a job that an app saying Hallo submitted."""
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen(
            [example_env.bin("flask"), "--app", "hello", "offload", "worker"],
            cwd=example_env.app_dir, env=example_env.env(redis_url, GREETING="Hej"),
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        submit = """if True:
            import json, hello
            with hello.app.app_context():
                job = hello.offload.submit("greet", {"name": "Grace"})
                assert job.latest_result(timeout=60) is not None, "the job did not end"  # waits on RQ's stream
                print(json.dumps([job.get_status(), job.return_value()]))
        """
        assert run_in_venv(example_env, example_env.env(redis_url, GREETING="Hallo"), submit) == [
            "finished",
            "Hej, Grace!",
        ], log.read_text()
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
    assert worker.returncode == 0, log.read_text()


def test_invalid_params_name_the_field_and_enqueue_nothing(example_env: ExampleEnv, redis_url: str, redis: Redis):
    check = """if True:
        import json, offload, hello
        out = {}
        with hello.app.app_context():
            try:
                hello.offload.submit("greet", {"name": "", "times": 9})
            except offload.InvalidParams as exc:
                out["fields"] = sorted(exc.fields)
            try:
                hello.offload.submit("shout", {})
            except offload.UnknownTask as exc:
                out["unknown"] = exc.name
        answer = hello.app.test_client().post("/greetings", json={"name": "Ada", "times": "many"})
        out["http"] = [answer.status_code, sorted(answer.get_json()["fields"])]
        print(json.dumps(out))
    """
    out = run_in_venv(example_env, example_env.env(redis_url), check)
    assert out == {"fields": ["name", "times"], "unknown": "shout", "http": [400, ["times"]]}
    assert queued_job_count(redis) == 0
    assert not redis.keys("rq:queue:*")


def readme_section_blocks(heading: str) -> list[str]:
    """The fenced code blocks of the README's section ``heading``, in order."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index(f"## {heading}\n") :]
    section = section[: section.index("\n## ", 4)]
    return re.findall(r"```[a-z]*\n(.*?)```", section, re.DOTALL)


def test_the_readme_s_use_it_in_your_app_runs_as_written(example_env: ExampleEnv, redis_url: str, tmp_path: Path):
    """The snippet and the worker command of "Use it in your app", copied as they are (only the Redis
    URL is this test's): the README once showed an app whose every job failed (KeyError: 'GREETING')."""
    _, snippet, commands = readme_section_blocks("Use it in your app")[:3]
    app_dir = tmp_path / "readme-app"
    app_dir.mkdir()
    (app_dir / "hello.py").write_text(snippet.replace("redis://127.0.0.1:6379/0", redis_url))
    worker_command = [*shlex.split(commands.splitlines()[0].split("#")[0]), "--burst"]
    assert worker_command[:4] == ["flask", "--app", "hello", "offload"], worker_command
    env = example_env.env(redis_url)

    def in_app(code: str) -> dict:
        done = subprocess.run(
            [example_env.bin("python"), "-c", code], cwd=app_dir, env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    submitted = in_app(
        "import json, hello; r = hello.app.test_client().post('/greetings'); print(json.dumps(r.get_json()))"
    )
    worker = subprocess.run(
        [example_env.bin(worker_command[0]), *worker_command[1:]],
        cwd=app_dir, env=env, capture_output=True, text=True, timeout=45,
    )  # fmt: skip
    assert worker.returncode == 0, worker.stdout + worker.stderr

    answer = in_app(
        f"import json, hello; print(json.dumps(hello.app.test_client().get('/greetings/{submitted['id']}').get_json()))"
    )
    assert answer == {"status": "finished", "result": "Hello, Ada!"}, worker.stderr[-3000:]
