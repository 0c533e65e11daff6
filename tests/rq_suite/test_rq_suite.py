"""RQ's own tests, run against OffloadWorker: the worker keeps RQ's contract, except where
tests/rq_suite/deviations.toml says why not.

RQ's sdist ships its tests; this fetches it with pip (``pip download --no-binary :all:``, cached
in ``.cache/rq-sdist``, or ``OFFLOAD_RQ_SDIST_DIR``), unpacks the tests, starts a Redis of its
own and runs the worker-facing test modules in a pytest of their own, with
tests/rq_suite/offload_rq_plugin.py swapping the worker in.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import rq

import dev

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
MODULES = [
    "test_worker",
    "test_job",
    "test_registry",
    "test_scheduler",
    "test_retry",
    "test_timeouts",
    "test_commands",
    "test_executions",
    "test_callbacks",
    "test_dependencies",
]

pytestmark = pytest.mark.e2e


def rq_sdist() -> Path:
    """Return RQ's sdist for the installed version, downloading it with pip the first time."""
    cache = Path(os.environ.get("OFFLOAD_RQ_SDIST_DIR") or ROOT / ".cache" / "rq-sdist")
    name = f"rq-{rq.VERSION}.tar.gz"
    if not (cache / name).exists():
        cache.mkdir(parents=True, exist_ok=True)
        pip = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps"]
        subprocess.run([*pip, "--no-binary", ":all:", f"rq=={rq.VERSION}", "--dest", str(cache)], check=True)
    return cache / name


def unpack_tests(sdist: Path, into: Path) -> Path:
    """Unpack the sdist's tests/ and pyproject.toml into ``into``; return the unpacked root."""
    with tarfile.open(sdist) as archive:
        members = [m for m in archive.getmembers() if m.name.split("/")[1:2] in (["tests"], ["pyproject.toml"])]
        archive.extractall(into, members=members, filter="data")
    return into / f"rq-{rq.VERSION}"


def test_rq_own_tests_pass_against_offload_worker_but_for_the_listed_deviations(tmp_path):
    root = unpack_tests(rq_sdist(), tmp_path)
    port = dev.free_port()
    env = {
        **os.environ,
        "OFFLOAD_RQ_SUITE_PORT": str(port),
        "PYTHONPATH": os.pathsep.join([str(root), str(HERE), str(ROOT)]),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    env.pop("OFFLOAD_APP", None)  # the plugin binds its own host app
    command = [sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "offload_rq_plugin", "-p", "no:cacheprovider"]
    command += ["-c", str(root / "pyproject.toml"), "--rootdir", str(root), "-W", "ignore::DeprecationWarning"]
    command += [f"tests/{module}.py" for module in MODULES if (root / "tests" / f"{module}.py").exists()]
    with dev.redis_server(dev.find_redis_server("redis"), port):
        result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    print(result.stdout[-20000:], result.stderr[-5000:])
    assert result.returncode == 0, "RQ's tests failed against OffloadWorker beyond the listed deviations"
