"""Embedded mode survives a restart of the process: REPLs, sessions and files stay."""

from __future__ import annotations

import json

from devex import create_app
from devex.infra.embedded_state import Snapshotter
from devex.models import Status
from tests.conftest import Api, login_local
from tests.support.waiting import wait_for


def make(data_dir, **extra):
    return create_app({"TESTING": True, "DEVEX_DATA_DIR": data_dir, **extra})


def stop_app(app):
    app.extensions["devex"].close()  # stops the worker, writes the last snapshot


def test_restart_keeps_repls_login_and_files(data_dir):
    first = make(data_dir)
    client = first.test_client()
    api = login_local(client)
    repl_id = api.post("/api/repl/create", json={"name": "keep me", "template": "python"}).json[
        "repl"]["id"]
    api.wait_status(repl_id, "running")
    api.post(f"/api/repl/{repl_id}/stop")
    api.wait_status(repl_id, "stopped")
    stop_app(first)
    state = json.loads((data_dir / "state.json").read_text())
    assert state and not any(k.startswith("cnE6") for k in state)  # no "rq:" keys (base64)
    assert oct((data_dir / "state.json").stat().st_mode & 0o777) == "0o600"

    second = make(data_dir)
    try:
        again = second.test_client()
        again.set_cookie("session", client.get_cookie("session").value)
        listed = again.get("/api/repl/")
        assert listed.status_code == 200  # the login survived too
        assert [r["name"] for r in listed.json["repls"]] == ["keep me"]
        api2 = Api(again, api.csrf)
        assert api2.post(f"/api/repl/{repl_id}/start").status_code == 202
        api2.wait_status(repl_id, "running")
        assert second.extensions["devex"].settings.secret_key == (
            first.extensions["devex"].settings.secret_key)
    finally:
        stop_app(second)


def test_restart_resumes_an_interrupted_change(data_dir):
    first = make(data_dir, DEVEX_EMBEDDED_WORKER="false")  # the job never runs here
    api = login_local(first.test_client())
    repl_id = api.post("/api/repl/create", json={"name": "half", "template": "bash",
                                                 "start": False}).json["repl"]["id"]
    # The process dies here: the REPL is "creating" and its queued job is lost with us.
    Snapshotter(first.extensions["devex"].components.redis, data_dir / "state.json").save()
    stop_app(first)

    second = make(data_dir)
    try:
        store = second.extensions["devex"].components.store
        wait_for(lambda: store.require(repl_id).status == Status.STOPPED, 30, "resumed create")
        assert "resume" in [e.kind for e in store.events(repl_id)]
    finally:
        stop_app(second)


def test_a_second_process_on_the_same_data_dir_runs_no_worker(data_dir):
    first = make(data_dir)
    try:
        second = make(data_dir)  # e.g. a CLI command while the server runs
        assert second.extensions["devex"].worker is None
        assert first.extensions["devex"].worker is not None
    finally:
        stop_app(first)
    third = make(data_dir)  # the data dir is free again
    try:
        assert third.extensions["devex"].worker is not None
    finally:
        stop_app(third)


def test_snapshot_drops_expired_keys_and_counts_downtime(data_dir):
    import fakeredis

    from devex.infra.embedded_state import dump, load

    source = fakeredis.FakeRedis()
    source.set("session:old", b"x", ex=100)
    source.set("keep", b"\xff\x00binary")
    data = dump(source)
    assert data == dump(source)  # stable text: unchanged state is not rewritten
    for entry in data.values():
        if entry["expires"]:
            entry["expires"] -= 200  # the process was down for longer than the TTL
    target = fakeredis.FakeRedis()
    assert load(target, data) == 1
    assert target.get("keep") == b"\xff\x00binary" and not target.exists("session:old")
