"""In a real browser: Debian's Chromium (``/usr/bin/chromium``), driven by Playwright, against
the real stack (gunicorn + the README's ``rq worker``).

Screenshots of the main pages go to ``SCREENSHOTS_DIR`` (default ``test-artifacts/screenshots``);
``SCREENSHOTS_DIR=docs/screenshots python3 dev.py test -k browser`` refreshes the README's.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright
from rq import Queue
from rq.serializers import JSONSerializer

from offload import Task
from offload.jobs import attempts as job_attempts
from tasks import offload
from tests.conftest import OPERATOR_PASSWORD, OPERATOR_USERNAME, ROOT, refreshed, wait_for
from tests.mailserver import MailServer, mail_server
from tests.thirdparty_server import ThirdParty

TASKS = offload.tasks


pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(os.environ.get("SCREENSHOTS_DIR") or ROOT / "test-artifacts" / "screenshots")

PAYLOADS = (
    '<script>window.__xss = "script"</script>',
    "<img src=x onerror=\"window.__xss = 'img'; console.log('xss ran')\">",
    "\"'><svg onload=\"window.__xss = 'svg'\">",
)
PAYLOAD = " ".join(PAYLOADS)
"""Text a user could type anywhere; if any part of it ever runs, ``window.__xss`` is set."""

JOB_URL = re.compile(r"/jobs/[0-9a-f-]{36}$")


@pytest.fixture
def smtp() -> Iterator[MailServer]:
    with mail_server() as server:
        yield server


@pytest.fixture
def stack_env(smtp: MailServer) -> Iterator[dict[str, str]]:
    """Tasks that call out reach servers in this process, never the internet."""
    with ThirdParty() as third_party:
        yield {"THIRD_PARTY_URL": third_party.url, "SMTP_URL": f"smtp://127.0.0.1:{smtp.port}"}


FORM_TASKS = sorted(name for name, task in TASKS.items() if task.own_form is None and task.access == "public")
"""The tasks whose form an anonymous visitor finds on the index page (the newsletter has its own page;
the housekeeping tasks are the operator's, tests/test_access.py)."""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), "install Debian's chromium (apt-get install -y chromium); .ci/run does"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@dataclass
class Tab:
    """A browser tab on the stack, with everything it reported."""

    page: Page
    console: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def shot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)

    def log_in(self, path: str = "/rq/") -> None:
        """Open ``path``, get sent to the login form, log in as the operator and land back on it."""
        self.page.goto(path)
        expect(self.page).to_have_url(re.compile(r"/login\?next="))
        self.page.get_by_label("Username").fill(OPERATOR_USERNAME)
        self.page.get_by_label("Password").fill(OPERATOR_PASSWORD)
        self.page.get_by_role("button", name="Log in").click()
        expect(self.page).to_have_url(re.compile(re.escape(path) + "$"))

    def assert_inert(self, where: str) -> None:
        """No payload ran on this page: no global set, no dialog, no console line from it."""
        assert self.page.evaluate("window.__xss") is None, f"a payload ran on {where}"
        assert not self.dialogs, (where, self.dialogs)
        assert "log: xss ran" not in self.console, (where, self.console)


def open_tab(browser: Browser, base_url: str, width: int = 1280, height: int = 900, **options: Any) -> Tab:
    """A new tab in a fresh context; ``options`` go to ``new_context`` (e.g. ``bypass_csp=True``)."""
    context = browser.new_context(base_url=base_url, viewport={"width": width, "height": height}, **options)
    context.set_default_timeout(20_000)
    tab = Tab(context.new_page())
    tab.page.on("console", lambda message: tab.console.append(f"{message.type}: {message.text}"))
    tab.page.on("pageerror", lambda error: tab.errors.append(str(error)))

    def dismiss(dialog: Any) -> None:
        tab.dialogs.append(dialog.message)
        dialog.dismiss()

    tab.page.on("dialog", dismiss)
    return tab


@pytest.fixture
def tab(browser: Browser, stack) -> Iterator[Tab]:
    tab = open_tab(browser, stack.base_url)
    yield tab
    tab.page.context.close()


def sample_value(task: Task, spec: dict[str, Any]) -> Any:
    """The example declared on the task's field (``Field(examples=[...])``), else its default."""
    if spec.get("examples"):
        return spec["examples"][0]
    if "default" in spec:
        return spec["default"]
    raise AssertionError(f"{task.name}.{spec['name']}: declare a sample with Field(examples=[...]) next to the task")


