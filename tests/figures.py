"""The figures the reliability suite measures, printed at the end of the pytest session.

A test takes the ``figures`` fixture and records numbers under a scenario name
(``figures.record("worker killed", accepted=240, finished=240, lost=0)``); the terminal summary
prints one line per scenario, jobs accepted / finished / lost first, and under a scenario that
lost jobs the reason it recorded (``lost_because=...``), or "UNEXPLAINED" when it gave none.
``test-artifacts/figures.json`` keeps them for CI.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

ARTIFACT = Path(__file__).resolve().parent.parent / "test-artifacts" / "figures.json"


class Figures:
    """Numbers per scenario, in the order they were first recorded."""

    def __init__(self) -> None:
        self.scenarios: dict[str, dict[str, Any]] = {}

    def record(self, scenario: str, **values: Any) -> None:
        self.scenarios.setdefault(scenario, {}).update(values)

    def add(self, scenario: str, name: str, amount: int = 1) -> None:
        """Add ``amount`` to a counter (fuzz cases, routes checked)."""
        values = self.scenarios.setdefault(scenario, {})
        values[name] = values.get(name, 0) + amount


_FIGURES = Figures()


@pytest.fixture(scope="session")
def figures() -> Figures:
    return _FIGURES


def _show(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


JOB_FIGURES = ("accepted", "submitted", "finished", "failed", "lost")
"""Shown first, in this order, for every scenario that records them."""


def summary_lines(scenarios: dict[str, dict[str, Any]]) -> list[str]:
    """One line per scenario (job figures first), and under one that lost jobs, why."""
    lines = []
    for scenario, values in scenarios.items():
        shown = {k: values[k] for k in JOB_FIGURES if k in values}
        shown |= {k: v for k, v in values.items() if k not in shown and k != "lost_because"}
        lines.append(f"{scenario}: " + ", ".join(f"{k}={_show(v)}" for k, v in shown.items()))
        if values.get("lost"):
            lines.append(f"    lost {values['lost']} because: {values.get('lost_because') or 'UNEXPLAINED'}")
    return lines


def pytest_terminal_summary(terminalreporter) -> None:
    if not _FIGURES.scenarios:
        return
    terminalreporter.section("reliability figures")
    for line in summary_lines(_FIGURES.scenarios):
        terminalreporter.write_line(line)
    ARTIFACT.parent.mkdir(exist_ok=True)
    ARTIFACT.write_text(json.dumps(_FIGURES.scenarios, indent=2, default=str) + "\n")
