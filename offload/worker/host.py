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
_named_in_environment = False


def bind(app: Flask) -> None:
    """Make ``app`` the host app of workers started in this process."""
    global _bound, _named_in_environment
    _bound = app
    _named_in_environment = False


def from_rq_command_line() -> bool:
    """True in the stock ``rq worker`` command with the host app named in ``OFFLOAD_APP``: its Redis
    and queues come from ``rq worker``'s own options, not from the app. (A worker built in
    process is handed its connection on purpose; ``flask offload worker`` takes the app's.)"""
    return _named_in_environment and Path(sys.argv[0]).name == "rq"


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
    bind(app)
    global _named_in_environment
    _named_in_environment = True
    return app
