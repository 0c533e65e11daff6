"""``flask offload ...``: the worker of the host app, with RQ's own worker options."""

from __future__ import annotations

import os

import click
from flask import current_app
from flask.cli import ScriptInfo, with_appcontext
from rq.defaults import DEFAULT_WORKER_CLASS

from offload.settings import APP_ENV

WORKER_CLASS = "offload.worker.OffloadWorker"


@click.group("offload", help="Offload: run the worker that takes this app's jobs.")
def offload_commands() -> None:
    """The ``flask offload`` command group."""


@offload_commands.command(
    "worker",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": True},
    add_help_option=False,
)
@click.argument("rq_args", nargs=-1, type=click.UNPROCESSED)
@with_appcontext
def worker_command(rq_args: tuple[str, ...]) -> None:
    """Run an Offload worker for this app: ``rq worker``'s options (``--burst``, ``--with-scheduler``,
    ``--name``, ``--max-jobs``, queue names, ...), with this app's Redis, queues and context, and
    ``--slots N``: jobs run at once (WORKER_SLOTS)."""
    from rq.cli.workers import worker as rq_worker  # the stock command, its options and checks

    from offload.worker.host import bind

    args = list(rq_args)
    if "--help" in args:  # help only: nothing bound, nothing set for a worker that does not start
        click.echo(
            "flask offload worker: rq worker's options (below), with this app's Redis and queues unless given,\n"
            "and --slots N: jobs run at once (WORKER_SLOTS; 0: one per CPU on a Fly Machine).\n"
        )
        rq_worker.main(["--help"], prog_name="flask offload worker", standalone_mode=True)
        return
    app = current_app._get_current_object()  # type: ignore[attr-defined]  # the app itself, not the proxy
    bind(app)
    # Processes this worker starts (on-demand workers it hands work on to) load the same app.
    info = click.get_current_context().find_object(ScriptInfo)
    os.environ.setdefault(APP_ENV, (info.app_import_path if info else None) or app.import_name)
    slots = _take_option(args, "--slots")
    if slots is not None:
        if not slots.isdigit():
            raise click.UsageError(f"--slots must be a whole number (0: one per CPU on a Fly Machine), got {slots!r}")
        app.config["OFFLOAD_WORKER_SLOTS"] = int(slots)  # read by the worker (slots.py)
    params = rq_worker.make_context("flask offload worker", list(args), resilient_parsing=True).params
    if not params.get("url") and not params.get("config"):
        args += ["--url", app.config["OFFLOAD_REDIS_URL"]]
    if params.get("worker_class") in (None, DEFAULT_WORKER_CLASS):
        args += ["--worker-class", WORKER_CLASS]
    if not params.get("queues") and not params.get("config"):
        args += app.config["OFFLOAD_QUEUES"]
    rq_worker.main(args, prog_name="flask offload worker", standalone_mode=True)


def _take_option(args: list[str], name: str) -> str | None:
    """Remove ``name VALUE`` or ``name=VALUE`` (an option of ours, not rq worker's) from ``args``; return VALUE."""
    for index, arg in enumerate(args):
        if arg == name:
            if index + 1 >= len(args):
                raise click.UsageError(f"{name} needs a value")
            value = args[index + 1]
            del args[index : index + 2]
            return value
        if arg.startswith(name + "="):
            del args[index]
            return arg.partition("=")[2]
    return None
