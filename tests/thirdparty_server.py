"""A real HTTP server in the test process that behaves like a flaky third-party API.

Its paths pick the behaviour: ``/flaky/<name>?fail=N&status=S[&retry_after=T]`` fails N times
with status S then answers 200; ``/bad`` always answers 400; ``/hang`` never answers in time;
``/slow?seconds=T`` answers after T seconds and counts how many calls overlap; ``/get``,
``/headers`` and ``/anything`` answer 200 like httpbin.org's, echoing the request's headers (the
task's default path is ``/get``); ``/text/headers`` echoes them as plain text.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from http.server import ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from tests.jsonhttp import JSONHandler


class ThirdParty:
    """A real HTTP server on a free port; records every call and the most calls at once."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.active = 0
        self.most_active = 0
        self.lock = threading.Lock()
        self.closing = threading.Event()
        """Set when the server closes: a call still waiting (``/hang``, ``/slow``) answers at once."""
        handler = type("Handler", (_Handler,), {"api": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ThirdParty:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()


class _Handler(JSONHandler):
    api: ThirdParty

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {key: values[0] for key, values in parse_qs(url.query).items()}
        with self.api.lock:
            self.api.calls[url.path] += 1
            count = self.api.calls[url.path]
        if url.path.startswith("/flaky/"):
            if count <= int(query["fail"]):
                headers = {"Retry-After": query["retry_after"]} if "retry_after" in query else {}
                return self.answer(int(query["status"]), {"error": "try again", "call": count}, headers)
            return self.answer(200, {"ok": True, "call": count})
        if url.path == "/get":
            return self.answer(200, {"args": query, "headers": dict(self.headers), "url": self.path})
        if url.path == "/headers":
            return self.answer(200, {"headers": dict(self.headers)})
        if url.path.startswith("/anything"):
            return self.answer(200, {"method": "GET", "args": query, "headers": dict(self.headers), "url": self.path})
        if url.path == "/text/headers":
            return self.answer_text(200, str(self.headers))
        if url.path == "/bad":
            return self.answer(400, {"error": "missing field"})
        if url.path == "/hang":
            self.api.closing.wait(30)
            return self.answer(200, {"late": True})
        if url.path == "/slow":
            with self.api.lock:
                self.api.active += 1
                self.api.most_active = max(self.api.most_active, self.api.active)
            self.api.closing.wait(float(query["seconds"]))  # the latency, cut short when the server closes
            with self.api.lock:
                self.api.active -= 1
            return self.answer(200, {"slow": True})
        return self.answer(404, {"error": "no such path"})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if urlsplit(self.path).path.startswith("/anything"):  # httpbin's: the request, headers and all
            return self.answer(200, {"method": "POST", "json": body, "headers": dict(self.headers), "url": self.path})
        self.answer(201, {"received": body, "auth": self.headers.get("Authorization")})

    def answer_text(self, status: int, text: str) -> None:
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
