"""axe-core over every end-user page, in light and dark mode, in Debian's Chromium: no violation.

The operators' pages are checked the same way with ``tests.axe.assert_accessible``.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect
from rq import Queue
from rq.serializers import JSONSerializer

from tests.axe import assert_accessible
from tests.test_browser import JOB_URL, Tab, browser, smtp, stack_env, tab  # noqa: F401 - fixtures

pytestmark = pytest.mark.e2e


def test_every_end_user_page_has_no_axe_violation_in_light_and_dark_mode(tab: Tab, redis):  # noqa: F811 - fixture
    page = tab.page
    queue = Queue("default", connection=redis, serializer=JSONSerializer)

    page.goto("/")
    assert_accessible(page, "the task forms")

    # A refused form: errors shown next to their fields.
    form = page.locator("#task-crunch_numbers form")
    form.locator("#crunch_numbers-limit").evaluate("el => { el.type = 'text'; }")
    form.locator("#crunch_numbers-limit").fill("lots")
    form.get_by_role("button", name=re.compile("^Run ")).click()
    expect(page.locator(".field-error").first).to_be_visible()
    assert_accessible(page, "a refused task form")

    page.goto("/")
    page.locator("#task-crunch_numbers form #crunch_numbers-limit").fill("1000")
    page.locator("#task-crunch_numbers form").get_by_role("button", name=re.compile("^Run ")).click()
    expect(page).to_have_url(JOB_URL)
    expect(page.locator('[data-field="status"]')).to_have_text("finished")
    assert_accessible(page, "a finished job")

    failed = queue.enqueue("tests.fixtures.fail_with", "it broke")
    page.goto(f"/jobs/{failed.id}")
    expect(page.locator('[data-field="status"]')).to_have_text("failed")
    assert_accessible(page, "a failed job")

    scheduled = queue.enqueue_in(__import__("datetime").timedelta(hours=1), "tests.fixtures.echo", 1)
    page.goto(f"/jobs/{scheduled.id}")
    expect(page.locator('[data-field="status"]')).to_have_text("scheduled")
    assert_accessible(page, "a scheduled job")

    page.goto("/jobs")
    assert_accessible(page, "My jobs")

    page.goto("/jobs/no-such-job")
    assert_accessible(page, "a missing job")
    page.goto("/login")
    assert_accessible(page, "the login form")

    tab.log_in("/newsletter")  # the newsletter is for signed-in users
    assert_accessible(page, "the newsletter form")
    page.get_by_label("Subject", exact=True).fill("Hello")
    page.get_by_label("Text", exact=True).fill("Hi there")
    page.get_by_label("Recipients", exact=True).fill("ada@example.org\nnot-an-address")
    page.get_by_role("button", name="Send the newsletter").click()
    expect(page.locator("#invalid-recipients")).to_contain_text("not-an-address")
    assert_accessible(page, "a refused newsletter")
    page.get_by_label("Skip invalid addresses").check()
    page.get_by_role("button", name="Send the newsletter").click()
    expect(page).to_have_url(re.compile(r"/batches/[0-9a-f]{32}$"))
    expect(page.locator('[data-field="pending"]')).to_have_text("0", timeout=60_000)
    assert_accessible(page, "a newsletter batch")
    page.goto("/jobs")
    assert_accessible(page, "My jobs with a newsletter")
    assert not tab.errors
