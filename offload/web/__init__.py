"""Offload's web side as blueprints, for the host app to register where it wants them::

    from offload.web import api_blueprint, console_blueprint, pages_blueprint

    app.register_blueprint(pages_blueprint)        # task forms, job pages, /jobs, /healthz
    app.register_blueprint(api_blueprint)          # the JSON API under /api
    app.register_blueprint(console_blueprint)      # operator login, /operator/..., /rq

Each sets up what it needs on first registration (CSRF, rate limits, templates: ``setup.py``),
and answers its own views' errors as Offload does (JSON for the API, 503 while Redis is away),
leaving the host's handlers for its other views. ``offload.web.errors.init_app(app)`` and
``offload.web.security.init_app(app)`` add the error pages and security headers app-wide; the
reference app (``app.py``) uses both.

The blueprints are imported when first asked for, so that ``python -m offload.web.auth`` (the
password-hash command) runs its module once, as ``__main__``, and not also as an import of this
package (Python warned about that at every run).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from offload.web.api import bp as api_blueprint
    from offload.web.console import bp as console_blueprint
    from offload.web.pages import bp as pages_blueprint

__all__ = ["api_blueprint", "console_blueprint", "pages_blueprint"]

_MODULES = {
    "api_blueprint": "offload.web.api",
    "console_blueprint": "offload.web.console",
    "pages_blueprint": "offload.web.pages",
}


def __getattr__(name: str) -> object:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return importlib.import_module(module).bp
