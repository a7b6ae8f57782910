"""`/openapi.json` covers every route the app serves, is valid OpenAPI 3.1, and is built from
the models the API validates with; `/docs` renders it from assets the app serves itself.

When `test_every_served_route_is_documented` fails after you add a route, add one
`Op(...)` line for it to `OPERATIONS` in api/openapi.py (the failure names the key).
"""

from __future__ import annotations

import re
from typing import Any

import falcon
import pytest
from openapi_spec_validator import validate

from api import docs, openapi
from api.openapi import OPERATIONS, Op, served_routes
from commands.workflow import RegisterWorkflow
from tests.unit.test_api_harness import Harness, assert_error

HTML_REFERENCES = re.compile(r"""(?:src|href)="([^"]+)\"""")


@pytest.fixture
def document(api: Harness) -> dict[str, Any]:
    result = api.call("GET", "/openapi.json")
    assert result.status_code == 200, result.text
    assert result.headers["Content-Type"].startswith("application/json")
    return dict(result.json)


def documented(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(m.upper(), path) for path, ops in document["paths"].items() for m in ops}


def served(app: falcon.App) -> set[tuple[str, str]]:
    return {(m, openapi.openapi_path(t)[0]) for m, t in served_routes(app)}


def test_every_served_route_is_documented(api: Harness, document: dict[str, Any]) -> None:
    missing = sorted(set(served_routes(api.wsgi)) - set(OPERATIONS))
    assert not missing, f"add these to OPERATIONS in api/openapi.py: {missing}"
    assert served(api.wsgi) - documented(document) == set()


def test_nothing_is_documented_that_is_not_served(api: Harness, document: dict[str, Any]) -> None:
    stale = sorted(set(OPERATIONS) - set(served_routes(api.wsgi)))
    assert not stale, f"OPERATIONS lists routes the app does not serve: {stale}"
    assert documented(document) - served(api.wsgi) == set()


def test_a_route_added_later_is_reported_until_it_is_documented(api: Harness) -> None:
    class AuditExports:
        auth = {"GET": "audit"}  # owners, admins and auditors

        def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
            resp.media = {}

    api.wsgi.add_route("/api/v1/audit/exports", AuditExports())
    key = ("GET", "/api/v1/audit/exports")
    assert key in set(served_routes(api.wsgi)) - set(OPERATIONS)
    with_it = {**OPERATIONS, key: Op("Exports", {200: "application/json"})}
    audit = openapi.document(api.wsgi, with_it)["paths"]["/api/v1/audit/exports"]["get"]
    assert audit["security"] == openapi.ORG_SECURITY  # a role in the organization
    assert {"401", "403", "429"} <= set(audit["responses"])


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    validate(document)  # raises on any violation of the 3.1 meta-schema or of $refs


def test_request_bodies_are_the_command_models(document: dict[str, Any]) -> None:
    body = document["paths"]["/api/v1/workflows"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/RegisterWorkflow"
    }
    component = document["components"]["schemas"]["RegisterWorkflow"]
    own = RegisterWorkflow.model_json_schema(ref_template="#/components/schemas/{model}")
    assert component["properties"] == own["properties"]
    assert component["required"] == ["name"]
    assert component["additionalProperties"] is False  # unknown fields are a 422


def test_parameters_follow_what_the_code_enforces(document: dict[str, Any]) -> None:
    listing = document["paths"]["/api/v1/executions"]["get"]
    params = {p["name"]: p for p in listing["parameters"]}
    assert params["limit"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 200,
                                         "default": 50}  # fmt: skip
    assert params["workflow_id"]["schema"]["format"] == "uuid"
    assert set(params["status"]["schema"]["enum"]) >= {"queued", "completed", "rejected"}
    item = document["paths"]["/api/v1/executions/{execution_id}"]["get"]
    assert item["parameters"][0] == {
        "name": "execution_id", "in": "path", "required": True,
        "schema": {"type": "string", "format": "uuid"},
    }  # fmt: skip


def test_security_and_errors_follow_each_resources_auth(document: dict[str, Any]) -> None:
    paths = document["paths"]
    assert paths["/health"]["get"]["security"] == []
    assert paths["/api/v1/auth/me"]["get"]["security"] == [{"bearer": []}, {"cookie": []}]
    workflows = paths["/api/v1/workflows"]["post"]
    assert {"apiKey": [], "apiKeyTimestamp": [], "apiKeySignature": []} in workflows["security"]
    assert {"400", "401", "403", "409", "413", "415", "422", "429", "500", "503"} <= set(
        workflows["responses"]
    )
    assert workflows["responses"]["422"] == {"$ref": "#/components/responses/Error422"}
    limited = workflows["responses"]["201"]["headers"]
    assert {"X-Request-ID", "X-RateLimit-Limit", "X-RateLimit-Reset"} <= set(limited)
    login = paths["/api/v1/auth/login"]["post"]
    assert login["security"] == [] and {"401", "429"} <= set(login["responses"])
    callback = paths["/api/v1/internal/update-status"]["post"]
    assert "429" not in callback["responses"]  # internal callbacks are not rate limited
    schemes = document["components"]["securitySchemes"]
    assert schemes["cookie"] == {**schemes["cookie"], "in": "cookie", "name": "auth_token"}
    envelope = document["components"]["schemas"]["ErrorBody"]
    assert set(envelope["required"]) == {"code", "message", "details", "request_id"}


def test_the_document_is_generated_once_per_app(api: Harness) -> None:
    first = api.call("GET", "/openapi.json")
    second = api.call("GET", "/openapi.json")
    assert first.content == second.content
    resource = served_routes(api.wsgi)[("GET", "/openapi.json")]
    assert isinstance(resource, docs.OpenApi) and resource._document == first.content


def test_docs_page_loads_everything_from_this_app(api: Harness) -> None:
    page = api.call("GET", "/docs")
    assert page.status_code == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    references = HTML_REFERENCES.findall(page.text)
    assert "/docs/assets/swagger-ui-bundle.js" in references
    assert "/openapi.json" in page.text
    assert "//" not in "".join(references)  # no CDN: nothing from another host
    expected = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
    for reference in references:
        asset = api.call("GET", reference)
        assert asset.status_code == 200, reference
        suffix = reference[reference.rindex(".") :]
        assert asset.headers["Content-Type"].startswith(expected[suffix]), reference
        assert len(asset.content) > 0


def test_the_bundled_swagger_ui_renders_openapi_3_1() -> None:
    """Swagger UI 4 (the original swagger-ui-bundle) refuses a 3.1 document; 5 knows it."""
    bundle = (docs.ROOT / "swagger-ui-bundle.js").read_bytes()
    assert b"isOAS31" in bundle, docs.ROOT.name


@pytest.mark.parametrize(
    "name",
    ["index.j2", "swagger-initializer.js", "..%2Fapi%2Fapp.py", "%2Fetc%2Fpasswd", "nope.js"],
)
def test_assets_are_served_only_by_exact_name(api: Harness, name: str) -> None:
    result = api.call("GET", f"/docs/assets/{name}")
    assert_error(result, 404, "NOT_FOUND")


def test_a_path_outside_the_assets_is_not_found(api: Harness) -> None:
    assert_error(api.call("GET", "/docs/assets/../../api/app.py"), 404, "NOT_FOUND")
    assert_error(api.call("GET", "/docs/assets/a/b.js"), 404, "NOT_FOUND")
