"""Run the benchmarks and print the table: ``python3 dev.py bench [--quick] [--only NAME,...]``."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import platform
import sys
import time

from bench import capacity, drain, fanout, footprint, idle, latency, memory, slots, soak, submit
from bench.options import QUICK, Options, progress
from bench.report import Row, render

SCENARIOS = {
    "submit": submit.run,
    "drain": drain.run,
    "latency": latency.run,
    "fanout": fanout.run,
    "memory": memory.run,
    "slots": slots.run,
    "footprint": footprint.run,
    "capacity": capacity.run,
    "soak": soak.run,
}
ALL = ["submit", "drain", "slots", "latency", "fanout", "idle", "memory", "footprint", "capacity"]
OPT_IN = ["soak"]
"""Scenarios only ``--only`` runs (the soak takes hours)."""


def parse(argv: list[str]) -> tuple[Options, list[str]]:
    parser = argparse.ArgumentParser(prog="python3 dev.py bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="every scenario once, short windows (rough figures)")
    parser.add_argument("--only", default=",".join(ALL), help=f"comma-separated scenarios (default: {','.join(ALL)})")
    for option in dataclasses.fields(Options):
        parser.add_argument(
            f"--{option.name.replace('_', '-')}", type=type(option.default), default=None, help=option.__doc__
        )
    args = parser.parse_args(argv)
    options = QUICK if args.quick else Options()
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(Options)}
    overrides = {name: value for name, value in overrides.items() if value is not None}
    names = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(names) - set(ALL) - set(OPT_IN))
    if unknown:
        parser.error(f"unknown scenarios {unknown}; choose from {ALL + OPT_IN}")
    return dataclasses.replace(options, **overrides), names


def main(argv: list[str]) -> int:
    options, names = parse(argv)
    started = time.monotonic()
    rows: list[Row] = []
    with idle.measuring(options) if "idle" in names else contextlib.nullcontext() as idle_cost:
        for name in names:
            if name in SCENARIOS:
                rows += SCENARIOS[name](options)
    if idle_cost is not None:
        rows += idle_cost.rows()
    order = ALL + OPT_IN
    rows.sort(key=lambda row: order.index(row.scenario.replace("-", "")))
    print(
        f"\nOffload benchmarks: {platform.python_implementation()} {platform.python_version()}, "
        f"{platform.machine()}, {_cpus()} CPUs; medians of {options.repeat} repetition(s); "
        f"{time.monotonic() - started:.0f} s\n"
    )
    print(render(rows))
    if idle_cost is not None:
        print("\n" + idle_cost.details())
    not_met = [row for row in rows if row.verdict == "NOT MET"]
    if not_met:
        progress(f"{len(not_met)} target(s) not met")
    return 0


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
