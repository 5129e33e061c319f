"""The runner's WebSocket protocol (docs/RUNNER_PROTOCOL.md) against a real runner process,
through real sockets: every event's round trip, every refusal, terminals, run and quiesce."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
from pathlib import Path

import aiohttp
import pytest
import requests
import yaml
from diff_match_patch import diff_match_patch

from devex_shared import access_tokens
from tests.conftest import ROOT
from tests.support.ide_client import IdeClient
from tests.support.runner_process import Runner
from tests.support.tampering import signed_long_ago, tamper
from tests.support.waiting import wait_for

SECRET = "ws-test-secret"
KEY = access_tokens.repl_key(SECRET, "r1")
OUTSIDE = "OUTSIDE-THE-WORKSPACE"


def ide_token(repl_id: str = "r1", key: str = KEY) -> str:
    return access_tokens.sign(key, repl_id, access_tokens.IDE_SCOPE)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(OUTSIDE)
    ws = tmp_path / "ws"
    (ws / "src").mkdir(parents=True)
    (ws / "main.py").write_text("print('hello')\n")
    (ws / "src" / "util.py").write_text("X = 1\n")
    (ws / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    (ws / "link_out").symlink_to(outside, target_is_directory=True)
    (ws / "file_out").symlink_to(outside / "secret.txt")
    return ws


@pytest.fixture
def runner(workspace: Path, tmp_path: Path):
    r = Runner(workspace, tmp_path, base_path="/r1/", RUNNER_REPL_ID="r1", RUNNER_KEY=KEY,
               RUNNER_AUTH_TIMEOUT="0.5", RUNNER_RUN_COMMAND="echo ran-$((40+2))")
    yield r
    r.stop()


def ws_url(runner: Runner) -> str:
    return runner.url + "ws"


@pytest.fixture
def ide(runner):
    with IdeClient(ws_url(runner), ide_token()) as client:
        assert client.expect("authResponse")["data"] == {"success": True}
        client.welcome()
        yield client


def tree(ws: Path) -> dict[str, bytes | str]:
    """Everything in the workspace: contents of files, targets of links."""
    found: dict[str, bytes | str] = {}
    for path in sorted(ws.rglob("*")):
        rel = path.relative_to(ws).as_posix()
        if path.is_symlink():
            found[rel] = "-> " + os.readlink(path)
        elif path.is_file():
            found[rel] = path.read_bytes()
        else:
            found[rel] = "dir"
    return found


# -- connecting ------------------------------------------------------------------------------
def test_loaded_lists_the_root_directories_first(ide):
    entries = ide.loaded["rootContents"]
    assert entries[0] == {"name": "src", "path": "src", "isDir": True, "type": "dir"}
    by_name = {e["name"]: e for e in entries}
    assert by_name["main.py"] == {"name": "main.py", "path": "main.py", "isDir": False,
                                  "type": "file"}
    assert by_name["link_out"]["type"] == "symlink" and not by_name["link_out"]["isDir"]
    assert ide.expect("saveStatus")["data"]["state"] == "off"  # no autosave configured


def test_query_token_also_opens_the_socket(runner):
    with IdeClient(ws_url(runner), ide_token(), auth="query") as client:
        assert "main.py" in {e["name"] for e in client.welcome()["rootContents"]}
    assert ide_token() not in runner.log()  # the access log has no query strings


@pytest.mark.parametrize("how", ["frame", "query"])
@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(lambda: ide_token("r2", access_tokens.repl_key(SECRET, "r2")),
                     id="other-repl"),
        pytest.param(lambda: ide_token("r2"), id="other-id-same-key"),
        pytest.param(lambda: access_tokens.sign(KEY, "r1", access_tokens.RUNNER_SCOPE),
                     id="runner-scope"),
        pytest.param(lambda: signed_long_ago(KEY, "r1", access_tokens.IDE_SCOPE), id="expired"),
        pytest.param(lambda: tamper(ide_token()), id="tampered"),
    ],
)
def test_bad_tokens_are_refused_before_any_file_is_touched(runner, workspace, how, bad):
    before = tree(workspace)
    with IdeClient(ws_url(runner), bad(), auth=how) as client:
        # A client that does not wait for the verdict: its writes must go nowhere.
        client.send("updateContent", {"path": "pwned.txt", "content": "x"})
        client.send("fetchContent", {"path": "main.py"})
        error = client.expect("error")["data"]
        assert error["event"] == "auth"
        assert client.wait_closed() == 1008
    assert not any(f["event"] in ("Loaded", "fetchContentResponse") for f in client.frames)
    assert tree(workspace) == before


def test_first_frame_must_be_auth(runner, workspace):
    with IdeClient(ws_url(runner), None) as client:
        client.send("createFile", {"path": "pwned.txt"})
        assert client.expect("error")["data"] == {"message": "authenticate first",
                                                  "event": "createFile"}
        assert client.wait_closed() == 1008
    assert not (workspace / "pwned.txt").exists()


def test_silent_socket_is_closed_after_the_auth_timeout(runner):
    with IdeClient(ws_url(runner), None) as client:
        assert client.wait_closed() == 1008
    assert client.frames == []


def test_foreign_origin_is_refused_before_the_upgrade(runner):
    headers = {"Origin": "https://evil.example", "Connection": "Upgrade", "Upgrade": "websocket",
               "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    assert requests.get(ws_url(runner), headers=headers, timeout=10).status_code == 403
    own = f"http://127.0.0.1:{runner.port}"
    with IdeClient(ws_url(runner), ide_token(), headers={"Origin": own}) as client:
        client.welcome()


def test_configured_ide_origin_is_allowed(workspace, tmp_path):
    r = Runner(workspace, tmp_path, RUNNER_REPL_ID="r1", RUNNER_KEY=KEY,
               RUNNER_ALLOWED_ORIGINS="https://ide.example.com")
    try:
        with IdeClient(r.url + "ws", ide_token(),
                       headers={"Origin": "https://ide.example.com"}) as client:
            client.welcome()
    finally:
        r.stop()


def test_runner_refuses_to_start_without_its_key(workspace, tmp_path):
    import subprocess
    import sys

    from tests.support.runner_process import clean_env

    done = subprocess.run([sys.executable, "-m", "runner", "serve", "--workspace", str(workspace)],
                          cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "RUNNER_REPL_ID and RUNNER_KEY are required" in done.stderr


# -- files -----------------------------------------------------------------------------------
def test_fetch_dir_and_content(ide):
    listing = ide.call("fetchDir", {"Dir": "src"})
    assert listing == {"path": "src", "contents": [
        {"name": "util.py", "path": "src/util.py", "isDir": False, "type": "file"}]}
    assert ide.call("fetchDir", {"dir": "src"})["contents"] == listing["contents"]
    text = ide.call("fetchContent", {"path": "main.py"})
    assert text == {"path": "main.py", "content": "print('hello')\n", "size": 15,
                    "binary": False, "encoding": "utf-8"}
    binary = ide.call("fetchContent", {"path": "logo.png"})
    assert binary["binary"] is True and binary["encoding"] == "base64"
    assert base64.b64decode(binary["content"]) == b"\x89PNG\r\n\x1a\n\x00\xff\xfe"


def test_update_content_whole_and_by_patch(ide, workspace):
    assert ide.call("updateContent", {"path": "main.py", "content": "print('héllo')\n"}) == {
        "success": True, "path": "main.py"}
    assert (workspace / "main.py").read_text() == "print('héllo')\n"
    dmp = diff_match_patch()
    patch = dmp.patch_toText(dmp.patch_make("print('héllo')\n", "print('héllo, world')\n"))
    assert ide.call("updateContent", {"path": "main.py", "patch": patch})["success"] is True
    assert (workspace / "main.py").read_text() == "print('héllo, world')\n"
    assert ide.call("updateContent", {"path": "new.txt", "content": "fresh"})["success"]
    assert (workspace / "new.txt").read_text() == "fresh"
    assert not [p for p in workspace.iterdir() if p.name.startswith(".devex-tmp-")]


def test_patch_that_does_not_apply_leaves_the_file_alone(ide, workspace):
    dmp = diff_match_patch()
    patch = dmp.patch_toText(dmp.patch_make("completely different text\n" * 3,
                                            "other text entirely\n" * 3))
    reply = ide.call("updateContent", {"path": "main.py", "patch": patch})
    assert reply["success"] is False and reply["path"] == "main.py"
    assert "does not apply" in reply["error"]
    garbage = ide.call("updateContent", {"path": "main.py", "patch": "@@ nonsense"})
    assert garbage["success"] is False
    binary = ide.call("updateContent", {"path": "logo.png", "patch": patch})
    assert binary["success"] is False
    assert (workspace / "main.py").read_text() == "print('hello')\n"
    assert (workspace / "logo.png").read_bytes() == b"\x89PNG\r\n\x1a\n\x00\xff\xfe"


def test_create_rename_copy_delete(ide, workspace):
    assert ide.call("createFolder", {"path": "pkg"}) == {"success": True, "path": "pkg"}
    assert ide.call("createFile", {"path": "pkg/a.py"}) == {"success": True, "path": "pkg/a.py"}
    assert (workspace / "pkg" / "a.py").read_bytes() == b""
    again = ide.call("createFile", {"path": "pkg/a.py"})
    assert again["success"] is False and "exists" in again["error"]
    assert ide.call("updateContent", {"path": "pkg/a.py", "content": "A = 1\n"})["success"]

    assert ide.call("rename", {"oldPath": "pkg/a.py", "newPath": "pkg/b.py"}) == {
        "success": True, "oldPath": "pkg/a.py", "newPath": "pkg/b.py"}
    clash = ide.call("rename", {"oldPath": "pkg/b.py", "newPath": "main.py"})
    assert clash["success"] is False
    into_itself = ide.call("rename", {"oldPath": "pkg", "newPath": "pkg/inner"})
    assert into_itself["success"] is False

    assert ide.call("copy", {"sourcePath": "pkg", "targetPath": "pkg2"})["success"] is True
    assert ide.call("copy", {"sourcePath": "main.py", "targetPath": "pkg2/main.py"}) == {
        "success": True, "sourcePath": "main.py", "targetPath": "pkg2/main.py"}
    assert (workspace / "pkg2" / "b.py").read_text() == "A = 1\n"
    assert (workspace / "pkg2" / "main.py").read_text() == "print('hello')\n"

    assert ide.call("delete", {"path": "pkg"}) == {"success": True, "path": "pkg"}
    assert ide.call("delete", {"path": "link_out"})["success"] is True  # the link only
    assert not (workspace / "pkg").exists() and not (workspace / "link_out").is_symlink()
    assert (workspace.parent / "outside" / "secret.txt").read_text() == OUTSIDE
    gone = ide.call("delete", {"path": "pkg"})
    assert gone["success"] is False and gone["path"] == "pkg"


def test_other_tabs_hear_of_changes(runner, ide):
    with IdeClient(ws_url(runner), ide_token()) as other:
        other.welcome()
        ide.call("createFile", {"path": "shared.txt"})
        assert other.expect("fileChanged")["data"] == {"kind": "create", "path": "shared.txt"}


ESCAPES = ["../outside/secret.txt", "/etc/passwd", "src/../../outside/secret.txt",
           "link_out/secret.txt", "main.py\x00.txt", "a\\b", "x" * 300]


@pytest.mark.parametrize("path", ESCAPES)
def test_paths_leaving_the_workspace_are_refused(ide, workspace, path):
    before = tree(workspace)
    read = ide.call("fetchContent", {"path": path})
    assert read["success"] is False and read["path"] == path
    assert OUTSIDE not in json.dumps(read)
    for event, data in [
        ("updateContent", {"path": path, "content": "pwned"}),
        ("createFile", {"path": path}),
        ("createFolder", {"path": path}),
        ("delete", {"path": path}),
        ("rename", {"oldPath": "main.py", "newPath": path}),
        ("rename", {"oldPath": path, "newPath": "stolen.txt"}),
        ("copy", {"sourcePath": path, "targetPath": "stolen.txt"}),
        ("copy", {"sourcePath": "main.py", "targetPath": path}),
    ]:
        reply = ide.call(event, data)
        assert reply["success"] is False, (event, data, reply)
    listing = ide.call("fetchDir", {"Dir": path})
    assert "error" in listing and "contents" not in listing
    assert tree(workspace) == before
    assert (workspace.parent / "outside" / "secret.txt").read_text() == OUTSIDE


def test_a_link_out_is_never_followed_but_can_be_removed(ide, workspace):
    secret = workspace.parent / "outside" / "secret.txt"
    for event, data in [
        ("fetchContent", {"path": "file_out"}),
        ("updateContent", {"path": "file_out", "content": "pwned"}),
        ("createFile", {"path": "file_out"}),
        ("copy", {"sourcePath": "main.py", "targetPath": "file_out"}),
    ]:
        reply = ide.call(event, data)
        assert reply["success"] is False and OUTSIDE not in json.dumps(reply), (event, reply)
    assert ide.call("copy", {"sourcePath": "file_out", "targetPath": "copy_out"})["success"]
    assert os.readlink(workspace / "copy_out") == str(secret)  # the link, not the secret
    assert ide.call("fetchContent", {"path": "copy_out"})["success"] is False
    assert ide.call("rename", {"oldPath": "file_out", "newPath": "moved_out"})["success"]
    assert ide.call("delete", {"path": "moved_out"})["success"]
    assert ide.call("delete", {"path": "copy_out"})["success"]
    assert not (workspace / "moved_out").is_symlink() and secret.read_text() == OUTSIDE


def test_oversized_and_malformed_frames_are_answered_and_the_socket_stays(ide, workspace):
    ide.send("updateContent", {"path": "big.txt", "content": "x" * (7 * 1024 * 1024)})
    assert ide.expect("error")["data"] == {"message": "frame too large", "event": None}
    assert not (workspace / "big.txt").exists()
    too_big = ide.call("updateContent", {"path": "big.txt", "content": "x" * (5 * 1024 * 1024 + 1)})
    assert too_big["success"] is False and not (workspace / "big.txt").exists()
    ide.send_raw("{not json")
    assert ide.expect("error")["data"]["event"] is None
    ide.send_raw("[1, 2]")
    assert ide.expect("error")["data"]["event"] is None
    ide.send("launchMissiles", {})
    assert ide.expect("error")["data"] == {"message": "unknown event", "event": "launchMissiles"}
    assert ide.call("auth", {"token": "again"}) == {"success": True}  # already in
    missing = ide.call("updateContent", {"content": "x"})
    assert missing["success"] is False
    assert ide.call("fetchContent", {"path": "main.py"})["content"] == "print('hello')\n"


# -- terminals and run -----------------------------------------------------------------------
def _pid_of(ide: IdeClient, session: str) -> int:
    ide.send("terminalInput", {"sessionId": session, "data": "echo PID=$$:$((1+1))\n"})
    return int(ide.terminal_match(session, r"PID=(\d+):2").group(1))


def test_terminal_runs_commands_and_ends_with_its_socket(runner):
    with IdeClient(ws_url(runner), ide_token()) as ide:
        ide.welcome()
        session = ide.call("requestTerminal", {"cols": 100, "rows": 30},
                           reply="terminalConnected")["sessionId"]
        ide.send("terminalInput", {"sessionId": session, "data": "echo $((6*7))\n"})
        assert "42" in ide.terminal_output(session, "42\r\n")
        shell = _pid_of(ide, session)
        ide.send("terminalInput", {"sessionId": session,
                                   "data": "nohup sleep 600 >/dev/null 2>&1 &\n"
                                   "echo BG=$!:$((1+1))\n"})
        background = int(ide.terminal_match(session, r"BG=(\d+):2").group(1))
        ide.send("terminalResize", {"sessionId": session, "cols": 132, "rows": 40})
        ide.send("terminalInput", {"sessionId": session, "data": "stty size\n"})
        ide.terminal_match(session, r"[\r\n]40 132\r")
        assert Path(f"/proc/{shell}").exists() and Path(f"/proc/{background}").exists()
    # The socket is closed: the shell and what it started in the background are gone.
    wait_for(lambda: not Path(f"/proc/{shell}").exists(), 30, "the shell to end")
    wait_for(lambda: not Path(f"/proc/{background}").exists(), 30, "the background job to end")


def test_terminals_are_per_socket_and_closable(runner, ide):
    first = ide.call("requestTerminal", {}, reply="terminalConnected")["sessionId"]
    second = ide.call("requestTerminal", {}, reply="terminalConnected")["sessionId"]
    assert first != second
    with IdeClient(ws_url(runner), ide_token()) as other:
        other.welcome()
        other.send("terminalInput", {"sessionId": first, "data": "touch stolen\n"})
        assert other.expect("terminalError")["data"]["sessionId"] == first
    shell = _pid_of(ide, second)
    closed = ide.call("closeTerminal", {"sessionId": second}, reply="terminalClosed")
    assert closed["sessionId"] == second
    wait_for(lambda: not Path(f"/proc/{shell}").exists(), 30, "the shell to end")
    error = ide.call("terminalInput", {"sessionId": second, "data": "x"}, reply="terminalError")
    assert error["sessionId"] == second
    bad = ide.call("terminalResize", {"sessionId": first, "cols": 0, "rows": 9000},
                   reply="terminalError")
    assert "cols and rows" in bad["error"]


def test_shells_die_with_a_killed_runner(workspace, tmp_path):
    r = Runner(workspace, tmp_path, RUNNER_REPL_ID="r1", RUNNER_KEY=KEY)
    try:
        with IdeClient(r.url + "ws", ide_token()) as ide:
            ide.welcome()
            session = ide.call("requestTerminal", {}, reply="terminalConnected")["sessionId"]
            shell = _pid_of(ide, session)
            r.proc.send_signal(signal.SIGKILL)
            r.proc.wait(30)
            wait_for(lambda: not Path(f"/proc/{shell}").exists(), 30, "the orphaned shell")
    finally:
        r.stop()


def test_run_and_stop_run(ide):
    started = ide.call("run", {}, reply="terminalConnected")
    assert started["run"] is True and started["command"] == "echo ran-$((40+2))"
    assert "ran-42" in ide.terminal_output(started["sessionId"], "ran-42")
    ended = ide.expect("terminalClosed")["data"]
    assert ended == {"sessionId": started["sessionId"], "exitCode": 0}


def test_stop_run_ends_a_long_program(workspace, tmp_path):
    r = Runner(workspace, tmp_path, RUNNER_REPL_ID="r1", RUNNER_KEY=KEY,
               RUNNER_RUN_COMMAND="echo started; exec sleep 600")
    try:
        with IdeClient(r.url + "ws", ide_token()) as ide:
            ide.welcome()
            session = ide.call("run", {}, reply="terminalConnected")["sessionId"]
            ide.terminal_output(session, "started")
            closed = ide.call("stopRun", {"sessionId": session}, reply="terminalClosed")
            # Ended by SIGHUP, said as a shell says it.
            assert closed == {"sessionId": session, "exitCode": 129, "signal": 1}
    finally:
        r.stop()


def _template(name: str) -> dict:
    return yaml.safe_load((ROOT / "repl_templates" / name / "template.yaml").read_text())


@pytest.mark.parametrize("name", ["bash", "python", "node", "go"])
def test_run_prints_each_templates_starter_output(name, tmp_path):
    needs = {"bash": "bash", "python": "python3", "node": "node", "go": "go"}[name]
    if shutil.which(needs) is None:
        pytest.skip(f"{needs} is not installed on this machine")
    ws = tmp_path / "ws"
    shutil.copytree(ROOT / "repl_templates" / name / "files", ws)
    r = Runner(ws, tmp_path, RUNNER_REPL_ID="r1", RUNNER_KEY=KEY,
               RUNNER_RUN_COMMAND=_template(name)["run"])
    try:
        with IdeClient(r.url + "ws", ide_token()) as ide:
            ide.welcome()
            session = ide.call("run", {}, reply="terminalConnected")["sessionId"]
            assert "Hello from your Devex REPL!" in ide.terminal_output(
                session, "Hello from your Devex REPL!", 120)
            assert ide.expect("terminalClosed", 120)["data"]["exitCode"] == 0
    finally:
        r.stop()


def test_run_without_a_run_command_is_an_error(workspace, tmp_path):
    r = Runner(workspace, tmp_path, RUNNER_REPL_ID="r1", RUNNER_KEY=KEY)
    try:
        with IdeClient(r.url + "ws", ide_token()) as ide:
            ide.welcome()
            failed = ide.call("run", {}, reply="terminalError")
            assert "no run command" in failed["error"] and failed["run"] is True
            assert "autosave is not configured" in ide.call("save", {})["error"]
    finally:
        r.stop()


# -- the stop --------------------------------------------------------------------------------
def test_quiesce_needs_a_control_token_then_stops_edits(runner, ide, workspace):
    url = runner.url + "_control/quiesce"
    for bad in (ide_token(), access_tokens.sign(KEY, "r1", access_tokens.RUNNER_SCOPE),
                tamper(access_tokens.sign(KEY, "r1", access_tokens.CONTROL_SCOPE))):
        assert requests.post(url, headers={"Authorization": f"Bearer {bad}"},
                             timeout=10).status_code == 401
    ide.call("createFile", {"path": "still-open.txt"})
    session = ide.call("requestTerminal", {}, reply="terminalConnected")["sessionId"]
    shell = _pid_of(ide, session)
    control = access_tokens.sign(KEY, "r1", access_tokens.CONTROL_SCOPE)
    resp = requests.post(url, headers={"Authorization": f"Bearer {control}"}, timeout=30)
    assert resp.status_code == 200 and resp.json() == {"ok": True, "closed": 1}
    assert "stopping" in ide.expect("stopping")["data"]["message"]
    assert ide.wait_closed() == 1001
    wait_for(lambda: not Path(f"/proc/{shell}").exists(), 30, "the shell to end")
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        IdeClient(ws_url(runner), ide_token())
    assert refused.value.status == 503
    assert requests.get(runner.url + "healthz", timeout=10).status_code == 200
    assert (workspace / "still-open.txt").exists()


def test_sigterm_tells_the_ide_before_the_runner_exits(runner):
    with IdeClient(ws_url(runner), ide_token()) as ide:
        ide.welcome()
        runner.proc.send_signal(signal.SIGTERM)
        assert ide.expect("stopping")["data"]["message"]
        assert ide.wait_closed() == 1001
    assert runner.proc.wait(30) == 0
