"""The store refuses in its own terms (``devex.infra.store_errors``); the service words the
refusal for people, and the API answers exactly what it always did: status, code,
message, Retry-After."""

from __future__ import annotations

from dataclasses import replace

import pytest

from devex.infra.store_errors import (
    IdTaken,
    NameTaken,
    QuotaReached,
    ReplMissing,
    StatusRefused,
    StoreRefusal,
    TooManyRetries,
)
from devex.models import Desired, Repl, Status
from devex.services.repls import user_error
from devex.timestamps import utcnow


@pytest.mark.parametrize(("refusal", "status", "code", "message", "headers"), [
    (ReplMissing("0123456789ab"), 404, "not_found", "No such REPL.", {}),
    (StatusRefused("0123456789ab", Status.DELETING, Status.STARTING), 409, "invalid_state",
     "The REPL is deleting; it cannot be started now.", {}),
    (StatusRefused("0123456789ab", Status.STOPPED, Status.RUNNING), 409, "invalid_state",
     "The REPL is stopped; it cannot be marked running now.", {}),
    (StatusRefused("0123456789ab", Status.FAILED, None), 409, "invalid_state",
     "The REPL is failed; it cannot be changed now.", {}),
    (NameTaken("Hello"), 409, "name_taken", "You already have a REPL named 'Hello'.", {}),
    (IdTaken("0123456789ab"), 409, "conflict", "That REPL id is already in use.", {}),
    (QuotaReached("repls", 3), 429, "quota_exceeded",
     "You have reached your limit of 3 REPLs; delete one first.", {"Retry-After": "60"}),
    (QuotaReached("running", 2), 429, "quota_exceeded",
     "You may run at most 2 REPLs at once; stop one first.", {"Retry-After": "60"}),
    (TooManyRetries("20 attempts"), 503, "unavailable",
     "Too many changes to your REPLs at once; try again.", {"Retry-After": "1"}),
], ids=lambda v: type(v).__name__ if isinstance(v, StoreRefusal) else None)
def test_each_refusal_has_the_words_people_always_got(refusal, status, code, message, headers):
    error = user_error(refusal)
    assert (error.status, error.code, error.message, error.headers) == (
        status, code, message, headers)
    if isinstance(refusal, StatusRefused):
        assert error.current == refusal.current  # the service's own races read it


def test_the_store_says_what_it_refused_without_words_for_people(app):
    store = app.extensions["devex"].components.store
    now = utcnow()
    repl = Repl(id="aaaaaaaaaaaa", name="Hello", template="bash", owner_id="1",
                owner_login="a", storage_prefix="a/aaaaaaaaaaaa/", status=Status.STOPPED,
                desired=Desired.STOPPED, created_at=now, updated_at=now)
    store.create(repl)
    with pytest.raises(NameTaken) as taken:
        store.create(replace(repl, id="bbbbbbbbbbbb", name="hello"))
    assert taken.value.name == "hello"
    with pytest.raises(QuotaReached) as full:
        store.create(replace(repl, id="cccccccccccc", name="other"), quota=1)
    assert (full.value.kind, full.value.limit) == ("repls", 1)
    with pytest.raises(StatusRefused) as refused:
        store.transition(repl.id, Status.RUNNING)
    assert (refused.value.current, refused.value.target) == (Status.STOPPED, Status.RUNNING)
    with pytest.raises(ReplMissing):
        store.require("dddddddddddd")
    assert not any(hasattr(e.value, "status") for e in (taken, full, refused))  # no HTTP


def test_the_api_answers_refusals_as_before(app, api):
    ext = app.extensions["devex"]
    ext.worker.stop()  # nothing leaves "creating": only the records count
    assert api.post("/api/repl/create", json={"name": "Hello", "template": "bash",
                                              "start": False}).status_code == 202
    taken = api.post("/api/repl/create", json={"name": " hello ", "template": "bash"})
    assert (taken.status_code, taken.json) == (409, {"error": {
        "code": "name_taken", "message": "You already have a REPL named 'hello'."}})
    ext.components.settings = replace(ext.settings, quota_repls=1)
    full = api.post("/api/repl/create", json={"name": "two", "template": "bash"})
    assert (full.status_code, full.json, full.headers["Retry-After"]) == (429, {"error": {
        "code": "quota_exceeded",
        "message": "You have reached your limit of 1 REPLs; delete one first."}}, "60")
