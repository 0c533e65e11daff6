"""Error pages and JSON errors: a clear message and the right status, never a traceback."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import redis.exceptions
from flask import Blueprint, Flask, Response, current_app, jsonify, make_response, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from offload.web.security import discard_oversized_body

log = logging.getLogger("offload")

JSON_PREFIXES = ("/api/",)
"""Paths under which errors are answered as JSON (the JSON API's)."""


def wants_json() -> bool:
    """True when the request is for the JSON API (its blueprint, or a path under it), or its client
    asks for JSON before HTML (``Accept``), wherever it calls."""
    if request.blueprint == "api" or request.path.startswith(JSON_PREFIXES):
        return True
    accepted = request.accept_mimetypes
    return (
        accepted.best_match(["text/html", "application/json"]) == "application/json"
        and accepted["application/json"] > accepted["text/html"]
    )


def error_response(status: int, message: str, **extra: Any) -> Response:
    """Return ``message`` with ``status``: JSON for the API, the error page otherwise."""
    if wants_json():
        response = jsonify(error=message, **extra)
    else:
        response = make_response(render_template("offload/error.html", status=status, message=message))
    response.status_code = status
    return response


def redis_unavailable(exc: Exception) -> Response:
    """503 with Retry-After while Redis does not answer; logged once per request."""
    log.error("Redis unavailable during %s %s: %s", request.method, request.path, exc)
    response = error_response(503, "The job store (Redis) is unreachable right now. Please try again in a moment.")
    response.headers["Retry-After"] = "5"
    return response


def csrf_failed(exc: CSRFError) -> Response:
    """400 for a form that expired or came from another site."""
    return error_response(
        400, f"The form expired or was not sent from this site ({exc.description}). Reload and retry."
    )


def too_large(exc: RequestEntityTooLarge) -> Response:
    """413 naming the limit; the rest of a body not much larger is read first so any client sees the answer."""
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    discard_oversized_body(limit)
    return error_response(413, f"The request body is larger than the limit of {limit // 1024} KiB.")


def http_error(exc: HTTPException) -> Response:
    """Any other 4xx/5xx Flask raises, with its description."""
    return error_response(exc.code or 500, exc.description or exc.name)


def unexpected(exc: Exception) -> Response:
    """500 without details for the user; the traceback goes to the log."""
    log.exception("Unhandled error during %s %s", request.method, request.path)
    return error_response(500, "Something went wrong on our side. It has been logged.")


HANDLERS: list[tuple[type[Exception], Callable[[Any], Response]]] = [
    (redis.exceptions.ConnectionError, redis_unavailable),
    (redis.exceptions.TimeoutError, redis_unavailable),
    (CSRFError, csrf_failed),
    (RequestEntityTooLarge, too_large),
    (HTTPException, http_error),
    (Exception, unexpected),
]


def init_app(app: Flask) -> None:
    """Answer every error of ``app`` this way (the reference app does; a host app may not want to)."""
    for kind, handler in HANDLERS:
        app.register_error_handler(kind, handler)


def init_blueprint(blueprint: Blueprint) -> None:
    """Answer the errors of ``blueprint``'s own views this way, whatever the host app does with the
    errors of its other views: a JSON client of the API gets JSON errors and a 503 while Redis is
    away, without the host's handlers being replaced."""
    for kind, handler in HANDLERS:
        blueprint.register_error_handler(kind, handler)
