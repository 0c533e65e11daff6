"""The web stays light: it knows each task's form and policy, never the libraries the work needs."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT


def test_the_web_never_imports_the_workers_heavy_libraries(redis_url):
    """Submitting every task from its form and the API leaves fpdf2, numpy, the model and httpx unloaded."""
    code = """
import sys
from app import create_app
client = create_app({"WTF_CSRF_ENABLED": False}).test_client()
assert client.get("/").status_code == 200
for name in ("generate_report", "call_api", "run_model"):
    assert client.post(f"/tasks/{name}", data={}).status_code == 303
    assert client.post("/api/jobs", json={"task": name, "params": {}}).status_code == 202
print(sorted({m.split(".")[0] for m in sys.modules} & {"fpdf", "numpy", "py3langid", "httpx", "PIL", "fontTools"}))
"""
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "REDIS_URL": redis_url},
        capture_output=True,
        text=True,
    )

    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
