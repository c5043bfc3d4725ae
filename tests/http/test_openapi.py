"""GET /openapi.json: a valid OpenAPI 3.1 document that describes every route of the app and
every answer of the error table, and that the live server keeps (schemathesis, from the
document served, with a valid token)."""

from __future__ import annotations

import json

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.routing import Route

from proxy.http.errors import ANSWERS, Answer
from tests.harness import run_cli

# The Download Document API's own example id and client: the document's examples use them,
# so schemathesis's explicit examples reach the 200 answers.
EXAMPLE_ID = "doc-abc-123-def-456"
EXAMPLE_CLIENT = {"client_id": "your-client-id", "client_secret": "your-client-secret"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def service(make_module_service, tmp_path_factory):
    service = make_module_service(
        {
            "auth": {
                "clients": [
                    {"client_id": "test-client", "client_secret": "test-secret"},
                    EXAMPLE_CLIENT,
                ]
            }
        }
    )
    folder = tmp_path_factory.mktemp("documents")
    (folder / "report.pdf").write_bytes(b"%PDF-1.4\n" + bytes(range(256)) * 8)
    run_cli(service.config_path, "documents", "add", str(folder / "report.pdf"), "--id", EXAMPLE_ID)
    run_cli(service.config_path, "documents", "add-url", "https://example.com/", "--id", "by-url")
    return service


@pytest.fixture(scope="module")
def document(service) -> dict:
    response = httpx.get(f"{service.base_url}/openapi.json", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    return response.json()


def test_the_document_is_valid_openapi_3_1(document):
    assert document["openapi"].startswith("3.1")
    validate(document)  # raises on the first violation of the OpenAPI 3.1 schema


def test_every_route_is_described(service, document):
    from proxy.app import create_app
    from proxy.config.loading import load_settings

    app = create_app(load_settings(service.config_path))
    served = {
        (route.path.replace(":path}", "}"), method.lower())
        for route in app.routes
        # A mounted app (no methods of its own) is read as a GET of its path.
        for method in ((route.methods or ()) if isinstance(route, Route) else ("GET",))
        # Starlette adds HEAD to every GET; the document names it where it is worth a word.
        if method != "HEAD" or route.path.startswith(("/download/", "/links/", "/archives/"))
    }
    described = {
        (path, method)
        for path, item in document["paths"].items()
        for method in item
        if method in ("get", "head", "post", "put", "patch", "delete", "options")
    }
    assert served == described


def test_every_answer_of_the_error_table_is_described(document):
    text = json.dumps(document)
    answers = [
        answer
        for entry in ANSWERS.values()
        for answer in ([entry] if isinstance(entry, Answer) else entry.values())
    ]
    for answer in answers:
        # A status of an operation's responses, or the statusCode of a shared response.
        assert f'"{answer.status}"' in text or f'"const": {answer.status}' in text, answer
        assert answer.message in text, answer


# The document's examples, then a bounded number of generated cases per operation; the
# coverage phase (every boundary value of every field) would take minutes.
FUZZING = schemathesis.Config.from_dict(
    {"phases": {"coverage": {"enabled": False}, "stateful": {"enabled": False}}}
)


@pytest.fixture(scope="module")
def live_schema(service):
    return schemathesis.openapi.from_url(f"{service.base_url}/openapi.json", config=FUZZING)


@pytest.fixture(scope="module")
def authorization(service) -> dict[str, str]:
    return {"Authorization": f"Bearer {service.token()}"}


schema = schemathesis.pytest.from_fixture("live_schema")


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_live_server_keeps_its_description(case, service, authorization):
    case.call_and_validate(base_url=service.base_url, headers=authorization, checks=CHECKS)
