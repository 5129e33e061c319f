"""Users, sessions, tokens and REPL states for the access-control tests (no worker runs:
states are set in the store, so every cell of a matrix starts from a known state). The
``users_app`` fixture reaches every test module as a pytest plugin (``tests/conftest.py``)."""

from __future__ import annotations

from collections import deque
from datetime import UTC, datetime, timedelta

import pytest

from devex import create_app
from devex.models import TRANSITIONS, Status, User
from tests.conftest import Api

OWNER = ("1001", "alice")
OTHER = ("1002", "bob")
ADMIN = ("1003", "root-admin")


def make_app(data_dir, **settings):
    """Embedded mode without the worker thread: enqueued jobs just wait in the queue."""
    config = {
        "TESTING": True,
        "DEVEX_DATA_DIR": data_dir,
        "DEVEX_SECRET_KEY": "test-secret",
        "DEVEX_EMBEDDED_WORKER": "false",
        "DEVEX_ADMINS": f"id:{ADMIN[0]}",  # by GitHub id: these users never log in
    }
    config.update(settings)
    return create_app(config)


@pytest.fixture
def users_app(data_dir):
    """The app without a worker, with the three users; a module makes it its ``app`` with
    ``def app(users_app): return users_app``."""
    app = make_app(data_dir)
    add_users(app)
    return app


def store(app):
    return app.extensions["devex"].components.store


def add_users(app) -> None:
    for uid, login in (OWNER, OTHER, ADMIN):
        store(app).upsert_user(User(id=uid, login=login, name=login.title()))


def session_api(app, uid: str) -> Api:
    """A browser logged in as ``uid`` (what the OAuth callback leaves behind)."""
    client = app.test_client()
    with client.session_transaction() as s:
        s["uid"], s["csrf"] = uid, f"csrf-{uid}"
    return Api(client, f"csrf-{uid}")


def new_token(app, uid: str, *, expires_at: datetime | None = None) -> str:
    tokens = app.extensions["devex_auth"].api_tokens
    return tokens.create(uid, "test", expires_at=expires_at).plaintext


def expired_token(app, uid: str) -> str:
    return new_token(app, uid, expires_at=datetime.now(UTC) - timedelta(seconds=1))


def revoked_token(app, uid: str) -> str:
    svc = app.extensions["devex_auth"].api_tokens
    new = svc.create(uid, "soon revoked")
    svc.revoke(uid, new.token.id)
    return new.plaintext


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def create_repl(app, uid: str, name: str = "work", status: Status = Status.STOPPED) -> str:
    """A REPL of ``uid`` in ``status`` (running ones get a URL, as the runtime would)."""
    api = session_api(app, uid)
    r = api.post("/api/repl/create", json={"name": name, "template": "python", "start": False})
    assert r.status_code == 202, r.json
    repl_id = r.json["repl"]["id"]
    set_status(app, repl_id, status)
    return repl_id


def set_status(app, repl_id: str, status: Status) -> None:
    url = f"http://127.0.0.1:9/{repl_id}/" if status == Status.RUNNING else None
    walk_to(store(app), repl_id, status, url=url)


def walk_to(repl_store, repl_id: str, status: Status, **fields) -> None:
    """Put a REPL in ``status`` the way the jobs would: through the store's transition
    table, by the shortest path from where it is; ``fields`` are set at the last step."""
    current = repl_store.require(repl_id).status
    if current == status:
        repl_store.transition(repl_id, None, fields=fields)
        return
    came_from: dict[Status, Status] = {current: current}
    todo = deque([current])
    while todo and status not in came_from:
        here = todo.popleft()
        for nxt in TRANSITIONS[here]:
            if nxt not in came_from:
                came_from[nxt] = here
                todo.append(nxt)
    if status not in came_from:
        raise AssertionError(f"no way from {current} to {status}")
    path = [status]
    while path[-1] != current:
        path.append(came_from[path[-1]])
    steps = path[-2::-1]
    for step in steps[:-1]:
        repl_store.transition(repl_id, step)
    repl_store.transition(repl_id, status, fields=fields)


def queued(app) -> list[str]:
    return [j.func_name for j in app.extensions["devex"].components.jobs.queue.jobs]
