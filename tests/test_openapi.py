"""The published contract: ``GET /api/openapi.json`` answers in every mode, and says what
the API does (required bodies, the template catalogue, the name rule)."""

from __future__ import annotations

import re

import pytest
from openapi_spec_validator import validate

from devex import create_app
from devex.errors import InvalidInput
from devex.services.api_tokens import validate_token_name
from devex.services.repls import validate_name
from tests.support.github_login import github_app


def spec_of(app) -> dict:
    resp = app.test_client().get("/api/openapi.json")
    assert resp.status_code == 200, resp.get_data(as_text=True)[:300]
    validate(resp.json)
    return resp.json


def test_the_document_answers_in_github_mode(fake_github, data_dir):
    spec = spec_of(github_app(fake_github, data_dir))
    assert "/api/repl/create" in spec["paths"]
    # flask-dance's browser redirects are not part of the JSON contract.
    assert not [p for p in spec["paths"] if p.startswith("/auth/github")]


def test_the_document_answers_in_github_mode_on_a_cluster_wiring(fake_github, data_dir,
                                                                  redis_url):
    spec = spec_of(github_app(fake_github, data_dir, DEVEX_REDIS_URL=redis_url))
    assert "/api/admin/users/{user_id}/suspend" in spec["paths"]


@pytest.fixture
def spec(app) -> dict:
    return spec_of(app)


def _schema(spec: dict, ref: dict) -> dict:
    return spec["components"]["schemas"][ref["$ref"].rsplit("/", 1)[1]]


def test_bodies_with_required_fields_are_required(spec):
    for path, method in (("/api/repl/create", "post"), ("/api/tokens", "post")):
        body = spec["paths"][path][method]["requestBody"]
        assert body["required"] is True, path
    heartbeat = spec["paths"]["/api/runner/{repl_id}/heartbeat"]["post"]["requestBody"]
    assert not heartbeat.get("required")  # every field has a default


def test_templates_are_the_catalogues(app, spec):
    create = _schema(spec, spec["paths"]["/api/repl/create"]["post"]["requestBody"]["content"]
                     ["application/json"]["schema"])
    ids = [t["id"] for t in app.test_client().get("/api/templates").json.get("templates", [])] \
        or app.extensions["devex"].components.catalog.ids()
    assert sorted(create["properties"]["template"]["enum"]) == sorted(ids)
    assert create["properties"]["start"]["type"] == "boolean"


NAMES = ["a", "My app", "  padded  ", "x" * 64, " " + "x" * 64 + " ", "", "   ", "x" * 65,
         "bad/name", "tab\there", "trail\n", "é", "a.b-c_d"]


@pytest.mark.parametrize("name", NAMES)
def test_the_documented_name_pattern_is_the_services_rule(spec, name):
    create = spec["components"]["schemas"]["CreateIn"]["properties"]["name"]
    documented = re.search(create["pattern"], name) is not None
    try:
        validate_name(name)
        accepted = True
    except InvalidInput:
        accepted = False
    assert documented == accepted, name


def test_token_routes_say_they_need_a_session(spec):
    for path, method in (("/api/tokens", "get"), ("/api/tokens", "post"),
                         ("/api/tokens/{token_id}", "delete")):
        assert "session" in spec["paths"][path][method]["responses"]["403"]["description"]


def test_local_mode_document_is_valid_too(data_dir):
    app = create_app({"TESTING": True, "DEVEX_DATA_DIR": data_dir, "DEVEX_SECRET_KEY": "s",
                      "DEVEX_EMBEDDED_WORKER": "false"})
    assert "/auth/local" in spec_of(app)["paths"]


TOKEN_NAMES = ["laptop", " padded ", "日本語 token", "😀", "x" * 64, "x" * 65, "", "  ",
               "nul\x00", "rtl\u202eoverride", "zero\u200bwidth", "tab\tinside", "bom\ufeff"]


@pytest.mark.parametrize("name", TOKEN_NAMES)
def test_the_documented_token_name_pattern_is_the_services_rule(spec, name):
    created = spec["components"]["schemas"]["TokenCreateIn"]["properties"]["name"]
    documented = re.search(created["pattern"], name) is not None
    try:
        validate_token_name(name)
        accepted = True
    except InvalidInput:
        accepted = False
    assert documented == accepted, name
