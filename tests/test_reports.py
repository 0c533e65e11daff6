"""generate_report: the PDF, the artifact store, the form and the download, on real parts.

The end-to-end tests run the README's ``rq worker`` command and gunicorn, download the file
over HTTP and read its text back with pypdf.
"""

from __future__ import annotations

import io
import os
import re

import pytest
from pypdf import PdfReader

from offload import settings
from offload.artifacts import ArtifactTooLarge, RedisArtifactStore
from offload.retries import PermanentError
from offload.workloads.reports import build_pdf, file_name, parse_table
from tests.conftest import queued_job_count, wait_for


def pdf_text(data: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)


# --------------------------------------------------------------------------- the PDF


def test_pdf_holds_the_title_the_text_and_every_table_cell():
    rows = [["Region", "Q1"], ["North", "120"], ["Süd", "98"]]

    data = build_pdf("Quarterly “sales”", "First paragraph.\n\nSecond — with a dash.", rows, font_path="")

    assert data.startswith(b"%PDF-")
    text = pdf_text(data)
    assert "Quarterly" in text and "First paragraph." in text and "Second" in text
    for cell in ("Region", "Q1", "North", "120", "Süd", "98"):
        assert cell in text


def test_pdf_with_a_unicode_font_keeps_text_core_fonts_cannot():
    font = settings.DEFAULTS["REPORT_FONT"]
    if not os.path.exists(font):
        pytest.fail(f"{font} is missing: install Debian's fonts-dejavu-core (.ci/run does)")

    text = pdf_text(build_pdf("Отчёт “Q1”", "Ελληνικά και русский.", [["Città", "€"]], font_path=font))

    assert "Отчёт" in text and "“Q1”" in text and "Ελληνικά" in text and "€" in text


def test_a_long_table_flows_onto_more_pages():
    rows = [["n", "square"]] + [[str(n), str(n * n)] for n in range(200)]

    data = build_pdf("Squares", "", rows)

    reader = PdfReader(io.BytesIO(data))
    assert len(reader.pages) > 1
    assert "39601" in pdf_text(data)  # 199², the last row


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("\n".join(["a"] * 201), "at most 200 rows"),
        ("a,b,c,d,e,f,g,h,i", "row 1 has 9 cells"),
        ("a\n" + "x" * 101, "row 2 has a cell longer than 100"),
    ],
)
def test_table_limits_are_enforced_with_the_row_named(table, message):
    with pytest.raises(ValueError, match=message):
        parse_table(table)


def test_ragged_rows_are_padded_and_quoted_cells_keep_their_commas():
    assert parse_table('Name,Note\n"Smith, J",ok\nSolo\n') == [["Name", "Note"], ["Smith, J", "ok"], ["Solo", ""]]


@pytest.mark.parametrize(
    ("title", "name"),
    [("Quarterly sales", "quarterly-sales.pdf"), ('../../etc/passwd"; x', "etc-passwd-x.pdf"), ("ÄÖÜ", "report.pdf")],
)
def test_file_name_is_safe_for_urls_keys_and_headers(title, name):
    assert file_name(title) == name


# --------------------------------------------------------------------------- the store


def test_store_keeps_the_file_with_the_ttl_it_is_given(redis):
    store = RedisArtifactStore(redis, max_bytes=1000)

    artifact = store.save("job-1", "a.pdf", "application/pdf", b"%PDF-1.7 tiny", ttl=3600)

    assert artifact.to_json() == {"name": "a.pdf", "content_type": "application/pdf", "size": 13}
    assert store.exists("job-1", "a.pdf")
    assert store.open("job-1", "a.pdf") == (artifact, b"%PDF-1.7 tiny")
    assert 3590 < redis.ttl(RedisArtifactStore.key("job-1", "a.pdf")) <= 3600
    assert store.open("job-1", "b.pdf") is None
    assert store.open("job-2", "a.pdf") is None


