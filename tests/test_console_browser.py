"""The operators' console in a real browser (Debian's Chromium, Playwright) against the real stack:
the dashboard's chart updating as jobs finish (and pausing), paging and search, each bulk action,
pause/resume with a real worker, local times, and axe-core on every operator page in light and
dark mode. Screenshots go where tests/test_browser.py puts them (``SCREENSHOTS_DIR``)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import Browser, expect
from rq import Queue
from rq.serializers import JSONSerializer

from offload import holds
from offload.jobs import attempts as job_attempts
from tests.axe import assert_accessible
from tests.conftest import ended, refreshed, wait_for
from tests.test_browser import Tab, browser, open_tab  # noqa: F401 - browser: the module's fixture

pytestmark = pytest.mark.e2e


@pytest.fixture
def operator(browser: Browser, stack) -> Iterator[Tab]:  # noqa: F811 - the fixture imported above
    tab = open_tab(browser, stack.base_url)
    tab.log_in("/operator/queues")
    yield tab
    tab.page.context.close()


def _queue(redis, name: str = "default") -> Queue:
    return Queue(name, connection=redis, serializer=JSONSerializer)


def _failed(redis, count: int, name: str = "default", text: str = "broken") -> list:
    queue = _queue(redis, name)
    jobs = [queue.enqueue("tests.fixtures.fail_with", f"{text} {n}") for n in range(count)]
    for job in jobs:
        ended(job)
    return jobs


def test_the_dashboard_chart_updates_as_jobs_finish_and_stops_while_paused(operator: Tab, redis):
    page = operator.page
    page.goto("/operator/dashboard")
    page.get_by_label("Of").select_option("queue|default")  # the periodic jobs run on "low"
    summary = page.locator("#throughput-summary")
    expect(summary).to_contain_text("Last hour, queue default: 0 finished, 0 failed, 0 retried.")
    line = page.locator("#throughput-chart path.series-finished")
    flat = line.get_attribute("d")
    page.evaluate("window.__sameDocument = true")

    for job in [_queue(redis).enqueue("tests.fixtures.echo", n) for n in range(3)]:
        ended(job)
    _failed(redis, 1, text="dashboard")

    expect(summary).to_contain_text("3 finished, 1 failed", timeout=30_000)  # polled, no reload
    failed_cell = page.locator('#task-totals tr[data-task="tests.fixtures.fail_with"] td[data-outcome="failed"]')
    expect(failed_cell).to_have_text("1")
    to_list = page.locator('#queue-totals tr[data-queue="default"] td[data-outcome="failed"] a')
    expect(to_list).to_have_attribute("href", "/operator/jobs?state=failed&queue=default&since=1h")
    assert line.get_attribute("d") != flat  # the line was redrawn with the new counts
    assert page.evaluate("window.__sameDocument") is True
    operator.shot("console-dashboard")

    page.get_by_role("button", name="Pause updates").click()
    expect(page.get_by_role("button", name="Resume updates")).to_have_attribute("aria-pressed", "true")
    polls: list[str] = []
    page.on("request", lambda request: polls.append(request.url) if "dashboard.json" in request.url else None)
    ended(_queue(redis).enqueue("tests.fixtures.echo", "while paused"))
    page.wait_for_timeout(7_000)  # longer than a poll interval (5 s): checking that nothing happens
    assert polls == [] and "3 finished" in summary.inner_text()

    page.get_by_role("button", name="Resume updates").click()
    expect(summary).to_contain_text("4 finished")
    page.get_by_label("Range").select_option("day")
    expect(summary).to_contain_text("Last day, queue default: 4 finished, 1 failed")
    assert not operator.errors


def test_the_job_list_pages_and_finds_a_job_by_a_word_in_its_arguments(operator: Tab, redis):
    holds.pause_queue(redis, "high")  # the jobs stay queued: a list that does not move under the test
    queue = _queue(redis, "high")
    for n in range(55):
        queue.enqueue("tests.fixtures.echo", {"order": f"order-{n}"})
    wanted = queue.enqueue("tests.fixtures.echo", {"customer": "Zoë Quartermaine"})
    page = operator.page

    page.goto("/operator/jobs?queue=high")
    expect(page.locator("#job-count")).to_have_text("56 jobs")
    expect(page.locator("#jobs tbody tr")).to_have_count(50)
    expect(page.get_by_text("Page 1 of 2")).to_be_visible()
    page.get_by_role("link", name="Older →").click()
    expect(page.get_by_text("Page 2 of 2")).to_be_visible()
    expect(page.locator("#jobs tbody tr")).to_have_count(6)

    page.get_by_label("Job id or a word in its arguments").fill("quartermaine")
    page.get_by_role("button", name="Filter").click()

    expect(page.locator("#job-count")).to_have_text("1 job")
    expect(page.locator(f'tr[data-job-id="{wanted.id}"]')).to_be_visible()
    operator.shot("console-jobs-search")
    assert_accessible(page, "the job list")


def test_times_show_in_the_viewers_time_zone_with_utc_in_the_title(browser: Browser, stack, redis):  # noqa: F811
    job = _queue(redis).enqueue("tests.fixtures.echo", 1)
    created = ended(job).created_at.replace(tzinfo=UTC)
    context = browser.new_context(base_url=stack.base_url, timezone_id="Asia/Tokyo", locale="en-GB")
    tab = Tab(context.new_page())
    try:
        tab.log_in("/operator/jobs")
        cell = tab.page.locator(f'tr[data-job-id="{job.id}"] time')
        tokyo = created + timedelta(hours=9)
        expect(cell).to_contain_text(tokyo.strftime("%H:%M:%S"))
        assert cell.get_attribute("title") == created.strftime("%Y-%m-%d %H:%M:%S UTC")
    finally:
        context.close()


def test_each_bulk_action_asks_first_then_acts_and_is_logged(operator: Tab, redis):
    page = operator.page
    failed = _failed(redis, 2, name="low")

    page.goto("/operator/jobs?state=failed&queue=low")
    page.get_by_role("button", name="Retry all 2 failed…").click()
    expect(page.get_by_role("heading", name="Retry 2 failed jobs?")).to_be_visible()
    operator.shot("console-confirm")
    assert_accessible(page, "the confirmation page")
    assert all(job.get_status(refresh=True) == "failed" for job in failed)
    page.get_by_role("button", name="Retry 2 jobs").click()
    expect(page.get_by_role("status")).to_contain_text("Retried 2 failed jobs.")
    for job in failed:  # retried, run again by the stack's worker, failed again
        wait_for(lambda job=job: len(job_attempts(refreshed(job))) == 2, what="the retry")

    for job in failed:
        ended(job)
    page.goto("/operator/jobs?state=failed&queue=low")
    page.get_by_role("button", name="Delete all 2 failed…").click()
    page.get_by_role("button", name="Delete 2 jobs").click()
    expect(page.get_by_role("status")).to_contain_text("Deleted 2 failed jobs.")
    assert not any(redis.exists(job.key) for job in failed)

    later = datetime.now(UTC) + timedelta(hours=1)
    scheduled = [_queue(redis).enqueue_at(later, "tests.fixtures.echo", n) for n in range(3)]
    page.goto("/operator/jobs?state=scheduled")
    page.get_by_role("button", name="Cancel all 3 scheduled…").click()
    page.get_by_role("button", name="Cancel 3 jobs").click()
    expect(page.get_by_role("status")).to_contain_text("Canceled 3 scheduled jobs.")
    assert all(job.get_status(refresh=True) == "canceled" for job in scheduled)

    holds.pause_queue(redis, "high")
    waiting = [_queue(redis, "high").enqueue("tests.fixtures.echo", n) for n in range(4)]
    page.goto("/operator/queues")
    page.get_by_role("button", name="Empty queue high").click()
    expect(page.get_by_role("heading", name="Empty queue high?")).to_be_visible()
    page.get_by_role("button", name="Delete 4 waiting jobs").click()
    expect(page.get_by_role("status")).to_contain_text("Emptied queue high: 4 waiting jobs deleted.")
    assert not any(redis.exists(job.key) for job in waiting)

    page.goto("/operator/log")
    log = page.locator("#operator-log")
    for action in ("retry failed jobs", "delete failed jobs", "cancel scheduled jobs", "empty queue"):
        expect(log).to_contain_text(action)
    operator.shot("console-log")
    assert_accessible(page, "the operator log")
    assert not operator.errors


def test_a_paused_queue_is_skipped_by_the_worker_until_resumed_from_the_page(operator: Tab, redis):
    page = operator.page
    page.goto("/operator/queues")
    page.get_by_role("button", name="Pause queue default").click()
    row = page.locator('tr[data-queue="default"]')
    expect(row).to_contain_text("paused")
    expect(page.get_by_role("status")).to_contain_text("Queue default is paused")

    held = _queue(redis).enqueue("tests.fixtures.echo", "held")
    for n in range(3):  # the worker is alive and taking jobs from the other queues meanwhile
        ended(_queue(redis, "low").enqueue("tests.fixtures.echo", n))
    assert held.get_status(refresh=True) == "queued"
    page.reload()
    expect(row.locator('[data-count="queued"]')).to_have_text("1")
    operator.shot("console-queues-paused")
    assert_accessible(page, "the queues page with a paused queue")

    page.get_by_role("button", name="Resume queue default").click()

    assert ended(held).return_value() == "held"
    expect(row).not_to_contain_text("paused")


def test_operator_pages_have_no_axe_violation_in_light_and_dark_mode(operator: Tab, redis):
    _failed(redis, 1)
    page = operator.page
    for path in ("/operator/dashboard", "/operator/jobs", "/operator/queues", "/operator/log"):
        page.goto(path)
        page.wait_for_load_state("networkidle")
        assert_accessible(page, path)
    assert not operator.errors
