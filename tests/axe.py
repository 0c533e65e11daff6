"""axe-core in a Playwright page: which accessibility rules a page breaks, in light and dark mode.

axe-core's script ships inside the pinned ``axe-playwright-python`` wheel (no download at run time).
Use ``assert_accessible(page, "where")`` on a page that is already open; it checks the page as it
is in both colour schemes (``emulate_media``) and fails with every violation and the elements that
break it.
"""

from __future__ import annotations

from typing import Any

from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page

COLOR_SCHEMES = ("light", "dark")

_AXE = Axe()

_NO_TRANSITIONS = """() => {
  const sheet = new CSSStyleSheet();
  sheet.replaceSync("*, *::before, *::after { transition: none !important; }");
  document.adoptedStyleSheets = [...document.adoptedStyleSheets, sheet];
}"""
"""Pico fades colours when the scheme changes; without this axe would read a colour mid-fade.
(A constructed style sheet: the pages' Content-Security-Policy refuses a <style> element.)"""


def violations(page: Page) -> list[dict[str, Any]]:
    """Return axe-core's violations on ``page`` as it is now (its ``results.violations``)."""
    return _AXE.run(page).response["violations"]


def describe(found: list[dict[str, Any]]) -> str:
    """One line per violation and element: rule id, impact, what is wrong, and the element's selector."""
    lines = []
    for violation in found:
        for node in violation["nodes"]:
            summary = (node.get("failureSummary") or "").replace("\n", " ")
            lines.append(f"{violation['id']} ({violation['impact']}): {node['target']} {summary}")
    return "\n".join(lines)


def settle(page: Page) -> None:
    """Wait until the page's CSS transitions have finished: Pico fades link colours over 0.2 s when
    the colour scheme changes, and axe would measure the colours half-way."""
    # Transitions only: an endless animation (Pico's busy spinner, an indeterminate progress bar)
    # never finishes; and never longer than 2 s.
    page.evaluate(
        """() => Promise.race([
            Promise.all(document.getAnimations().filter((a) => a instanceof CSSTransition).map((a) => a.finished)),
            new Promise((resolve) => setTimeout(resolve, 2000)),
        ])"""
    )


def assert_accessible(page: Page, where: str) -> None:
    """Fail unless axe-core finds no violation on ``page`` in light mode and in dark mode."""
    problems = []
    page.evaluate(_NO_TRANSITIONS)
    try:
        for scheme in COLOR_SCHEMES:
            page.emulate_media(color_scheme=scheme)  # type: ignore[arg-type]
            settle(page)
            found = violations(page)
            if found:
                problems.append(f"{where}, {scheme} mode:\n{describe(found)}")
    finally:
        page.emulate_media(color_scheme=None)
    assert not problems, "\n\n".join(problems)
