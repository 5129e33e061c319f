"""Property-based run of the published OpenAPI document against the app, logged in through
a browser session (cookie + CSRF header, as the IDE frontend): no 5xx, every response
matches its documented status, content type, headers and schema, data the document calls
valid is accepted and data it calls invalid is refused, and every path answers unsupported
methods with 405 and an ``Allow`` header naming exactly its documented methods.

The run cannot end its own session midway: logging out or in again is left out, token
management needs that very session (a revoke of a random id is a 404), and the caller is no
administrator (suspending anyone, itself included, is a 403); after each operation the
session is checked to be still good.

Schemathesis' pytest plugin does not run under pytest 9 yet, so the operations are driven
with Hypothesis directly, one test per operation, in positive and negative generation modes.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from devex import create_app

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance,
          negative_data_rejection, positive_data_acceptance]
# Logging out or in again would end or replace the session the run is using.
SKIPPED = {("POST", "/auth/logout"), ("POST", "/auth/local")}
# Opaque values only this API hands out: the document says "a string", the API knows
# which strings it gave out, so a made-up one is a 400 although the document allows it.
OPAQUE = {("GET", "/api/repl/"): "cursor"}
HTTP_METHODS = ("GET", "PUT", "POST", "DELETE", "PATCH")
RUNNER_ONLY = "/api/runner/"  # a runner's token, never a person's session


def make_app(data_dir):
    # No worker: jobs queue up but nothing is launched while the API is fuzzed.
    return create_app({"TESTING": True, "DEVEX_SECRET_KEY": "fuzz",
                       "DEVEX_DATA_DIR": data_dir, "DEVEX_EMBEDDED_WORKER": "false",
                       "DEVEX_QUOTA_REPLS": "20"})


def _loaded():
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        app = make_app(tmp)
        schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app)
        raw = app.test_client().get("/api/openapi.json").json
        app.extensions["devex"].close()
        return schema, raw


def operations():
    schema, _ = _loaded()
    return [
        pytest.param(op.method.upper(), op.path, id=f"{op.method.upper()} {op.path}")
        for op in (r.ok() for r in schema.get_all_operations())
        if (op.method.upper(), op.path) not in SKIPPED
    ]


def documented_paths():
    _, raw = _loaded()
    return [pytest.param(path, sorted(m.upper() for m in ops), id=path)
            for path, ops in raw["paths"].items()]


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory):
    app = make_app(tmp_path_factory.mktemp("fuzz"))
    client = app.test_client()
    me = client.post("/auth/local").json
    # A REPL of our own, so id-taking operations also meet an existing one.
    seed = client.post("/api/repl/create", json={"name": "seed", "template": "bash"},
                       headers={"X-CSRF-Token": me["csrf_token"]}).json["repl"]["id"]
    # The cookie goes in the test client's jar: werkzeug drops a hand-made Cookie header.
    auth = {"cookies": {"session": client.get_cookie("session").value},
            "headers": {"X-CSRF-Token": me["csrf_token"]}}
    yield app, schemathesis.openapi.from_wsgi("/api/openapi.json", app), auth, seed
    app.extensions["devex"].close()


def _still_logged_in(app, auth) -> None:
    client = app.test_client()
    client.set_cookie("session", auth["cookies"]["session"])
    assert client.get("/auth/me").status_code == 200, "the run lost its own session"


@pytest.mark.parametrize("method, path", operations())
def test_operation_conforms_to_the_openapi_document(fuzz, method, path):
    app, schema, auth, seed = fuzz
    operation = schema[path][method]
    has_id = "{repl_id}" in path
    # An existing REPL or any plausible id; never a word of the API's own paths.
    repl_ids = st.one_of(st.just(seed), st.from_regex(r"\A[a-z0-9]{1,32}\Z").filter(
        lambda s: s != "create"))
    checks = list(CHECKS)
    if (method, path) in OPAQUE:
        checks.remove(positive_data_acceptance)

    @given(data=st.data(), mode=st.sampled_from([GenerationMode.POSITIVE,
                                                 GenerationMode.NEGATIVE]))
    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck),
              database=None)
    def run(data, mode):
        fixed = {"repl_id": data.draw(repl_ids)} if has_id else None
        case = data.draw(operation.as_strategy(mode, path_parameters=fixed))
        statuses.append(case.call_and_validate(checks=checks, **auth).status_code)

    statuses: list[int] = []
    run()
    _still_logged_in(app, auth)
    if not path.startswith(RUNNER_ONLY):  # proof the run was logged in, not just refused
        assert set(statuses) - {401}, statuses


@pytest.mark.parametrize("path, documented", documented_paths())
def test_unsupported_methods_are_405_with_the_documented_allow(fuzz, path, documented):
    app, _, auth, seed = fuzz
    url = path.replace("{repl_id}", seed).replace("{token_id}", "abc").replace(
        "{user_id}", "nobody")
    allowed = set(documented) | {"OPTIONS"} | ({"HEAD"} if "GET" in documented else set())
    client = app.test_client()
    client.set_cookie("session", auth["cookies"]["session"])
    for method in HTTP_METHODS:
        if method in documented:
            continue
        resp = client.open(url, method=method, headers=auth["headers"])
        assert resp.status_code == 405, (method, url, resp.status_code)
        assert set(resp.headers["Allow"].replace(" ", "").split(",")) == allowed, method
        assert resp.json["error"]["code"] == "method_not_allowed"
    options = client.options(url, headers=auth["headers"])
    assert set(options.headers["Allow"].replace(" ", "").split(",")) == allowed
