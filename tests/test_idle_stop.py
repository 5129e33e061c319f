"""Idle stop driven by the runner: the core over real HTTP, a real runner process that
calls ``/api/runner/<id>/idle`` once nothing happened for ``DEVEX_IDLE_TIMEOUT``."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from devex import create_app
from tests.conftest import login_local
from tests.support.ports import free_port


@pytest.fixture
def served_app(data_dir) -> Iterator:
    """The embedded app on a real port, so that runners can call it."""
    from werkzeug.serving import make_server

    port = free_port()
    app = create_app({
        "TESTING": True,
        "DEVEX_DATA_DIR": data_dir,
        "DEVEX_SECRET_KEY": "test-secret",
        "DEVEX_CORE_URL": f"http://127.0.0.1:{port}",
        "DEVEX_IDLE_TIMEOUT": 2,
        "DEVEX_HEARTBEAT_SECONDS": 0.5,
        "DEVEX_PERIODIC_INTERVAL": 3600,  # the core's own culling stays out of the way
    })
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="core-http", daemon=True)
    thread.start()
    yield app
    server.shutdown()
    thread.join(10)
    server.server_close()
    app.extensions["devex"].close()


def test_an_idle_repl_stops_itself_with_its_files_saved(served_app):
    api = login_local(served_app.test_client())
    ext = served_app.extensions["devex"]
    repl_id = api.create_running("idle", "bash")
    with api.ide(repl_id) as ide:
        ide.welcome()
        ide.call("updateContent", {"path": "notes.txt", "content": "written, then idle"})
        # An open socket is not activity by itself: only traffic, output and programs are.
        api.wait_status(repl_id, "stopped", timeout=90)
        assert ide.expect("stopping")["data"]["message"]
    storage = ext.components.storage
    assert storage.read(f"local/{repl_id}/notes.txt") == b"written, then idle"
    events = [(e.kind, e.message) for e in ext.components.store.events(repl_id)]
    assert ("idle", "No activity for the idle period; stopping.") in events
    log = (ext.settings.data_dir / "runners" / f"{repl_id}.log").read_text()
    assert "asking the core to stop this REPL" in log


def test_a_running_program_keeps_the_repl_alive(served_app):
    """A silent program that runs for three idle periods is not cut short: had the runner
    called the core idle meanwhile, the stop would have ended it before its last line."""
    api = login_local(served_app.test_client())
    repl_id = api.create_running("busy", "bash")
    with api.ide(repl_id) as ide:
        ide.welcome()
        ide.call("updateContent", {"path": "main.sh", "content": "sleep 6\necho survived\n"})
        run = ide.call("run", {}, reply="terminalConnected")["sessionId"]
        ide.terminal_match(run, r"survived", timeout=60)
        assert ide.expect("terminalClosed")["data"]["exitCode"] == 0
        api.wait_status(repl_id, "stopped", timeout=90)  # idle once the program ended