def fill_field(form: Locator, task: Task, spec: dict[str, Any], value: Any, force_text: bool = False) -> None:
    """Put ``value`` in the form's input for ``spec``; ``force_text`` types it even into number inputs."""
    control = form.locator(f"#{task.name}-{spec['name']}")
    if spec.get("type") == "boolean":
        control.set_checked(bool(value))
    elif spec.get("enum"):
        if force_text:
            control.evaluate("(el, v) => { el.add(new Option(v, v)); el.value = v; }", str(value))
        else:
            control.select_option(str(value))
    else:
        if force_text:
            control.evaluate("el => { el.type = 'text'; el.removeAttribute('maxlength'); }")
        control.fill(str(value))


def submit_task_form(tab: Tab, task: Task, values: dict[str, Any], force_text: bool = False) -> None:
    tab.page.goto("/")
    form = tab.page.locator(f"#task-{task.name} form")
    for spec in task.form_fields():
        fill_field(form, task, spec, values[spec["name"]], force_text)
    form.get_by_role("button", name=re.compile("^Run ")).click()


def job_id_of(tab: Tab) -> str:
    expect(tab.page).to_have_url(JOB_URL)
    return tab.page.url.rsplit("/", 1)[1]


# --------------------------------------------------------------------------- live job page


def test_progress_bar_moves_while_the_job_runs_and_the_end_shows_without_reload(tab: Tab, redis):
    queue = Queue("default", connection=redis, serializer=JSONSerializer)
    job = queue.enqueue("tests.fixtures.step_progress", "browser-steps", 4, meta={"progress": 0})
    page = tab.page
    page.goto(f"/jobs/{job.id}")
    page.evaluate("window.__sameDocument = true")
    progress = page.locator('[data-field="progress"]')
    status = page.locator('[data-field="status"]')

    for step in range(1, 5):
        redis.rpush("browser-steps", "go")
        expect(progress).to_have_js_property("value", step * 25)
        expect(page.locator('[data-field="log"]')).to_contain_text(f"step {step} of 4")
        if step == 2:
            expect(status).to_have_text("started")
            tab.shot("job-running")

    expect(status).to_have_text("finished")
    expect(page.locator('[data-field="result"]')).to_have_text("4")
    expect(page.locator("[data-live-note]")).to_be_hidden()
    assert page.evaluate("window.__sameDocument") is True  # the same document all along: no reload
    assert not tab.errors


@pytest.mark.parametrize("name", FORM_TASKS)
def test_each_task_form_runs_its_job_to_the_end(tab: Tab, name: str):
    task = TASKS[name]

    submit_task_form(tab, task, {spec["name"]: sample_value(task, spec) for spec in task.form_fields()})

    job_id_of(tab)
    page = tab.page
    expect(page.locator('[data-field="status"]')).to_have_text("finished", timeout=120_000)
    expect(page.locator('[data-field="progress"]')).to_have_js_property("value", 100)
    expect(page.locator('[data-show-when="finished"]')).to_be_visible()
    for link in page.locator('a[download]:visible, a[data-field="download"]:visible').all():
        download = page.request.get(link.get_attribute("href"))  # with this browser's cookies
        assert download.ok and download.body(), link.get_attribute("href")
        if download.headers.get("content-type", "").startswith("application/pdf"):
            assert download.body().startswith(b"%PDF-")
    tab.shot(f"job-{name}")
    assert not tab.errors


# --------------------------------------------------------------------------- operators


def test_operator_logs_in_and_finds_the_queue_and_the_job_in_rq_dashboard(tab: Tab):
    page = tab.page
    page.goto("/")
    tab.shot("index")
    crunch = TASKS["crunch_numbers"]
    submit_task_form(tab, crunch, {"limit": 1000})
    job_id = job_id_of(tab)
    expect(page.locator('[data-field="status"]')).to_have_text("finished")
    tab.shot("job-finished")
    page.goto("/jobs")
    expect(page.get_by_role("link", name=job_id[:8])).to_be_visible()
    tab.shot("my-jobs")

    page.goto("/rq/")
    expect(page.get_by_role("heading", name="Operator login")).to_be_visible()
    tab.shot("login")
    tab.log_in("/rq/")

    expect(page.locator("#queues")).to_contain_text("default")
    tab.shot("rq-queues")
    page.goto("/rq/0/view/jobs/default/finished/8/asc/1")
    page.get_by_role("link", name=job_id).click()
    expect(page).to_have_url(re.compile(f"/rq/0/view/job/{job_id}$"))
    expect(page.locator("#job-data")).to_contain_text("Crunch numbers")
    expect(page.locator("#job-data")).to_contain_text("finished")
    tab.shot("rq-job")
    page.goto("/rq/0/view/workers")
    expect(page.locator("#workers tr[data-role=worker]")).to_have_count(1)

    page.goto("/operator/queues")
    expect(page.locator('tr[data-queue="default"] [data-count="finished"]')).to_have_text("1")
    tab.shot("operator-queues")
    page.goto("/operator/jobs?state=finished")
    expect(page.get_by_role("link", name=job_id[:8])).to_be_visible()
    tab.shot("operator-jobs")

    blocked = [line for line in tab.console if "Content Security Policy" in line or "Refused" in line]
    assert not blocked, blocked  # rq-dashboard works under its CSP
    assert not tab.errors


