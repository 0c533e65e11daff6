"""Operators: one account from the environment, a login page, and the one check everything uses.

Guard a view with ``@operator_required``; ask ``is_operator()`` in code and templates.
The account is ``OPERATOR_USERNAME`` + ``OPERATOR_PASSWORD_HASH`` (settings.py). With
neither set, every operator page (``/rq`` included) answers 503 saying so, in development
too: the dashboard never runs open. Make a hash with::

    .venv/bin/python -m offload.web.auth        # asks for the password twice, prints the hash

A login lives in the signed session cookie with the time it happened, an HMAC of the
account (``SECRET_KEY`` over username + password hash) and a random login id. Changing the
password or the secret key logs every operator out, and knowing the development
``SECRET_KEY`` is not enough to forge a login. The cookie alone is not enough either: each
login id is kept in Redis (hashed, expiring with ``OPERATOR_SESSION_HOURS``) and checked on
every operator request, and logging out deletes it, so a copy of the cookie taken before
``POST /logout`` opens nothing afterwards.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import logging
import math
import secrets
import sys
import time
from collections.abc import Callable, Mapping
from functools import wraps
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    abort,
    current_app,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue
from limits import parse_many
from limits.storage import RedisStorage
from limits.strategies import FixedWindowRateLimiter
from redis.exceptions import RedisError
from werkzeug.security import check_password_hash, generate_password_hash

from offload.state import get_redis
from offload.web.client_identity import client_key
from offload.web.errors import error_response

log = logging.getLogger("offload")

bp = Blueprint("auth", __name__)

SESSION_KEY = "operator"
LOGIN_KEY_PREFIX = "offload:operator-login:"
"""Redis keys of the live operator logins: the prefix, then the SHA-256 of a login's id."""
LOGIN_LIMITS = parse_many("5 per minute;30 per hour")
"""Login attempts one client may make (:func:`count_login_attempt`)."""
LOGIN_COUNTER = "offload.login_counter"
"""Where the app keeps its counter of login attempts (``app.extensions``)."""
MIN_PASSWORD_LENGTH = 12

OFF_MESSAGE = (
    "Operator pages, including the RQ dashboard, are off: no operator account is configured. "
    "Set OPERATOR_USERNAME and OPERATOR_PASSWORD_HASH in the environment (OFFLOAD_OPERATOR_USERNAME and "
    "OFFLOAD_OPERATOR_PASSWORD_HASH in app.config; make the hash with `python -m offload.web.auth`) and restart."
)


def credentials_configured(config: Mapping[str, Any] | None = None) -> bool:
    """Return True if an operator account is configured (else operator pages are off)."""
    config = current_app.config if config is None else config
    return bool(config.get("OFFLOAD_OPERATOR_USERNAME") and config.get("OFFLOAD_OPERATOR_PASSWORD_HASH"))


def _account_key(config: Mapping[str, Any]) -> str:
    """An HMAC only someone holding both the secret key and the password hash can compute."""
    account = f"{config['OFFLOAD_OPERATOR_USERNAME']}\0{config['OFFLOAD_OPERATOR_PASSWORD_HASH']}".encode()
    return hmac.new(config["SECRET_KEY"].encode(), account, hashlib.sha256).hexdigest()


def _login_key(login_id: str) -> str:
    """The Redis key that keeps login ``login_id`` alive; hashed, so reading Redis yields no cookie."""
    return LOGIN_KEY_PREFIX + hashlib.sha256(login_id.encode()).hexdigest()


def is_operator() -> bool:
    """Return True if this request comes from a logged-in operator whose login has not expired or ended."""
    if "offload_is_operator" not in g:  # templates ask too: one Redis read per request
        g.offload_is_operator = _is_operator()
    return bool(g.offload_is_operator)


def _is_operator() -> bool:
    config = current_app.config
    if not credentials_configured(config):
        return False
    login = session.get(SESSION_KEY)
    if not isinstance(login, dict):
        return False
    since, login_id = login.get("since"), login.get("id")
    if not isinstance(since, (int, float)) or time.time() - since > config["OFFLOAD_OPERATOR_SESSION_HOURS"] * 3600:
        return False
    if not isinstance(login_id, str) or not hmac.compare_digest(str(login.get("key", "")), _account_key(config)):
        return False
    try:
        return bool(get_redis().exists(_login_key(login_id)))
    except RedisError as exc:
        # Fail closed: an ended login must not come back while Redis cannot say so.
        log.error("Cannot check an operator login: Redis unavailable (%s); treated as logged out", exc)
        return False


def start_login() -> None:
    """Log this session in as the operator: a new login id, kept in Redis for the login's lifetime."""
    login_id = secrets.token_urlsafe(32)
    lifetime = max(1, round(current_app.config["OFFLOAD_OPERATOR_SESSION_HOURS"] * 3600))
    get_redis().set(_login_key(login_id), b"1", ex=lifetime)
    session[SESSION_KEY] = {"since": time.time(), "key": _account_key(current_app.config), "id": login_id}
    session.permanent = True
    g.pop("offload_is_operator", None)
    _new_csrf_token()


def _new_csrf_token() -> None:
    """Drop the session's CSRF token, so the next form gets a new one: a token someone read or
    planted before the login (a shared browser, a cookie set from a sibling domain) opens no
    operator action after it, and one from a login opens nothing after its logout."""
    field = current_app.config.get("WTF_CSRF_FIELD_NAME", "csrf_token")
    session.pop(field, None)
    g.pop(field, None)  # Flask-WTF's copy for this request


