"""What every Offload blueprint needs on the app it is registered on, set up once per app:
CSRF protection for its forms, rate limits counted in Redis, the operator's session for its
templates, and its own templates and static files (under ``offload/`` and ``/offload-static``,
so they never collide with the host app's)."""

from __future__ import annotations

from typing import cast

from flask import Blueprint, Flask, current_app, request
from flask_wtf.csrf import CSRFProtect

from offload.web import auth, errors, rate_limits

EXTENSION_KEY = "offload_web"

assets = Blueprint(
    "offload", __name__, template_folder="templates", static_folder="static", static_url_path="/offload-static"
)
"""The templates (``offload/*.html``) and static files the pages share."""


def install(app: Flask) -> None:
    """Set ``app`` up for Offload's blueprints; does nothing the second time."""
    if app.extensions.get(EXTENSION_KEY):
        return
    if "offload" not in app.extensions:
        raise RuntimeError("register Offload's blueprints after Offload(app) / offload.init_app(app)")
    if not app.secret_key:  # else the first form or submit is a 500 (CSRF, the My jobs cookie)
        raise RuntimeError(
            "Offload's blueprints need app.secret_key (SECRET_KEY) for CSRF tokens and the My jobs "
            'cookie: set it before registering them, e.g. from os.environ["SECRET_KEY"]'
        )
    app.extensions[EXTENSION_KEY] = True
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", None)  # tokens live as long as the session
    if "csrf" not in app.extensions:  # the host's own CSRFProtect, when it has one
        CSRFProtect(app)
    app.before_request(check_csrf_of_offload_forms)
    rate_limits.init_app(app)
    app.context_processor(lambda: {"is_operator": auth.is_operator, "offload_parts": registered_parts()})
    app.register_blueprint(assets)


FORM_BLUEPRINTS = frozenset({"web", "console", "auth", "operators", "control", "bulk", "rq_dashboard"})
"""Offload's blueprints that take forms (and rq-dashboard's POSTs); the JSON API is exempt (api.py)."""


def check_csrf_of_offload_forms() -> None:
    """Check the CSRF token of a form sent to Offload's views even where the host's CSRFProtect
    checks only the views it is told to (``WTF_CSRF_CHECK_DEFAULT = False``, Flask-WTF's mode for
    calling ``csrf.protect()`` view by view): Offload's forms never depend on that choice. With
    the default, CSRFProtect has checked it already; ``WTF_CSRF_ENABLED = False`` (a host's tests)
    switches it off here too."""
    config = current_app.config
    if config.get("WTF_CSRF_CHECK_DEFAULT", True) or not config.get("WTF_CSRF_ENABLED", True):
        return
    if request.blueprint in FORM_BLUEPRINTS:
        current_app.extensions["csrf"].protect()  # 400 (CSRFError) without a valid token; GET passes


def registered_parts() -> dict[str, bool]:
    """Which of Offload's blueprints the current app has, so pages link only to what exists."""
    blueprints = current_app.blueprints
    return {"pages": "web" in blueprints, "api": "api" in blueprints, "console": "console" in blueprints}


def on_register(blueprint: Blueprint) -> Blueprint:
    """Make ``blueprint`` :func:`install` Offload's web parts on every app it is registered on, and
    answer its own views' errors as Offload does (``errors.init_blueprint``)."""
    blueprint.record_once(lambda state: install(cast(Flask, state.app)))  # a Flask app at run time
    errors.init_blueprint(blueprint)
    return blueprint