def test_rq_dashboard_requeue_all_button_works_through_csrf(tab: Tab, redis):
    queue = Queue("default", connection=redis, serializer=JSONSerializer)
    failed = queue.enqueue("tests.fixtures.fail_with", "for requeue")
    wait_for(lambda: failed.get_status(refresh=True) == "failed", what="the job to fail")
    tab.log_in("/rq/0/view/jobs/default/failed/8/asc/1")
    page = tab.page
    expect(page.locator(f'tr[data-job-id="{failed.id}"]')).to_be_visible()

    with page.expect_response(lambda response: "/rq/requeue/default" in response.url) as answer:
        page.locator("#requeue-all-btn").click()
        page.locator("#confirmation-modal-yes").click()

    assert (answer.value.request.method, answer.value.status) == ("POST", 200)
    wait_for(lambda: len(job_attempts(refreshed(failed))) == 2, what="the requeued job to run again")


# --------------------------------------------------------------------------- stored XSS


def test_xss_payloads_in_every_field_stay_inert_for_a_logged_in_operator(browser: Browser, stack, redis):
    queue = Queue("default", connection=redis, serializer=JSONSerializer)
    meta = {"note": PAYLOAD, "task": PAYLOAD, "progress": PAYLOAD}
    failed = queue.enqueue("tests.fixtures.log_and_fail", PAYLOAD, description=PAYLOAD, meta=meta)
    finished = queue.enqueue("tests.fixtures.echo", {"text": PAYLOAD, PAYLOAD: [PAYLOAD]}, description=PAYLOAD)
    wait_for(lambda: failed.get_status(refresh=True) == "failed" and finished.get_status(refresh=True) == "finished")
    running = queue.enqueue("tests.fixtures.block_until_released", "xss-release", label=PAYLOAD, description=PAYLOAD)
    wait_for(lambda: running.get_status(refresh=True) == "started", what="the payload job to start")
    job_ids = [failed.id, finished.id, running.id]
    visitor = open_tab(browser, stack.base_url)
    operator = open_tab(browser, stack.base_url)
    try:
        # Every task's form, with the payload in every field (even number inputs, typed as text).
        for task in map(TASKS.get, FORM_TASKS):
            submit_task_form(visitor, task, dict.fromkeys(task.params.model_fields, PAYLOAD), force_text=True)
            visitor.assert_inert(f"the answer to {task.name}'s form")
            strings = {spec["name"] for spec in task.form_fields() if spec.get("type") == "string"}
            if strings:  # the payload in its text fields only: a job the worker runs
                values = {
                    s["name"]: PAYLOAD if s["name"] in strings else sample_value(task, s) for s in task.form_fields()
                }
                submit_task_form(visitor, task, values)
                if JOB_URL.search(visitor.page.url):
                    job_ids.append(job_id_of(visitor))
                visitor.assert_inert(f"{task.name}'s job page")

        operator.log_in("/operator/jobs")
        page = operator.page
        pages = [f"/jobs/{job_id}" for job_id in job_ids] + ["/jobs", "/operator/jobs", "/operator/queues"]
        for url in pages:
            page.goto(url)
            page.wait_for_load_state("networkidle")
            operator.assert_inert(url)
        page.goto(f"/jobs/{failed.id}")
        expect(page.locator('[data-field="traceback"]')).to_contain_text(PAYLOADS[1])  # shown as text
        expect(page.locator('[data-field="log"]')).to_contain_text(PAYLOADS[0])
        operator.shot("xss-job-page")

        for registry in ("failed", "finished", "started"):
            page.goto(f"/rq/0/view/jobs/default/{registry}/8/asc/1")
            expect(page.locator("#jobs tr[data-role=job]").first).to_be_visible()
            operator.assert_inert(f"rq-dashboard's {registry} list")
        page.goto("/rq/0/view/workers")
        expect(page.locator("#workers")).to_contain_text("block_until_released")
        operator.assert_inert("rq-dashboard's workers")
        for job_id in job_ids:
            page.goto(f"/rq/0/view/job/{job_id}")
            expect(page.locator("#job-data")).to_contain_text("Description")
            page.wait_for_load_state("networkidle")
            operator.assert_inert(f"rq-dashboard's view of {job_id}")
        page.goto(f"/rq/0/view/job/{failed.id}")
        expect(page.locator("#job-data")).to_contain_text(PAYLOADS[1])  # printed as text, not markup
        operator.shot("xss-rq-job")
    finally:
        redis.rpush("xss-release", "go")
        visitor.page.context.close()
        operator.page.context.close()


