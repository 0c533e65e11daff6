"""Offload's web app: ``create_app()`` for tests and tools, ``app`` for ``gunicorn app:app``."""

from __future__ import annotations

import logging
from typing import Any

import redis.exceptions
from flask import Flask, Response, jsonify, make_response, render_template, request
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

import api
import auth
import control
import dashboard
import jobs
import metrics
import ondemand
import operators
import rate_limits
import security
import settings
import web

log = logging.getLogger("offload")

csrf = CSRFProtect()


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app: settings from the environment, then ``test_config`` on top."""
    app = Flask(__name__)
    app.config.from_mapping(settings.load())
    if test_config:
        app.config.update(test_config)
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", None)  # tokens live as long as the session

    jobs.init_app(app)
    metrics.init_app(app)
    ondemand.init_app(app)
    security.init_app(app)
    csrf.init_app(app)
    csrf.exempt(api.bp)  # JSON only: browsers cannot send it cross-site without a CORS preflight
    rate_limits.init_app(app)
    auth.init_app(app)
    dashboard.init_app(app)
    app.register_blueprint(web.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(operators.bp)
    app.register_blueprint(control.bp)
    _register_error_handlers(app)
    return app


def _wants_json() -> bool:
    return request.path.startswith("/api/")


def _error(status: int, message: str, **extra: Any) -> Response:
    if _wants_json():
        response = jsonify(error=message, **extra)
    else:
        response = make_response(render_template("error.html", status=status, message=message))
    response.status_code = status
    return response


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(redis.exceptions.ConnectionError)
    @app.errorhandler(redis.exceptions.TimeoutError)
    def redis_unavailable(exc: Exception):
        log.error("Redis unavailable during %s %s: %s", request.method, request.path, exc)
        response = _error(503, "The job store (Redis) is unreachable right now. Please try again in a moment.")
        response.headers["Retry-After"] = "5"
        return response

    @app.errorhandler(CSRFError)
    def csrf_failed(exc: CSRFError):
        return _error(400, f"The form expired or was not sent from this site ({exc.description}). Reload and retry.")

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(exc: RequestEntityTooLarge):
        limit = app.config["MAX_CONTENT_LENGTH"]
        security.discard_request_body(8 * limit)  # so the client gets to read this answer
        return _error(413, f"The request body is larger than the limit of {limit // 1024} KiB.")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return _error(exc.code or 500, exc.description or exc.name)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("Unhandled error during %s %s", request.method, request.path)
        return _error(500, "Something went wrong on our side. It has been logged.")


app = create_app()
