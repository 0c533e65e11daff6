"""A small closed-loop HTTP load generator: N keep-alive connections, each sending the next
request as soon as the previous answer is read, for a fixed time.

Plain asyncio streams and a hand-written HTTP/1.1 exchange: a full HTTP client costs more
CPU per request than the server under test, and on a 2-core machine the load generator
shares the cores with gunicorn and Redis.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class LoadResult:
    """What one run measured: answers by status and each request's latency in seconds."""

    seconds: float
    statuses: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)

    @property
    def requests_per_second(self) -> float:
        return len(self.latencies) / self.seconds

    def add(self, other: LoadResult) -> None:
        """Count ``other`` (a later window on the same endpoint) as part of this run."""
        self.seconds += other.seconds
        for status, count in other.statuses.items():
            self.statuses[status] = self.statuses.get(status, 0) + count
        self.latencies += other.latencies

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _request(url: str, body: object) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    payload = json.dumps(body).encode()
    head = (
        f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: keep-alive\r\n\r\n"
    )
    return parts.hostname or "127.0.0.1", parts.port or 80, head.encode() + payload


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response; return its status and whether the server keeps the connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers.get("connection", "").lower() != "close"


async def _connection(host: str, port: int, request: bytes, until: float, start: float, result: LoadResult) -> None:
    reader = writer = None
    while time.perf_counter() < until:
        if writer is None:
            reader, writer = await asyncio.open_connection(host, port)
        sent = time.perf_counter()
        writer.write(request)
        status, keep = await _read_response(reader)
        done = time.perf_counter()
        if sent >= start:  # requests sent during the warm-up are not counted
            result.statuses[status] = result.statuses.get(status, 0) + 1
            result.latencies.append(done - sent)
        if not keep:
            writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


async def _run(url: str, body: object, concurrency: int, seconds: float, warmup: float) -> LoadResult:
    host, port, request = _request(url, body)
    start = time.perf_counter() + warmup
    until = start + seconds
    result = LoadResult(seconds=seconds)
    await asyncio.gather(*(_connection(host, port, request, until, start, result) for _ in range(concurrency)))
    return result


def run_load(url: str, body: object, concurrency: int = 16, seconds: float = 10.0, warmup: float = 1.0) -> LoadResult:
    """POST ``body`` as JSON to ``url`` from ``concurrency`` connections for ``seconds`` (after ``warmup``)."""
    return asyncio.run(_run(url, body, concurrency, seconds, warmup))