# --------------------------------------------------------------------------- newsletter, scheduling, job control


def test_newsletter_lists_bad_addresses_then_its_batch_page_counts_the_mails_live(tab: Tab, smtp: MailServer):
    page = tab.page
    tab.log_in("/newsletter")  # the newsletter is for signed-in users (tests/test_access.py)
    page.get_by_label("Subject", exact=True).fill(PAYLOAD[:200])
    page.get_by_label("Text", exact=True).fill(PAYLOAD)
    page.get_by_label("Recipients", exact=True).fill("ada@example.org\nbob@example.org\nnot-an-address\n" + PAYLOADS[0])
    page.get_by_role("button", name="Send the newsletter").click()

    expect(page.locator("#invalid-recipients")).to_contain_text("not-an-address")
    expect(page.locator("#invalid-recipients")).to_contain_text(PAYLOADS[0])  # as text
    tab.assert_inert("the refused newsletter form")
    tab.shot("newsletter-invalid")
    page.get_by_label("Skip invalid addresses").check()
    page.get_by_role("button", name="Send the newsletter").click()

    expect(page).to_have_url(re.compile(r"/batches/[0-9a-f]{32}$"))
    expect(page.locator('[data-field="sent"]')).to_have_text("2", timeout=60_000)  # polled, no reload
    expect(page.locator('[data-field="pending"]')).to_have_text("0")
    expect(page.locator("[data-live-note]")).to_be_hidden()
    tab.assert_inert("the batch page")
    tab.shot("newsletter-batch")
    assert smtp.received() == {"ada@example.org": 1, "bob@example.org": 1}
    assert not tab.errors


def schedule_from_form(tab: Tab, seconds: int = 3600) -> str:
    """Submit crunch_numbers from its form to run in ``seconds``; return the job id of the page it lands on."""
    tab.page.goto("/")
    form = tab.page.locator("#task-crunch_numbers form")
    form.locator("summary").click()
    form.get_by_label("Or after (seconds)").fill(str(seconds))
    form.get_by_role("button", name=re.compile("^Run ")).click()
    return job_id_of(tab)


def test_an_operator_cancels_a_job_scheduled_from_its_form(tab: Tab):
    page = tab.page
    job_id = schedule_from_form(tab)
    expect(page.locator('[data-field="status"]')).to_have_text("scheduled")
    expect(page.locator('[data-field="scheduled_for"]')).not_to_have_text("—")

    tab.log_in("/operator/jobs")
    page.goto(f"/jobs/{job_id}")
    page.get_by_role("button", name="Cancel this job").click()
    expect(page.get_by_role("heading", name=f"Cancel job {job_id}?")).to_be_visible()  # asked first
    page.get_by_role("button", name="Cancel the job").click()

    expect(page.locator('[data-field="status"]')).to_have_text("canceled")
    expect(page.get_by_role("button", name="Cancel this job")).to_be_hidden()
    tab.shot("job-canceled")
    assert not tab.errors


def test_the_submitter_cancels_their_own_scheduled_job_from_its_page(tab: Tab):
    page = tab.page
    schedule_from_form(tab)
    expect(page.locator('[data-field="status"]')).to_have_text("scheduled")

    page.get_by_role("button", name="Cancel this job").click()  # no operator login: the submitter's own

    expect(page.locator('[data-field="status"]')).to_have_text("canceled")
    expect(page.locator('[data-field="no-attempts"]')).to_have_text("It never started.")
    expect(page.get_by_role("button", name="Cancel this job")).to_be_hidden()
    assert not tab.errors


# --------------------------------------------------------------------------- phone width


def test_main_pages_fit_a_phone_screen(browser: Browser, stack):
    phone = open_tab(browser, stack.base_url, width=390, height=844)
    page = phone.page
    try:
        submit_task_form(phone, TASKS["crunch_numbers"], {"limit": 1000})
        job_id = job_id_of(phone)
        expect(page.locator('[data-field="status"]')).to_have_text("finished")
        phone.log_in("/operator/queues")
        for name, url in [
            ("phone-index", "/"),
            ("phone-job", f"/jobs/{job_id}"),
            ("phone-my-jobs", "/jobs"),
            ("phone-operator-queues", "/operator/queues"),
            ("phone-operator-jobs", "/operator/jobs"),
        ]:
            page.goto(url)
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"{url} is {overflow}px wider than a phone"
            if name in ("phone-index", "phone-job"):
                phone.shot(name)
    finally:
        page.context.close()
