"""Embedded mode's own Redis: REPLs, sessions, files and queued jobs outlive a restart;
one server per data dir, private to this user; an old state.json is migrated once.
(Killing the process for real: tests/test_embedded_durability.py.)"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import threading
import time

import pytest

from devex import create_app
from devex.infra.embedded_redis import RedisServer, connect, find_server, socket_path
from devex.models import Status
from tests.conftest import Api, login_local
from tests.support.waiting import wait_for


def make(data_dir, **extra):
    return create_app({"TESTING": True, "DEVEX_DATA_DIR": data_dir, **extra})


def stop_app(app):
    app.extensions["devex"].close()  # stops the worker, then the Redis server


def server_pid(app) -> int:
    return app.extensions["devex"].components.redis.info("server")["process_id"]


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] in ("Z", "X")
    except OSError:
        return True


def test_restart_keeps_repls_login_and_files(data_dir):
    first = make(data_dir)
    client = first.test_client()
    api = login_local(client)
    repl_id = api.post("/api/repl/create", json={"name": "keep me", "template": "python"}).json[
        "repl"]["id"]
    api.wait_status(repl_id, "running")
    api.post(f"/api/repl/{repl_id}/stop")
    api.wait_status(repl_id, "stopped")
    pid = server_pid(first)
    stop_app(first)
    assert gone(pid)  # closed with the app: no redis-server left behind
    assert not (data_dir / "state.json").exists()
    aof = data_dir / "redis" / "appendonly.aof"
    assert aof.exists() or (data_dir / "redis" / "appendonlydir").is_dir()

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


def test_jobs_queued_before_a_restart_run_after_it(data_dir):
    first = make(data_dir, DEVEX_EMBEDDED_WORKER="false")  # the job never runs here
    api = login_local(first.test_client())
    repl_id = api.post("/api/repl/create", json={"name": "half", "template": "bash",
                                                 "start": False}).json["repl"]["id"]
    stop_app(first)  # the REPL is "creating"; its job waits in the queue

    second = make(data_dir)
    try:
        store = second.extensions["devex"].components.store
        wait_for(lambda: store.require(repl_id).status == Status.STOPPED, 30, "queued create")
        # The queued job ran as it was: nothing had to be resumed.
        assert "resume" not in [e.kind for e in store.events(repl_id)]
    finally:
        stop_app(second)


def test_a_second_process_shares_the_redis_of_the_first_and_runs_no_worker(data_dir):
    first = make(data_dir)
    try:
        second = make(data_dir)  # e.g. a `flask devex` command while the server runs
        assert second.extensions["devex"].worker is None
        assert first.extensions["devex"].worker is not None
        assert server_pid(second) == server_pid(first)  # one server for the data dir
        api = login_local(second.test_client())
        repl_id = api.post("/api/repl/create", json={"name": "via second", "template": "bash",
                                                     "start": False}).json["repl"]["id"]
        # Its job runs in the first process's worker.
        store = first.extensions["devex"].components.store
        wait_for(lambda: store.require(repl_id).status == Status.STOPPED, 30, "create job")
        pid = server_pid(first)
    finally:
        stop_app(first)
    assert gone(pid)
    third = make(data_dir)  # the data dir is free again
    try:
        assert third.extensions["devex"].worker is not None
        assert third.extensions["devex"].components.store.require(repl_id).name == "via second"
    finally:
        stop_app(third)


def test_a_server_left_running_is_replaced_without_losing_data(data_dir):
    # Started from another thread, the server gets no PR_SET_PDEATHSIG: like the orphan of
    # a killed process it outlives whoever started it, and the next start must deal.
    orphan = RedisServer(data_dir, find_server())
    starter = threading.Thread(target=orphan.start)
    starter.start()
    starter.join()
    try:
        written = connect(data_dir)
        written.set("written before", "kept")
        written.close()
        app = make(data_dir)
        try:
            assert orphan.proc.wait(10) == 0  # asked to shut down, AOF flushed
            conn = app.extensions["devex"].components.redis
            assert conn.get("written before") == b"kept"
            assert server_pid(app) != orphan.proc.pid
        finally:
            stop_app(app)
    finally:
        if orphan.proc and orphan.proc.poll() is None:
            orphan.proc.kill()


def test_only_this_user_can_reach_the_server_and_it_has_no_tcp_port(data_dir):
    app = make(data_dir)
    try:
        conn = app.extensions["devex"].components.redis
        assert conn.config_get("port") == {"port": "0"}
        sock = socket_path(data_dir)
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
        python = "/usr/bin/python3"  # one that another user may run (not our venv's)
        if os.geteuid() != 0 or not os.access(python, os.X_OK):
            return  # trying as another user needs root and a Python it may run
        probe = ("import socket, sys; s = socket.socket(socket.AF_UNIX)\n"
                 "try: s.connect(sys.argv[1])\n"
                 "except PermissionError: sys.exit(3)\n")
        other = subprocess.run([python, "-c", probe, str(sock)], user=65534,
                               group=65534, extra_groups=[], cwd="/", timeout=30)
        assert other.returncode == 3  # "nobody" may not connect
    finally:
        stop_app(app)


def _b(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_an_old_state_json_is_migrated_once(data_dir):
    data_dir.mkdir(parents=True)
    old = {
        _b(b"keep"): {"type": "string", "value": _b(b"\xff\x00binary"), "expires": None},
        _b(b"userRepls:1"): {"type": "zset", "value": [[_b(b"abc"), 1.5]], "expires": None},
        _b(b"session:old"): {"type": "string", "value": _b(b"x"),
                             "expires": int(time.time()) - 100},  # expired while down
        _b(b"session:new"): {"type": "string", "value": _b(b"y"),
                             "expires": int(time.time()) + 3600},
    }
    (data_dir / "state.json").write_text(json.dumps(old))
    app = make(data_dir, DEVEX_EMBEDDED_WORKER="false")
    try:
        conn = app.extensions["devex"].components.redis
        assert conn.get("keep") == b"\xff\x00binary"
        assert conn.zrange("userRepls:1", 0, -1, withscores=True) == [(b"abc", 1.5)]
        assert not conn.exists("session:old")
        assert 3500 < conn.ttl("session:new") <= 3600
        conn.delete("keep")
    finally:
        stop_app(app)
    assert not (data_dir / "state.json").exists()
    assert (data_dir / "state.json.migrated").exists()
    again = make(data_dir, DEVEX_EMBEDDED_WORKER="false")
    try:  # loaded once: what changed since stays changed
        assert not again.extensions["devex"].components.redis.exists("keep")
    finally:
        stop_app(again)


def test_a_server_that_cannot_start_fails_the_app_and_frees_the_data_dir(data_dir):
    with pytest.raises(OSError):
        make(data_dir, DEVEX_REDIS_SERVER="/no/such/redis-server")
    app = make(data_dir)  # the data dir's lock was let go
    try:
        assert app.extensions["devex"].worker is not None
    finally:
        stop_app(app)
