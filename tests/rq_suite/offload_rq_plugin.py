"""pytest plugin that runs RQ's own tests against ``OffloadWorker`` (loaded with ``-p offload_rq_plugin``
by tests/rq_suite/test_rq_suite.py, in a pytest of its own rooted in RQ's unpacked sdist).

What it changes, and nothing else:

- Redis: RQ's tests connect to ``localhost:6379`` (``Redis()``, databases 4-16); redis-py's
  default port becomes the harness's own server (``OFFLOAD_RQ_SUITE_PORT``).
- Worker: ``Worker`` and ``SimpleWorker`` in RQ's test modules (and in ``tests.fixtures``) are
  ``OffloadWorker``, with a tiny Flask host app (``Offload(app)`` on that Redis) bound to it.
- Serializer: Offload runs JSON jobs only, so RQ's default serializer writes and reads JSON here
  (a job stored by ``Queue(...)`` is then one OffloadWorker runs, instead of refusing it as
  pickled). What still fails for being JSON is listed as a deviation.
- Deviations: every test in tests/rq_suite/deviations.toml is expected to fail (strict xfail;
  ``deselect`` ones are not run): a deviation that passes, or any other failure, fails the run.
"""

from __future__ import annotations

import inspect
import os
import sys
import tomllib
from pathlib import Path

import pytest

PORT = int(os.environ["OFFLOAD_RQ_SUITE_PORT"])
DEVIATIONS = Path(__file__).with_name("deviations.toml")


def _redis_defaults_to_our_port() -> None:
    import redis
    import redis.connection

    for function in (redis.Redis.__init__, redis.connection.Connection.__init__):
        signature = inspect.signature(function)
        names = [name for name, p in signature.parameters.items() if p.default is not inspect.Parameter.empty]
        if function.__defaults__ and "port" in names:
            defaults = list(function.__defaults__)
            positional = [
                name
                for name, p in signature.parameters.items()
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.POSITIONAL_ONLY) and p.default is not inspect.Parameter.empty
            ]
            if "port" in positional:
                defaults[positional.index("port")] = PORT
                function.__defaults__ = tuple(defaults)
        if function.__kwdefaults__ and "port" in function.__kwdefaults__:
            function.__kwdefaults__["port"] = PORT


def _json_by_default() -> None:
    from rq import serializers

    serializers.DefaultSerializer.dumps = staticmethod(serializers.JSONSerializer.dumps)
    serializers.DefaultSerializer.loads = staticmethod(serializers.JSONSerializer.loads)


def _bind_host_app() -> None:
    from flask import Flask

    from offload import Offload
    from offload.worker import host

    app = Flask("offload_rq_suite")
    app.config["OFFLOAD_REDIS_URL"] = f"redis://127.0.0.1:{PORT}/4"
    # RQ's tests enqueue functions of their own modules, which no Offload app registers as tasks.
    modules = sorted(f"tests.{path.stem}" for path in (Path.cwd() / "tests").glob("*.py"))
    app.config["OFFLOAD_UNREGISTERED_JOB_MODULES"] = ["tests", *modules]
    Offload(app)
    host.bind(app)


def load_deviations() -> dict[str, tuple[str, str]]:
    """Return {node id: (kind, reason)} from deviations.toml (kind: "xfail" or "deselect")."""
    found: dict[str, tuple[str, str]] = {}
    for group in tomllib.loads(DEVIATIONS.read_text())["deviation"]:
        for test in group["tests"]:
            assert test not in found, f"{test} is listed twice in {DEVIATIONS.name}"
            found[test] = (group.get("kind", "xfail"), group["reason"])
    return found


def pytest_configure(config: pytest.Config) -> None:
    _redis_defaults_to_our_port()
    _json_by_default()
    _bind_host_app()
    config.offload_deviations = load_deviations()  # type: ignore[attr-defined]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from offload.worker import OffloadWorker

    patched: set[int] = set()
    deviations: dict[str, tuple[str, str]] = config.offload_deviations  # type: ignore[attr-defined]
    unseen = set(deviations)
    kept, deselected = [], []
    for item in items:
        module = getattr(item, "module", None)
        if module is not None and id(module) not in patched:
            patched.add(id(module))
            for name in ("Worker", "SimpleWorker"):
                if name in vars(module):
                    setattr(module, name, OffloadWorker)
        node = item.nodeid
        unseen.discard(node)
        kind, reason = deviations.get(node, (None, None))
        if kind == "deselect":
            deselected.append(item)
            continue
        if kind == "xfail":
            item.add_marker(pytest.mark.xfail(reason=reason, strict=True, run=True))
        kept.append(item)
    rq_fixtures = sys.modules.get("tests.fixtures")  # RQ's: its helpers start workers too
    if rq_fixtures is not None:
        rq_fixtures.Worker = OffloadWorker  # type: ignore[attr-defined]
    selected_files = {item.nodeid.split("::")[0] for item in items}
    stale = sorted(test for test in unseen if test.split("::")[0] in selected_files)
    if stale:
        raise pytest.UsageError(f"{DEVIATIONS.name} lists tests RQ's suite does not have: {stale}")
    if deselected:
        config.hook.pytest_deselected(items=deselected)
    items[:] = kept