def test_store_refuses_a_file_over_the_cap_as_a_permanent_error(redis):
    store = RedisArtifactStore(redis, max_bytes=10)

    with pytest.raises(ArtifactTooLarge, match="capped at 10 bytes") as caught:
        store.save("job-1", "big.pdf", "application/pdf", b"x" * 11, ttl=60)

    assert isinstance(caught.value, PermanentError)
    assert not store.exists("job-1", "big.pdf")


@pytest.mark.parametrize("name", ["../x", "a/b", "", ".hidden", "a b", "x" * 101])
def test_store_refuses_unsafe_names(redis, name):
    store = RedisArtifactStore(redis, max_bytes=10)

    with pytest.raises(ValueError, match="unsafe"):
        store.save("job-1", name, "text/plain", b"x", ttl=60)
    assert store.open("job-1", name) is None


# --------------------------------------------------------------------------- the web, in process


def test_bad_table_is_a_400_naming_the_field_and_enqueues_nothing(client, redis):
    response = client.post(
        "/api/jobs", json={"task": "generate_report", "params": {"title": "T", "table": "a,b,c,d,e,f,g,h,i"}}
    )

    assert response.status_code == 400
    assert "row 1 has 9 cells" in response.get_json()["fields"]["params.table"]
    assert queued_job_count(redis) == 0


def test_report_form_has_textareas_for_text_and_table(client):
    page = client.get("/").get_data(as_text=True)

    assert '<textarea id="generate_report-text"' in page
    assert '<textarea id="generate_report-table"' in page


def test_unknown_file_of_an_unknown_job_is_404(client):
    response = client.get("/jobs/no-such-job/files/report.pdf")

    assert response.status_code == 404
    assert "expired" in response.get_data(as_text=True)


# --------------------------------------------------------------------------- end to end


@pytest.mark.e2e
def test_report_from_the_form_downloads_as_a_pdf_with_the_text_back(http, redis):
    token = re.search(r'name="csrf_token" value="([^"]+)"', http.get("/").text).group(1)
    form = {
        "csrf_token": token,
        "title": "Fleet report: Q3",
        "text": "Machines started on demand.\n\nNone idled.",
        "table": "Region,Machines\nams,12\nord,7",
    }

    response = http.post("/tasks/generate_report", data=form)

    assert response.status_code == 303
    job = wait_for(lambda: (j := http.get("/api" + response.headers["Location"]).json())["ended"] and j, timeout=60)
    assert job["status"] == "finished", job
    artifact = job["result"]["artifact"]
    assert artifact["name"] == "fleet-report-q3.pdf"
    assert artifact["content_type"] == "application/pdf"
    assert job["download_url"] == f"/jobs/{job['id']}/files/fleet-report-q3.pdf"
    assert job["download_url"] in http.get(job["url"]).text  # the job page offers it

    download = http.get(job["download_url"])

    assert download.status_code == 200
    assert download.headers["Content-Type"] == "application/pdf"
    assert download.headers["Content-Disposition"] == "attachment; filename=fleet-report-q3.pdf"
    assert len(download.content) == artifact["size"]
    text = pdf_text(download.content)
    assert "Fleet report: Q3" in text and "None idled." in text
    assert "ams" in text and "12" in text and "ord" in text
    # The file lives exactly as long as the job's result (RESULT_TTL, a day by default).
    key = RedisArtifactStore.key(job["id"], artifact["name"])
    assert 86_000 < redis.ttl(key) <= 86_400

    # Once it expires, the download says so instead of failing.
    redis.pexpire(key, 1)
    wait_for(lambda: not redis.exists(key), what="the file to expire")
    expired = http.get(job["download_url"])
    assert expired.status_code == 410
    assert "has expired" in expired.text
    assert "Traceback" not in expired.text


@pytest.mark.e2e
def test_report_from_the_api_finishes_with_the_file_metadata(http):
    created = http.post(
        "/api/jobs", json={"task": "generate_report", "params": {"title": "API report", "table": "a,b\n1,2"}}
    )
    assert created.status_code == 202

    job = wait_for(lambda: (j := http.get(created.headers["Location"]).json())["ended"] and j, timeout=60)

    assert job["status"] == "finished", job
    assert job["result"]["table_rows"] == 2
    assert "API report" in pdf_text(http.get(job["download_url"]).content)
