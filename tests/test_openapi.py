"""The JSON API against its own OpenAPI 3.1 document (``/api/openapi.json``), fuzzed by schemathesis
through the Flask app (WSGI) on a real Redis: no 5xx, and every answer's status, content type,
headers and body match the document."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app import create_app
from tests.conftest import OPERATOR_ACCOUNT

EXAMPLES = 40
"""Requests per operation: enough to reach each documented answer, within a CI run."""

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def test_every_answer_matches_the_document_and_none_is_a_5xx(redis_url: str):
    app = create_app({"TESTING": True, "OFFLOAD_REDIS_URL": redis_url, **OPERATOR_ACCOUNT})
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {f"{operation.method.upper()} {operation.path}" for operation in operations} >= {
        "POST /api/jobs",
        "GET /api/jobs",
        "GET /api/jobs/{job_id}",
        "DELETE /api/jobs/{job_id}",
        "POST /api/newsletters",
    }
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case) -> None:
            case.call_and_validate(checks=CHECKS)

        check()
