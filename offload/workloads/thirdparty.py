"""One call to the third-party API at ``THIRD_PARTY_URL``, classified for retries.

Only workers import this module (it loads httpx). Users never name a host: they give a path
under ``THIRD_PARTY_URL`` (checked again here after joining, so no input can reach another
origin), redirects are not followed, and the connect and read timeouts are settings.

- Timeouts, dropped connections, 429 and 5xx are transient: :class:`APIUnavailable`
  (a ``RetryLater``) carrying a jittered exponential backoff, or ``Retry-After`` if longer.
- Any other answer outside 2xx is permanent: :class:`APIRejected` (a ``PermanentError``).

``THIRD_PARTY_TOKEN`` never reaches a result or an error: an API that echoes the request (httpbin's
``/headers``, ``/get``, ``/anything``) would otherwise hand it to whoever submitted the call, and to
anyone the job page is shown to. It is cut from the answer's bytes and again from every key and
string of the decoded JSON (:func:`redact`).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import unquote

import httpx

from offload.retries import PermanentError, RetryLater, backoff_delay

MAX_BODY_BYTES = 64 * 1024
"""Most of the answer kept in the job result; the rest is cut (``truncated``)."""

REDACTED = "[redacted]"
"""What stands in a result where a secret was."""


class APIUnavailable(RetryLater):
    """The API did not answer usefully this time (timeout, connection, 429, 5xx); try again later."""


class APIRejected(PermanentError):
    """The API refused the request (4xx, or an unexpected redirect); the same call would fail again."""


def target_url(base: str, path: str) -> httpx.URL:
    """Return ``path`` (with its query) under ``base``; refuse anything that leaves it."""
    root = httpx.URL(base)
    url = httpx.URL(str(root).rstrip("/") + path)
    prefix = root.raw_path.split(b"?")[0].rstrip(b"/")
    inside = url.raw_path == prefix or url.raw_path.startswith(prefix + b"/") or url.raw_path.startswith(prefix + b"?")
    escapes = ".." in unquote(path.split("?")[0]).split("/")  # servers that decode %2e%2e would climb
    if (url.scheme, url.host, url.port) != (root.scheme, root.host, root.port) or not inside or escapes:
        raise APIRejected(f"{path!r} does not stay under THIRD_PARTY_URL")
    return url


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Return the wait a ``Retry-After`` header asks for (seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def call(config: Mapping[str, Any], path: str, payload: Any = None, retry_number: int = 0) -> dict[str, Any]:
    """Make one request (GET, or POST with a JSON ``payload``) and return what came back.

    ``retry_number`` (0 on the first attempt) sets the backoff a transient failure asks for.
    """
    url = target_url(config["OFFLOAD_THIRD_PARTY_URL"], path)
    method = "GET" if payload is None else "POST"
    what = f"{method} {path}"
    delay = backoff_delay(
        retry_number, config["OFFLOAD_THIRD_PARTY_BACKOFF_BASE"], config["OFFLOAD_THIRD_PARTY_BACKOFF_CAP"]
    )
    connect, read = config["OFFLOAD_THIRD_PARTY_CONNECT_TIMEOUT"], config["OFFLOAD_THIRD_PARTY_READ_TIMEOUT"]
    headers = {"User-Agent": "Offload (+rq worker)", "Accept": "application/json, text/*;q=0.5"}
    if config["OFFLOAD_THIRD_PARTY_TOKEN"]:
        headers["Authorization"] = f"Bearer {config['OFFLOAD_THIRD_PARTY_TOKEN']}"

    started = time.perf_counter()
    try:
        with (
            httpx.Client(timeout=httpx.Timeout(read, connect=connect), headers=headers) as client,
            client.stream(method, url, json=payload) as response,
        ):
            body, truncated = _read_capped(response, secret=config["OFFLOAD_THIRD_PARTY_TOKEN"])
    except httpx.ConnectTimeout:
        raise APIUnavailable(f"could not connect within {connect} s ({what})", delay) from None
    except httpx.TimeoutException:
        raise APIUnavailable(f"no answer within {read} s ({what})", delay) from None
    except httpx.TransportError as exc:
        raise APIUnavailable(f"connection failed: {exc or type(exc).__name__} ({what})", delay) from None
    elapsed_ms = round((time.perf_counter() - started) * 1000, 1)

    status = f"{response.status_code} {response.reason_phrase}".strip()
    if response.status_code == 429 or response.status_code >= 500:
        asked = retry_after_seconds(response.headers.get("Retry-After"))
        if asked is not None:
            if asked > config["OFFLOAD_THIRD_PARTY_RETRY_AFTER_MAX"]:
                limit = config["OFFLOAD_THIRD_PARTY_RETRY_AFTER_MAX"]
                raise APIRejected(f"{status} from {what}: Retry-After {asked:.0f} s is over the {limit} s we wait")
            delay = max(delay, math.ceil(asked))
            raise APIUnavailable(f"{status} from {what} (Retry-After {asked:.0f} s)", delay)
        raise APIUnavailable(f"{status} from {what}", delay)
    if not response.is_success:
        said = " ".join(body[:200].decode("utf-8", "replace").split())  # the API's reason, on one line
        raise APIRejected(f"{status} from {what}" + (f": {said}" if said else ""))

    content_type = response.headers.get("Content-Type", "")
    return {
        "status": response.status_code,
        "method": method,
        "path": path,
        "elapsed_ms": elapsed_ms,
        "content_type": content_type,
        # Again after decoding: JSON can spell the secret with escapes (\u0041...) the bytes did not show.
        "body": redact(_decode(body, content_type, truncated), config["OFFLOAD_THIRD_PARTY_TOKEN"]),
        "truncated": truncated,
    }


def _read_capped(response: httpx.Response, secret: str = "") -> tuple[bytes, bool]:
    """Return up to MAX_BODY_BYTES of the answer, ``secret`` cut out, and whether more was cut off."""
    body = bytearray()
    # Read past the cap by the secret's length, so a secret straddling it is cut out whole.
    cap = MAX_BODY_BYTES + len(secret.encode())
    truncated = False
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) > cap:
            truncated = True
            break
    data = redact(bytes(body[:cap]), secret)
    if len(data) > MAX_BODY_BYTES:
        truncated = True
    return data[:MAX_BODY_BYTES], truncated


def redact(value: Any, secret: str) -> Any:
    """Return ``value`` (bytes, text, or JSON) with every occurrence of ``secret`` replaced by REDACTED."""
    if not secret:
        return value
    if isinstance(value, bytes):
        return value.replace(secret.encode(), REDACTED.encode())
    if isinstance(value, str):
        return value.replace(secret, REDACTED)
    if isinstance(value, list):
        return [redact(item, secret) for item in value]
    if isinstance(value, dict):
        return {redact(key, secret): redact(item, secret) for key, item in value.items()}
    return value


def _decode(body: bytes, content_type: str, truncated: bool) -> Any:
    """JSON answers come back as JSON values; anything else as (a prefix of) its text."""
    if "json" in content_type and not truncated:
        try:
            return json.loads(body)
        except ValueError:
            pass
    return body.decode("utf-8", "replace")
