"""The host app a worker runs jobs for: the Flask app whose context wraps every job.

``flask --app myapp offload worker`` hands the app Flask's CLI loaded to :func:`bind`; the stock
``rq worker -w offload.worker.OffloadWorker`` names it in ``OFFLOAD_APP`` (or ``FLASK_APP``), in
Flask's own notation: ``module``, ``module:app`` or ``module:create_app()``, loaded the way
``flask --app`` loads it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from flask import Flask
from flask.cli import NoAppException, ScriptInfo

from offload.settings import APP_ENV

_bound: Flask | None = None
_command_line_unchecked = False
"""Set when the stock ``rq worker`` command named the host app in ``OFFLOAD_APP``; cleared once
its options are checked against the app (:func:`command_line_to_check`)."""


def bind(app: Flask, named_in_environment: bool = False) -> None:
    """Make ``app`` the host app of workers started in this process."""
    global _bound, _command_line_unchecked
    _bound = app
    _command_line_unchecked = named_in_environment and Path(sys.argv[0]).name == "rq"


def command_line_to_check() -> bool:
    """True once, for the first worker of the stock ``rq worker`` command with the host app named
    in ``OFFLOAD_APP``: its Redis and queues come from ``rq worker``'s own options, not from the
    app. The slots it forks inherit the answer (False), so the command is checked once. A worker
    built in process is handed its connection on purpose; ``flask offload worker`` takes the app's."""
    global _command_line_unchecked
    unchecked, _command_line_unchecked = _command_line_unchecked, False
    return unchecked


def load_host_app() -> Flask:
    """Return the bound host app, or load the one ``OFFLOAD_APP`` (else ``FLASK_APP``) names."""
    if _bound is not None:
        return _bound
    path = os.environ.get(APP_ENV) or os.environ.get("FLASK_APP")
    if not path:
        raise RuntimeError(
            f"the worker does not know which Flask app it runs jobs for: set {APP_ENV} "
            "(e.g. OFFLOAD_APP=myapp:create_app), or start it with `flask --app myapp offload worker`"
        )
    try:
        app = ScriptInfo(app_import_path=path, set_debug_flag=False).load_app()
    except NoAppException as exc:
        raise RuntimeError(f"{APP_ENV}={path!r}: {exc}") from exc
    bind(app, named_in_environment=True)
    return app
