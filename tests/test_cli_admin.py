"""``flask devex repls list|show|stop|force-stop|events``, ``flask devex reconcile`` and
``flask devex cull-idle``: an operator's view and hands, on real runners, with readable
one-line errors."""

from __future__ import annotations

import json
import os
import signal
from dataclasses import replace

import pytest

from devex import create_app
from tests.support.ports import free_port


@pytest.fixture
def cli(app):
    return app.test_cli_runner()


def run(cli, *args: str, input: str | None = None):  # noqa: A002 - click's name
    return cli.invoke(args=["devex", *args], input=input)


def test_list_show_and_events_describe_everyones_repls(app, api, cli):
    repl_id = api.create_running("listed", template="bash")
    other = api.post("/api/repl/create", json={"name": "idle-one", "template": "bash",
                                               "start": False}).json["repl"]["id"]
    api.wait_status(other, "stopped")

    listed = run(cli, "repls", "list")
    assert listed.exit_code == 0, listed.output
    header, *rows, total = listed.output.splitlines()
    assert header.split()[:4] == ["ID", "NAME", "OWNER", "STATUS"]
    assert {r.split()[0]: r.split()[3] for r in rows} == {repl_id: "running", other: "stopped"}
    assert total == "2 of 2 REPLs"
    only = run(cli, "repls", "list", "--status", "running").output
    assert repl_id in only and other not in only
    assert run(cli, "repls", "list", "--owner", "nobody").output.strip() == "no REPLs"

    shown = run(cli, "repls", "show", repl_id)
    assert shown.exit_code == 0, shown.output
    fields = {k: v.strip() for k, _, v in (line.partition(" ") for line in
                                              shown.output.splitlines())}
    assert fields["status"] == "running" and fields["owner_login"] == "local"
    assert fields["runner"] == "running" and fields["lock"] == "free"
    assert fields["job_id"].endswith("(finished)")

    events = run(cli, "repls", "events", repl_id).output.splitlines()
    assert any(" running " in line and "Running at http://127.0.0.1:" in line for line in events)
    assert len(run(cli, "repls", "events", repl_id, "--limit", "1").output.splitlines()) == 1


def test_stop_and_force_stop_act_as_an_operator(app, api, cli, data_dir):
    saved = api.create_running("saved", template="bash")
    (data_dir / "workspaces" / saved / "notes.txt").write_text("keep me")

    stopped = run(cli, "repls", "stop", saved)
    assert stopped.exit_code == 0, stopped.output
    assert stopped.output.startswith(f"{saved}: stopping (files saved); job ")
    api.wait_status(saved, "stopped")
    storage = app.extensions["devex"].components.storage
    assert storage.read(f"local/{saved}/notes.txt") == b"keep me"
    assert run(cli, "repls", "stop", saved).output.strip() == \
        f"{saved}: nothing to do, it is stopped"

    forced = api.create_running("forced", template="bash")
    declined = run(cli, "repls", "force-stop", forced, input="n\n")
    assert declined.exit_code == 1 and "Aborted" in declined.output
    assert api.repl(forced).json["status"] == "running"
    done = run(cli, "repls", "force-stop", forced, "--yes")
    assert done.exit_code == 0 and "force-stopping (no final save)" in done.output
    api.wait_status(forced, "stopped")
    asked = [line for line in run(cli, "repls", "events", forced).output.splitlines()
             if "Force stop requested" in line]
    assert len(asked) == 1 and " operator " in asked[0]


def test_errors_are_one_readable_line(app, cli, data_dir):
    missing = run(cli, "repls", "show", "0123456789ab")
    assert missing.exit_code == 1
    assert missing.output == "Error: no REPL with the id '0123456789ab'\n"
    assert run(cli, "repls", "stop", "nope").exit_code == 1

    down = create_app({"TESTING": True, "DEVEX_DATA_DIR": str(data_dir / "down"),
                       "DEVEX_SECRET_KEY": "s", "DEVEX_EMBEDDED_WORKER": "false",
                       "DEVEX_REDIS_URL": f"redis://:pw-in-url@127.0.0.1:{free_port()}/0"})
    try:
        for args in (["repls", "list"], ["repls", "show", "0123456789ab"], ["reconcile"]):
            result = run(down.test_cli_runner(), *args)
            assert result.exit_code == 1, result.output
            assert result.output.startswith("Error: Redis is unavailable: ")
            assert len(result.output.splitlines()) == 1 and "Traceback" not in result.output
            assert "pw-in-url" not in result.output
    finally:
        down.extensions["devex"].close()


def test_reconcile_and_cull_idle_run_in_process_and_say_what_they_did(app, api, cli):
    gone = api.create_running("crashes", template="bash")
    idle = api.create_running("idle", template="bash")
    record = json.loads((app.extensions["devex"].settings.data_dir / "runners" /
                         f"{gone}.json").read_text())
    os.killpg(record["pid"], signal.SIGKILL)  # the runner crashes
    os.waitpid(record["pid"], 0)

    reconciled = run(cli, "reconcile")
    assert reconciled.exit_code == 0, reconciled.output
    assert gone in reconciled.output  # as one of those it found vanished
    assert api.repl(gone).json["status"] == "failed"

    assert run(cli, "cull-idle").output.strip() == "stopping: none"  # runners report nowhere
    components = app.extensions["devex"].components
    components.settings = replace(components.settings, idle_timeout=-1,
                                  core_url="http://127.0.0.1:9/")
    culled = run(cli, "cull-idle")
    assert culled.exit_code == 0, culled.output
    assert idle in culled.output
    api.wait_status(idle, "stopped")
