"""Property-based run of the published OpenAPI document against the app, logged in:
no 5xx, every response matches its documented status, content type and schema.

Schemathesis' pytest plugin does not run under pytest 9 yet, so the operations are
driven with Hypothesis directly, one test per operation.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from devex import create_app

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
# Logging out or in again would end the session the run is using.
SKIPPED = {("POST", "/auth/logout"), ("POST", "/auth/local")}


def make_app(data_dir):
    # No worker: jobs queue up but nothing is launched while the API is fuzzed.
    return create_app({"TESTING": True, "DEVEX_SECRET_KEY": "fuzz",
                       "DEVEX_DATA_DIR": data_dir, "DEVEX_EMBEDDED_WORKER": "false",
                       "DEVEX_QUOTA_REPLS": "20"})


def operations():
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        loaded = schemathesis.openapi.from_wsgi("/api/openapi.json", make_app(tmp))
        return [
            pytest.param(op.method.upper(), op.path, id=f"{op.method.upper()} {op.path}")
            for op in (r.ok() for r in loaded.get_all_operations())
            if (op.method.upper(), op.path) not in SKIPPED
        ]


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory):
    app = make_app(tmp_path_factory.mktemp("fuzz"))
    client = app.test_client()
    me = client.post("/auth/local").json
    # A REPL of our own, so id-taking operations also meet an existing one.
    seed = client.post("/api/repl/create", json={"name": "seed", "template": "bash"},
                       headers={"X-CSRF-Token": me["csrf_token"]}).json["repl"]["id"]
    headers = {"Cookie": f"session={client.get_cookie('session').value}",
               "X-CSRF-Token": me["csrf_token"]}
    return schemathesis.openapi.from_wsgi("/api/openapi.json", app), headers, seed


@pytest.mark.parametrize("method, path", operations())
def test_operation_conforms_to_the_openapi_document(fuzz, method, path):
    schema, headers, seed = fuzz
    operation = schema[path][method]

    @given(case=operation.as_strategy(), use_seed=st.booleans())
    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck),
              database=None)
    def run(case, use_seed):
        if use_seed and "repl_id" in (case.path_parameters or {}):
            case.path_parameters["repl_id"] = seed  # an existing REPL, not only 404s
        case.call_and_validate(headers=headers, checks=CHECKS)

    run()
