"""run_model: real inference with py3langid's shipped model, loaded once per worker before the fork."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest

from offload.workloads.inference import identify_language
from tests.conftest import ROOT, wait_for

SAMPLES = {
    "de": "Der schnelle braune Fuchs springt über den faulen Hund.",
    "fr": "Le vif renard brun saute par-dessus le chien paresseux.",
    "en": "The quick brown fox jumps over the lazy dog.",
    "es": "El veloz zorro marrón salta sobre el perro perezoso mientras los niños juegan en el parque.",
    "ru": "Быстрая коричневая лиса прыгает через ленивую собаку.",
}


@pytest.mark.parametrize(("language", "text"), SAMPLES.items())
def test_the_model_identifies_the_language(language, text):
    result = identify_language(text, top=3)

    assert result["language"] == language
    assert result["probability"] > 0.5
    assert result["candidates"][0]["language"] == language and len(result["candidates"]) == 3
    assert result["inference_ms"] > 0


def test_a_second_call_in_the_same_process_reuses_the_loaded_model():
    identify_language("warm up")

    result = identify_language(SAMPLES["fr"])

    assert result["model_preloaded"] is True
    assert result["model_load_ms"] == 0


def cold_run(text: str) -> tuple[dict, float]:
    """Run the task in a fresh process, as a worker that did not preload would: result, wall seconds."""
    code = "import json, sys, tasks; print(json.dumps(tasks.run_model(sys.argv[1])))"
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, text], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout), time.perf_counter() - started


@pytest.mark.e2e
def test_jobs_on_a_warm_worker_never_load_the_model_and_show_the_inference_time(http):
    token = re.search(r'name="csrf_token" value="([^"]+)"', http.get("/").text).group(1)
    from_form = http.post("/tasks/run_model", data={"csrf_token": token, "text": SAMPLES["de"], "top": "2"})
    assert from_form.status_code == 303
    api_urls = ["/api" + from_form.headers["Location"]]
    for language in ("fr", "ru"):
        created = http.post("/api/jobs", json={"task": "run_model", "params": {"text": SAMPLES[language]}})
        assert created.status_code == 202
        api_urls.append(created.headers["Location"])

    jobs = [wait_for(lambda url=url: (j := http.get(url).json())["ended"] and j, timeout=60) for url in api_urls]

    assert [job["status"] for job in jobs] == ["finished"] * 3
    assert [job["result"]["language"] for job in jobs] == ["de", "fr", "ru"]
    for job in jobs:  # each job ran in its own forked work horse, and none loaded the model
        assert job["result"]["model_preloaded"] is True
        assert job["result"]["model_load_ms"] == 0
        assert "inference_ms" in http.get(job["url"]).text

    cold, cold_wall = cold_run(SAMPLES["de"])
    assert cold["model_preloaded"] is False and cold["model_load_ms"] > 0
    warm = jobs[0]
    print(
        "\nrun_model, warm worker vs cold load:\n"
        f"  warm job: inference {warm['result']['inference_ms']:.2f} ms, model load 0 ms, "
        f"started→ended {warm['duration_seconds'] * 1000:.0f} ms\n"
        f"  cold:     inference {cold['inference_ms']:.2f} ms, model load {cold['model_load_ms']:.0f} ms "
        f"(numpy import + weights), fresh process {cold_wall * 1000:.0f} ms in all"
    )
