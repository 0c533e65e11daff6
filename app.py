"""The reference app: Offload on a Flask app, with every page. ``gunicorn app:app`` serves it;
``create_app()`` is the factory that tests and the worker (``OFFLOAD_APP=app:create_app``) use."""

from __future__ import annotations

from typing import Any

from flask import Flask

from offload import metrics, settings
from offload.web import api_blueprint, console_blueprint, errors, pages_blueprint, security
from offload.workloads import mailer
from tasks import offload


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app: settings from the environment, then ``test_config`` on top."""
    app = Flask(__name__)
    app.config.from_mapping(settings.from_environ())
    if test_config:
        app.config.update(test_config)

    offload.init_app(app)
    try:  # at start, not at the first mail: a newsletter would retry every mail for two hours
        mailer.SmtpConfig.from_url(app.config["OFFLOAD_SMTP_URL"])
    except ValueError as exc:
        raise settings.SettingsError(str(exc)) from None
    security.init_app(app)  # proxy headers, security headers: before any blueprint's hooks
    app.register_blueprint(pages_blueprint)
    app.register_blueprint(api_blueprint)
    app.register_blueprint(console_blueprint)
    metrics.init_app(app)
    errors.init_app(app)
    return app


app = create_app()
