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
import secrets
import sys
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
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
from redis.exceptions import RedisError
from werkzeug.security import check_password_hash, generate_password_hash

from offload.state import get_redis
from offload.web.client_identity import client_key
from offload.web.rate_limits import limiter

log = logging.getLogger("offload")

bp = Blueprint("auth", __name__)

SESSION_KEY = "operator"
LOGIN_KEY_PREFIX = "offload:operator-login:"
"""Redis keys of the live operator logins: the prefix, then the SHA-256 of a login's id."""
LOGIN_TURN_PREFIX = "offload:operator-login-turn:"
"""Redis keys held while one client's login attempt is checked and counted (the prefix, then
the client's key): a client's attempts are checked one after another."""
LOGIN_TURN_MS = 10_000
"""How long a turn is held at most, if the process checking it dies before giving it back."""
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


def end_login() -> None:
    """Log this session out, and end its login for every copy of the cookie."""
    login = session.pop(SESSION_KEY, None)
    g.pop("offload_is_operator", None)
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


def safe_next(target: str | None) -> str:
    """Return ``target`` if it is a path on this site, else the home page (no open redirects).

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
    return home()


def home() -> str:
    """The page an operator lands on: the task list, or the operators' queues in an app without the pages."""
    return url_for("web.index") if "web" in current_app.blueprints else url_for("operators.queues")


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(
    "5 per minute;30 per hour",
    methods=["POST"],
    deduct_when=lambda response: response.status_code != 303,  # only failed attempts count
    error_message="Too many failed logins from your address. Wait a minute and try again.",
)
def login():
    """The operator login form; on success, back to the page that asked for it (303)."""
    if not credentials_configured():
        abort(503, OFF_MESSAGE)
    target = safe_next(request.values.get("next"))
    if request.method == "GET":
        return render_template("offload/login.html", next=target, error=None, username="")
    if not _take_login_turn():
        abort(429, "Another login from your address is being checked. Try again in a moment.")
    username = request.form.get("username", "")
    if not check_credentials(username, request.form.get("password", "")):
        log.warning("Failed operator login as %r from %s", username[:100], request.remote_addr)
        error = "Wrong username or password."
        return render_template("offload/login.html", next=target, error=error, username=username), 401
    start_login()
    log.info("Operator %s logged in from %s", username, request.remote_addr)
    return redirect(target, code=303)


def _take_login_turn() -> bool:
    """Take this client's turn to have a login attempt checked; False while another one has it.

    Only failed attempts count towards the login limit, so they are counted after their answer
    (Flask-Limiter's ``deduct_when``). Checked side by side, a burst of 30 wrong passwords sent at
    once got 20-25 tries where the limit allows 5. One attempt at a time from each client, with
    the turn given back only after the failure was counted (:func:`_end_login_turn`), keeps the
    count exact. A second attempt meanwhile is refused (429), and counts as a failure.
    """
    key = LOGIN_TURN_PREFIX + client_key()
    try:
        if not get_redis().set(key, b"1", nx=True, px=LOGIN_TURN_MS):
            return False
    except RedisError:
        return True  # the limit counts in this process's memory meanwhile (rate_limits.py)
    g.offload_login_turn = key
    return True


@bp.teardown_request
def _end_login_turn(_exc: BaseException | None) -> None:
    # Teardown runs after the response was processed, so after the limiter counted the failure.
    key = g.pop("offload_login_turn", None)
    if key is not None:
        with suppress(RedisError):
            get_redis().delete(key)


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
