"""A confirmation step for operator actions: the first POST shows what would happen, only a
second POST with ``confirmed=yes`` (and the page's CSRF token, like every form) does it."""

from __future__ import annotations

from flask import render_template, request


def confirmed() -> bool:
    """True if this POST is the confirming one."""
    return request.form.get("confirmed") == "yes"


def ask(
    question: str,
    detail: str,
    button: str,
    back: str,
    fields: dict[str, str] | None = None,
    danger: bool = True,
):
    """The page asking the operator to confirm: a form POSTing the same fields back, confirmed;
    ``back`` is the page to return to without doing it."""
    return render_template(
        "offload/confirm.html",
        question=question,
        detail=detail,
        button=button,
        action=request.path,
        fields=fields or {},
        danger=danger,
        back=back,
    )
