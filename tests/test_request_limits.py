"""Oversized request bodies through gunicorn, sent from a raw socket that reads the answer as
soon as one comes (as curl and browsers do): refused with a 413 before most of the body is read,
whether it declares its length or is chunked without one."""

from __future__ import annotations

import re
import select
import socket
import time
from urllib.parse import urlsplit

import pytest

from tests.conftest import queued_job_count

pytestmark = pytest.mark.e2e

MIB = 1024 * 1024
LIMIT = 2 * MIB  # the shipped MAX_CONTENT_LENGTH
PIECE = b" " * 65536


def send_body(base_url: str, path: str, size: int, chunked: bool = False) -> tuple[int | None, int]:
    """POST ``size`` bytes of JSON whitespace to ``path``; return (the answer's status or None, bytes sent).

    The body is written only as fast as the server takes it; the answer is read the moment it
    arrives, so "bytes sent" is what the server read plus what the sockets' buffers held.
    """
    url = urlsplit(base_url)
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}"
    head = f"POST {path} HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Type: application/json\r\n{framing}\r\n\r\n"
    sent, answer = 0, b""
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(head.encode())
        sock.setblocking(False)
        deadline = time.monotonic() + 60
        pending = b""
        while time.monotonic() < deadline and b"\r\n" not in answer:
            writing = [sock] if sent < size or pending else []
            readable, writable, _ = select.select([sock], writing, [], 1)
            try:
                if readable:
                    data = sock.recv(65536)
                    if not data:
                        break
                    answer += data
                elif writable:
                    if not pending:
                        piece = PIECE[: size - sent]
                        pending = (b"%x\r\n%s\r\n" % (len(piece), piece)) if chunked else piece
                        sent += len(piece)
                        if chunked and sent >= size:
                            pending += b"0\r\n\r\n"
                    pending = pending[sock.send(pending) :]
            except (BrokenPipeError, ConnectionResetError):
                break
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else None
    return status, sent


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_50_mb_body_is_refused_with_413_before_most_of_it_is_read(stack, redis, figures, chunked):
    status, sent = send_body(stack.base_url, "/api/jobs", 50 * MIB, chunked=chunked)

    figures.record(
        f"50 MB body ({'chunked' if chunked else 'Content-Length'})", status=status, mib_sent=round(sent / MIB, 1)
    )
    assert status == 413
    # Before: 20.1 MiB taken (the 413 handler drained 8x the limit); what the sockets buffer stays below 8 MiB.
    assert sent < 8 * MIB, f"{sent / MIB:.1f} MiB were taken before the refusal"
    assert queued_job_count(redis) == 0


def test_a_chunked_body_under_the_limit_still_reaches_the_view(http, redis):
    pieces = [b'{"task": "crunch_numbers", ', b'"params": {"limit": 100}', b" " * (LIMIT - 100), b"}"]

    response = http.post("/api/jobs", content=iter(pieces), headers={"Content-Type": "application/json"})

    assert response.request.headers["Transfer-Encoding"] == "chunked"
    assert response.status_code == 202, response.text


def test_a_chunked_form_upload_under_the_limit_still_reaches_the_view(http, redis):
    boundary = "offload-test-boundary"
    token = re.search(r'name="csrf_token" value="([^"]+)"', http.get("/").text).group(1)
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n{token}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="limit"\r\n\r\n100\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="attachment"; filename="a.bin"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + b"\0" * (LIMIT // 2)
        + f"\r\n--{boundary}--\r\n".encode()
    )
    pieces = [body[start : start + 65536] for start in range(0, len(body), 65536)]

    response = http.post(
        "/tasks/crunch_numbers",
        content=iter(pieces),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )

    assert response.request.headers["Transfer-Encoding"] == "chunked"
    assert response.status_code == 303 and "/jobs/" in response.headers["Location"], response.text[-500:]


def test_a_malformed_chunked_body_is_a_400_not_a_500(stack, redis):
    """A chunk size that is not hex: gunicorn's reader raises while Offload reads the body for its size check."""
    address = urlsplit(stack.base_url)
    with socket.create_connection((address.hostname, address.port), timeout=10) as connection:
        connection.sendall(
            b"POST /api/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"
        )
        status_line = connection.recv(200).split(b"\r\n", 1)[0]

    assert status_line.startswith(b"HTTP/1.1 400"), status_line
    assert queued_job_count(redis) == 0
