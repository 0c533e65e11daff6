"""The web as fly.toml runs it (``gunicorn app:app`` with gunicorn.conf.py): slow clients cannot
starve it, and its processes are recycled with jitter."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import Stack, process_env, wait_for
from tests.test_deploy_files import gunicorn_settings

SLOW_SOCKETS = 50


def slow_loris(port: int, stop: threading.Event, sent: list[int], index: int) -> None:
    """Open a connection and send a request's headers one byte a second, never finishing them;
    ``sent[index]`` counts the bytes dribbled so far."""
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: offload.test\r\n")
        while not stop.wait(1):
            sock.sendall(b"X")  # an endless header line
            sent[index] += 1


@pytest.mark.e2e
def test_fifty_slow_loris_sockets_do_not_starve_normal_requests(redis_url: str, tmp_path: Path, figures):
    """Before: with 50 sockets sending headers a byte a second, every other request timed out."""
    stack = Stack(redis_url=redis_url, logs=tmp_path, env=process_env(redis_url))
    stop = threading.Event()
    try:
        base = stack.start_web()
        port = int(base.rsplit(":", 1)[1])
        sent = [0] * SLOW_SOCKETS
        lorises = [threading.Thread(target=slow_loris, args=(port, stop, sent, i)) for i in range(SLOW_SOCKETS)]
        for thread in lorises:
            thread.start()
        # The attack has taken hold once every socket has dribbled a few bytes to a server that still waits.
        wait_for(lambda: min(sent) >= 3, what="every slow socket to dribble 3 bytes")

        answered, slowest = 0, 0.0
        with httpx.Client(base_url=base, timeout=10) as http:
            for number in range(40):
                began = time.monotonic()
                page = http.get("/") if number % 2 else http.get("/healthz")
                slowest = max(slowest, time.monotonic() - began)
                assert page.status_code == 200
                answered += 1
        still_open = sum(thread.is_alive() for thread in lorises)
        figures.record(
            "slow clients (50 slow-loris sockets)",
            normal_requests=40,
            answered=answered,
            slowest_s=slowest,
            slow_sockets_still_open=still_open,
        )
        assert answered == 40
    finally:
        stop.set()
        stack.close()
        print(stack.log("web")[-3000:])


def test_web_processes_are_recycled_with_jitter_by_default():
    conf = gunicorn_settings()
    assert conf["worker_class"] == "gevent"
    assert conf["max_requests"] > 0 and 0 < conf["max_requests_jitter"] < conf["max_requests"]

    chosen = gunicorn_settings(GUNICORN_MAX_REQUESTS="50", GUNICORN_MAX_REQUESTS_JITTER="10")
    assert (chosen["max_requests"], chosen["max_requests_jitter"]) == (50, 10)


@pytest.mark.e2e
def test_gunicorn_recycles_a_web_process_after_its_requests_without_dropping_one(redis_url: str, tmp_path: Path):
    env = {**process_env(redis_url), "GUNICORN_MAX_REQUESTS": "20", "GUNICORN_MAX_REQUESTS_JITTER": "5"}
    stack = Stack(redis_url=redis_url, logs=tmp_path, env=env)
    try:
        base = stack.start_web()
        booted = set(re.findall(r"Booting worker with pid: (\d+)", stack.log("web")))
        with httpx.Client(base_url=base, timeout=10) as http:
            for _ in range(120):
                assert http.get("/healthz").status_code == 200

        def recycled() -> set[str]:
            return set(re.findall(r"Booting worker with pid: (\d+)", stack.log("web"))) - booted

        assert wait_for(recycled, what="a web process to be replaced")
        assert "Autorestarting worker after current request" in stack.log("web")
    finally:
        stack.close()