def end_login() -> None:
    """Log this session out, and end its login for every copy of the cookie."""
    login = session.pop(SESSION_KEY, None)
    g.pop("offload_is_operator", None)
    _new_csrf_token()
    login_id = login.get("id") if isinstance(login, dict) else None
    if isinstance(login_id, str):
        get_redis().delete(_login_key(login_id))


def check_credentials(username: str, password: str) -> bool:
    """Return True if ``username`` and ``password`` are the operator's, compared in constant time."""
    config = current_app.config
    name_ok = hmac.compare_digest(username.encode(), config["OFFLOAD_OPERATOR_USERNAME"].encode())
    # Hash the password even when the name is wrong, so both answers take as long.
    password_ok = check_password_hash(config["OFFLOAD_OPERATOR_PASSWORD_HASH"], password)
    return name_ok and password_ok


def refuse_unless_operator() -> ResponseReturnValue | None:
    """Return None for an operator; else the answer anyone else gets (503 off, login redirect, 403)."""
    if not credentials_configured():
        abort(503, OFF_MESSAGE)
    if is_operator():
        return None
    if request.method in ("GET", "HEAD") and not request.path.startswith("/api/"):
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
    abort(403, "Log in as an operator first.")


def operator_required(view: Callable[..., Any]) -> Callable[..., Any]:
    """Let only a logged-in operator through to ``view``; the one check every operator page uses."""

    @wraps(view)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        refusal = refuse_unless_operator()
        if refusal is not None:
            return refusal
        return view(*args, **kwargs)

    return guarded


def safe_next(target: str | None) -> str | None:
    """Return ``target`` if it is a path in this app (as ``request.path`` gives it, without the
    prefix the app is mounted under), else None (no open redirects).

    A control character or line break is refused too: CR/LF would break the Location header
    (a 500), and browsers drop tabs and newlines from URLs, so ``/\\t/evil.example`` is ``//evil.example``.
    """
    if (
        target
        and target.isprintable()
        and target.startswith("/")
        and not target.startswith("//")
        and "\\" not in target
    ):
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc:
            return target
    return None


def landing(target: str | None) -> str:
    """Where a login goes: ``target`` (a path in this app, :func:`safe_next`) under the prefix the
    app is mounted at (``SCRIPT_NAME``), else the home page."""
    return request.script_root + target if target else home()


def home() -> str:
    """The page an operator lands on: the task list, or the operators' queues in an app without the pages."""
    return url_for("web.index") if "web" in current_app.blueprints else url_for("operators.queues")


@bp.route("/login", methods=["GET", "POST"])
def login():
    """The operator login form; on success, back to the page that asked for it (303)."""
    if not credentials_configured():
        abort(503, OFF_MESSAGE)
    target = safe_next(request.values.get("next"))
    if request.method == "GET":
        return render_template("offload/login.html", next=target or "", error=None, username="")
    count_login_attempt()
    username = request.form.get("username", "")
    if not check_credentials(username, request.form.get("password", "")):
        log.warning("Failed operator login as %r from %s", username[:100], request.remote_addr)
        error = "Wrong username or password."
        return render_template("offload/login.html", next=target or "", error=error, username=username), 401
    start_login()
    log.info("Operator %s logged in from %s", username, request.remote_addr)
    return redirect(landing(target), code=303)


def count_login_attempt() -> None:
    """Count this login attempt against the client's :data:`LOGIN_LIMITS`; 429 once over one.

    Every attempt counts as it arrives, the count and the check one atomic step in Redis, so a
    burst sent at once gets no more tries than the limit. Counted on the app's own Redis client
    (its timeouts), failing closed: a Redis error is the app's 503, and no password is checked
    while the count is unknown (nobody can log in without Redis anyway: a login is kept there).

    Not Flask-Limiter, as the other limits are: it lets a request through when its counter fails,
    and with its quick timeouts a synchronised burst of 400 logins had 157 passwords checked,
    each an scrypt holding its web process 0.19 s. Counting only failures, after their answer,
    let a burst of 30 have 20-25 checked.
    """
    if not current_app.config.get("RATELIMIT_ENABLED", True):
        return  # every limit switched off (Flask-Limiter's switch, rate_limits.py)
    counter = current_app.extensions.get(LOGIN_COUNTER)
    if counter is None:
        storage = RedisStorage(
            current_app.config["OFFLOAD_REDIS_URL"], connection_pool=get_redis().connection_pool, key_prefix="offload"
        )
        counter = current_app.extensions[LOGIN_COUNTER] = FixedWindowRateLimiter(storage)
    client = client_key()
    for limit in LOGIN_LIMITS:
        if not counter.hit(limit, "login", client):
            reset_at, _ = counter.get_window_stats(limit, "login", client)
            response = error_response(429, "Too many logins from your address. Wait a minute and try again.")
            response.headers["Retry-After"] = str(max(1, math.ceil(reset_at - time.time())))
            abort(response)


@bp.post("/logout")
def logout():
    """End the operator login, for every copy of the cookie (the form posts a CSRF token like every other form)."""
    end_login()
    return redirect(home(), code=303)


def main(argv: list[str]) -> int:
    """Read a password (twice on a terminal, one line from a pipe) and print its hash."""
    if sys.stdin.isatty():
        password = getpass.getpass("Operator password: ")
        if getpass.getpass("Again: ") != password:
            print("The two passwords differ.", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().rstrip("\n")
    if len(password) < MIN_PASSWORD_LENGTH:
        print(f"Use at least {MIN_PASSWORD_LENGTH} characters.", file=sys.stderr)
        return 1
    print(generate_password_hash(password))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
