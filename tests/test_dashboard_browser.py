"""Issue 14's attacks on rq-dashboard, rerun as written, in Chromium against the real stack:
markup in a job's result keys (``call_api`` echoing a payload, submitted anonymously) and in a
queue's name must show as text, with the dashboard's CSP on and with it bypassed (so the
escaping alone is proven, not the CSP)."""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.sync_api import Browser, expect
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from tests.conftest import ended
from tests.test_browser import Tab, browser, open_tab, smtp, stack_env  # noqa: F401 - fixtures shared with it

pytestmark = pytest.mark.e2e

RED_STYLE = "<style>body{background:red}</style>"
IMG_ONERROR = "<img src=x onerror=window.__xss=1>"
RED = "rgb(255, 0, 0)"


@pytest.fixture(params=[False, True], ids=["csp-on", "csp-bypassed"])
def operator(request: pytest.FixtureRequest, browser: Browser, stack) -> Tab:  # noqa: F811 - the imported fixture
    """A logged-in operator's tab; with ``csp-bypassed`` the browser ignores every Content-Security-Policy."""
    tab = open_tab(browser, stack.base_url, bypass_csp=request.param)
    yield tab
    tab.page.context.close()


def assert_markup_shown_as_text(tab: Tab, where: str) -> None:
    """No injected style applied, no injected element, no script ran."""
    page = tab.page
    page.wait_for_load_state("networkidle")
    tab.assert_inert(where)
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") != RED, f"injected style applied on {where}"
    assert page.locator("img[src=x], style:not(head style)").count() == 0, f"markup inserted on {where}"


def test_markup_keys_echoed_into_a_call_api_result_stay_text_in_rq_dashboard(operator: Tab, stack, redis):
    payload = f'{{"{RED_STYLE}": 1, "{IMG_ONERROR}": 2}}'
    with httpx.Client(base_url=stack.base_url, timeout=10) as anonymous:
        answer = anonymous.post("/api/jobs", json={"task": "call_api", "params": {"path": "/post", "payload": payload}})
    assert answer.status_code == 202, answer.text
    job = ended(Job.fetch(answer.json()["id"], connection=redis, serializer=JSONSerializer))
    assert job.get_status() == "finished", job.latest_result()
    assert RED_STYLE in str(job.return_value())  # the API echoed the key into the result

    operator.log_in(f"/rq/0/view/job/{job.id}")
    page = operator.page
    expect(page.locator("#job-data")).to_contain_text("Result")

    assert_markup_shown_as_text(operator, "the job view")
    expect(page.locator("#job-data")).to_contain_text(RED_STYLE)  # printed literally
    expect(page.locator("#job-data")).to_contain_text(IMG_ONERROR)
    page.goto("/rq/0/view/jobs/default/finished/8/asc/1")
    expect(page.locator(f'tr[data-job-id="{job.id}"]')).to_be_visible()
    assert_markup_shown_as_text(operator, "the finished jobs list")


def test_a_queue_named_with_markup_shows_its_name_as_text_on_every_dashboard_page(operator: Tab, redis):
    name = f"{IMG_ONERROR}<style>body{{background:red}}"  # no "/": rq-dashboard puts the name in its URLs
    job = Queue(name, connection=redis, serializer=JSONSerializer).enqueue("tests.fixtures.echo", 1)

    operator.log_in("/rq/")
    page = operator.page
    expect(page.locator("#queues tr[data-role=queue]").first).to_be_visible()
    assert_markup_shown_as_text(operator, "the queues page")
    expect(page.locator("#queues")).to_contain_text(name)
    page.locator("#queues tr[data-role=queue]", has_text=name).get_by_role("link").first.click()
    expect(page).to_have_url(re.compile(r"/rq/0/view/jobs/.+/queued/8/asc/1$"))
    expect(page.locator(f'tr[data-job-id="{job.id}"]')).to_be_visible()
    assert_markup_shown_as_text(operator, "the queue's jobs list")
    page.goto(f"/rq/0/view/job/{job.id}")
    expect(page.locator("#job-data")).to_contain_text(name)
    assert_markup_shown_as_text(operator, "the job view")
    page.goto("/rq/0/view/workers")
    expect(page.locator("#workers tr[data-role=worker]")).to_have_count(1)
    assert_markup_shown_as_text(operator, "the workers page")
