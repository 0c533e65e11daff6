"""The web's defences that sit around the routes: which proxy to trust, the security headers
on every response, the per-client limit on submitting jobs (``rate_limits.limiter``), and
clean refusals of malformed or oversized requests.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, abort, current_app, request
from redis.exceptions import RedisError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from offload.web import client_identity
from offload.web.rate_limits import limiter

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",  # job.js only: no inline script, no eval
        "style-src 'self'",
        "img-src 'self' data:",  # Pico's icons are data: SVGs in its stylesheet
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
    # Job pages are addressed by their unguessable id: never hand the URL to another site.
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}

HSTS = "max-age=31536000; includeSubDomains"

SUBMIT_LIMIT_MESSAGE = "Too many jobs submitted from your address. Wait a little (see Retry-After) and try again."


def submit_limit() -> str:
    """The per-client limit on submitting jobs, from ``SUBMIT_RATE_LIMIT``."""
    return current_app.config["OFFLOAD_SUBMIT_RATE_LIMIT"]


def limit_submissions(view: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a view that submits jobs: every such view shares one per-client budget."""
    return limiter.shared_limit(submit_limit, scope="submit", methods=["POST"], error_message=SUBMIT_LIMIT_MESSAGE)(
        view
    )


def add_security_headers(response: Response) -> Response:
    """Set the security headers a view has not set itself; HSTS only over HTTPS; when to retry a 429."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if _offload_view():
        # Pages and answers hold jobs, results and (for operators) tracebacks: never kept by a
        # browser or a shared cache after the visit, or after a logout. Files Offload sends say so
        # themselves (no-cache), and are left as they are.
        response.headers.setdefault("Cache-Control", "no-store")
    if request.is_secure:
        response.headers.setdefault("Strict-Transport-Security", HSTS)
    # A 429 that says when itself (a quota, web/quotas.py) keeps its own Retry-After.
    breached = limiter.current_limit if response.status_code == 429 and "Retry-After" not in response.headers else None
    if breached is not None:
        try:
            wait = breached.reset_at - time.time()  # reads the limit's window: one more Redis call
        except RedisError:
            wait = breached.limit.get_expiry()  # the whole window: never too early
        response.headers["Retry-After"] = str(max(1, math.ceil(wait)))
    return response


def _offload_view() -> bool:
    """True if one of Offload's blueprints, or the rq-dashboard it mounts, answers this request
    (not a view of the host app's)."""
    blueprint = current_app.blueprints.get(request.blueprint or "")
    return blueprint is not None and blueprint.import_name.startswith(("offload.", "rq_dashboard"))


FORM_MIMETYPES = frozenset({"multipart/form-data", "application/x-www-form-urlencoded"})


def refuse_unreadable_form_names() -> None:
    """Answer 400 to a form with a field whose name werkzeug could not read.

    A multipart part named with a bare CR comes out with the name None, on which
    Flask-WTF's CSRF check crashes (a 500); this runs before it.
    """
    if request.mimetype in FORM_MIMETYPES and None in request.form:
        abort(400, "A form field has a name that cannot be read.")


LINGER_FACTOR = 4
"""An oversized body declared at most this many times ``MAX_CONTENT_LENGTH`` is read and dropped
after the 413, so even a client that reads only once it has sent everything sees the answer; a
larger one (or one of unknown length) is left unread."""


def discard_oversized_body(limit: int) -> None:
    """Read and drop the rest of an oversized request body if it declared at most ``LINGER_FACTOR * limit`` bytes.

    Answering before a client has finished sending makes the server close a socket with
    unread data: the kernel then resets the connection, and a client that reads only after
    sending (httpx, requests) never sees the 413. Draining a body of any size, though, lets
    one request make the server read gigabytes: a larger body is left for gunicorn, which
    sends the answer, then drains at most 64 KiB and closes. Browsers and curl read the
    answer while sending, so they see the 413 either way.
    """
    declared = request.content_length
    stream = request.environ.get("wsgi.input")
    if stream is None or declared is None or declared > LINGER_FACTOR * limit:
        return
    remaining = declared
    while remaining > 0:
        chunk = stream.read(min(65536, remaining))
        if not chunk:
            return
        remaining -= len(chunk)


def refuse_oversized_stream() -> None:
    """Answer 413 to a body sent without a length (chunked) that is larger than ``MAX_CONTENT_LENGTH``.

    werkzeug stops reading such a body at the limit and hands the view what it read, so the
    view saw a truncated body ("not valid JSON", 400). It is read here once, up to the limit,
    and kept for the view (``get_data(cache=True)``, which form parsing reads too).
    """
    limit = request.max_content_length
    if not limit or request.content_length is not None or "Transfer-Encoding" not in request.headers:
        return
    try:
        too_large = len(request.get_data(cache=True)) >= limit and request.environ["wsgi.input"].read(1)
    except HTTPException:
        raise
    except Exception:
        # InvalidChunkSize (a ParseException) or NoMoreData (an OSError); the package does not import gunicorn
        abort(400, "The request body could not be read: its chunked encoding is malformed.")
    if too_large:
        raise RequestEntityTooLarge()


def init_app(app: Flask) -> None:
    """Trust ``TRUSTED_PROXY_COUNT`` proxies, add the headers, refuse unreadable forms."""
    # The client's address (rate limits, quotas) and HTTPS (HSTS), as only a trusted proxy may say.
    client_identity.install(app)
    app.after_request(add_security_headers)
    app.before_request(refuse_oversized_stream)  # before anything reads the body
    app.before_request(refuse_unreadable_form_names)  # before CSRFProtect's, which init_app adds later
