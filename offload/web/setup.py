"""What every Offload blueprint needs on the app it is registered on, set up once per app:
CSRF protection for its forms, rate limits counted in Redis, the operator's session for its
templates, and its own templates and static files (under ``offload/`` and ``/offload-static``,
so they never collide with the host app's)."""

from __future__ import annotations

from typing import cast

from flask import Blueprint, Flask, current_app
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
    rate_limits.init_app(app)
    app.context_processor(lambda: {"is_operator": auth.is_operator, "offload_parts": registered_parts()})
    app.register_blueprint(assets)


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
