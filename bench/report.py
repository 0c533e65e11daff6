"""Rows of the benchmark table: a figure, its baseline from the same run, the ratio and the target."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass
class Row:
    """One line of the table. ``target`` checks the ratio (offload / baseline)."""

    scenario: str
    measure: str
    offload: float | None
    baseline: float | None = None
    baseline_name: str = ""
    target: str = ""
    meets: Callable[[float], bool] | None = None
    digits: int = 1
    compare: bool = True
    """False when the two figures are side by side but their ratio means nothing."""

    @property
    def ratio(self) -> float | None:
        if self.offload is None or not self.baseline or not self.compare:
            return None
        return self.offload / self.baseline

    @property
    def verdict(self) -> str:
        if self.meets is None:
            return ""
        if self.ratio is None:
            return "n/a"
        return "met" if self.meets(self.ratio) else "NOT MET"


def at_least(limit: float) -> Callable[[float], bool]:
    return lambda ratio: ratio >= limit


def at_most(limit: float) -> Callable[[float], bool]:
    return lambda ratio: ratio <= limit


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], fraction: float) -> float:
    """The value below which ``fraction`` of ``values`` lie (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def _number(value: float | None, digits: int) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def render(rows: Sequence[Row]) -> str:
    """Return the rows as a Markdown table (readable in a terminal and in the README)."""
    header = ["scenario", "measure", "Offload", "baseline", "baseline is", "ratio", "target", "verdict"]
    lines = [
        [
            row.scenario,
            row.measure,
            _number(row.offload, row.digits),
            _number(row.baseline, row.digits),
            row.baseline_name,
            "-" if row.ratio is None else f"{row.ratio:.2f}",
            row.target,
            row.verdict,
        ]
        for row in rows
    ]
    widths = [max(len(cells[i]) for cells in [header, *lines]) for i in range(len(header))]

    def format_line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)) + " |"

    separator = "|" + "|".join("-" * (width + 2) for width in widths) + "|"
    return "\n".join([format_line(header), separator, *(format_line(cells) for cells in lines)])
