"""Tokens between the core, the runners and the IDE: a token is good for one REPL and one
purpose, and wrong-REPL, tampered and expired tokens are refused."""

from __future__ import annotations

import pytest

from devex.models import Status
from devex_shared import access_tokens
from tests.support.auth_helpers import (
    OWNER,
    create_repl,
    session_api,
    store,
)
from tests.support.tampering import signed_ago, signed_long_ago, tamper

SECRET = "test-secret"
IDE_MAX_AGE = 3600  # what the runner accepts (RUNNER_TOKEN_MAX_AGE default)


@pytest.fixture
def app(users_app):
    """Without a worker, with the three users: states are set in the store."""
    return users_app


def runner_token(repl_id: str) -> str:
    key = access_tokens.repl_key(SECRET, repl_id)
    return access_tokens.sign(key, repl_id, access_tokens.RUNNER_SCOPE)


@pytest.fixture
def two(app):
    return (
        create_repl(app, OWNER[0], "a", status=Status.RUNNING),
        create_repl(app, OWNER[0], "b", status=Status.RUNNING),
    )


def heartbeat(app, repl_id: str, token: str | None):
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return app.test_client().post(
        f"/api/runner/{repl_id}/heartbeat", json={"active": True}, headers=headers
    )


def test_the_repls_own_runner_token_is_accepted(app, two):
    a, _ = two
    resp = heartbeat(app, a, runner_token(a))
    assert resp.status_code == 200
    assert store(app).get(a).last_activity_at is not None


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda a, b: None, id="missing"),
        pytest.param(lambda a, b: "", id="empty"),
        pytest.param(lambda a, b: runner_token(b), id="other-repls-token"),
        pytest.param(
            # B's key cannot vouch for A, whatever the payload says.
            lambda a, b: access_tokens.sign(
                access_tokens.repl_key(SECRET, b), a, access_tokens.RUNNER_SCOPE
            ),
            id="other-repls-key",
        ),
        pytest.param(
            lambda a, b: access_tokens.sign(
                access_tokens.repl_key("another-secret", a), a, "runner"
            ),
            id="other-core-secret",
        ),
        pytest.param(lambda a, b: tamper(runner_token(a)), id="tampered"),
        pytest.param(
            lambda a, b: signed_long_ago(
                access_tokens.repl_key(SECRET, a), a, access_tokens.RUNNER_SCOPE
            ),
            id="expired",
        ),
        pytest.param(
            lambda a, b: access_tokens.sign(
                access_tokens.repl_key(SECRET, a), a, access_tokens.IDE_SCOPE
            ),
            id="ide-token-as-runner-token",
        ),
    ],
)
def test_runner_endpoints_refuse_bad_tokens_and_change_nothing(app, two, make):
    a, b = two
    token = make(a, b)
    assert heartbeat(app, a, token).status_code == 401
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    idle = app.test_client().post(f"/api/runner/{a}/idle", headers=headers)
    assert idle.status_code == 401 and idle.json["error"]["code"] == "unauthorized"
    repl = store(app).get(a)
    assert repl.status == Status.RUNNING and repl.last_activity_at is None


def test_runner_tokens_are_good_for_minutes_not_days(app, two):
    """Runners sign a fresh token for every call: one older than a few minutes is a
    replayed or stolen one, refused for heartbeats and for idle (which stops the REPL)."""
    a, _ = two
    key = access_tokens.repl_key(SECRET, a)
    stale = signed_ago(key, a, access_tokens.RUNNER_SCOPE, 6 * 60)  # the core takes 5 minutes
    assert heartbeat(app, a, stale).status_code == 401
    idle = app.test_client().post(f"/api/runner/{a}/idle", headers={"Authorization":
                                                                    f"Bearer {stale}"})
    assert idle.status_code == 401
    repl = store(app).get(a)
    assert repl.status == Status.RUNNING and repl.last_activity_at is None
    recent = signed_ago(key, a, access_tokens.RUNNER_SCOPE, 60)
    assert heartbeat(app, a, recent).status_code == 200


def ide_token(app, repl_id: str) -> dict:
    resp = session_api(app, OWNER[0]).post(f"/api/repl/{repl_id}/session")
    assert resp.status_code == 200, resp.json
    return resp.json


def runner_accepts(repl_id: str, token: str) -> bool:
    """What the runner of ``repl_id`` does with a token (runner/server.py)."""
    try:
        access_tokens.verify(
            access_tokens.repl_key(SECRET, repl_id), repl_id, access_tokens.IDE_SCOPE, token,
            IDE_MAX_AGE,
        )
    except access_tokens.TokenError:
        return False
    return True


def test_ide_session_token_works_for_its_repl_only(app, two):
    a, b = two
    session = ide_token(app, a)
    assert session["url"] and session["expires_at"]
    assert runner_accepts(a, session["token"])
    assert not runner_accepts(b, session["token"])


def test_ide_session_token_tampered_or_expired_is_refused(app, two):
    a, _ = two
    good = ide_token(app, a)["token"]
    assert not runner_accepts(a, tamper(good))
    expired = signed_long_ago(access_tokens.repl_key(SECRET, a), a, access_tokens.IDE_SCOPE)
    assert not runner_accepts(a, expired)
    # A runner token is not an IDE token either.
    assert not runner_accepts(a, runner_token(a))


def test_ide_session_needs_a_running_repl(app):
    stopped = create_repl(app, OWNER[0], "stopped", status=Status.STOPPED)
    resp = session_api(app, OWNER[0]).post(f"/api/repl/{stopped}/session")
    assert resp.status_code == 409


def test_tampered_tokens_never_verify():
    """The tamper helper changes signed bytes, not padding: no run can pass by luck."""
    for i in range(300):
        repl_id = f"repl{i:08d}"
        key = access_tokens.repl_key(SECRET, repl_id)
        good = access_tokens.sign(key, repl_id, access_tokens.IDE_SCOPE)
        access_tokens.verify(key, repl_id, access_tokens.IDE_SCOPE, good, IDE_MAX_AGE)
        with pytest.raises(access_tokens.TokenError):
            access_tokens.verify(key, repl_id, access_tokens.IDE_SCOPE, tamper(good), IDE_MAX_AGE)
