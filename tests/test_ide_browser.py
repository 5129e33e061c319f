"""The IDE page (``runner/static/``) in a real browser: Debian's chromium driven by
Playwright, against the embedded app and the local runner processes it starts, reached the
way a person reaches it, from the dashboard's Open button.

Waiting is Playwright's auto-waiting ``expect`` / ``wait_for_function``; nothing sleeps.
Screenshots of the editor with a run's output and of a terminal go to
``test-artifacts/screenshots/ide-*.png``.
"""

from __future__ import annotations

import json
import re
from urllib.parse import urlsplit

from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.support.browser import (
    SLOW,
    assert_no_sideways_scrolling,
    create,
    expect,
    needs_chromium,
    row,
    shot,
    sign_in,
    status,
    watch_sockets,
)

pytestmark = needs_chromium

PROGRAM = 'print("marker-" + str(4242))\n'  # the marker appears in the output only

# The text of the terminal tab with this title (xterm draws on its own; its buffer holds the
# text as the terminal shows it).
TERMINAL_TEXT = """title => {
  const view = Object.values(window.devexTerminals || {}).find(v => v.title === title);
  if (!view) { return null; }
  const buffer = view.term.buffer.active;
  const lines = [];
  for (let i = 0; i < buffer.length; i++) {
    lines.push(buffer.getLine(i).translateToString(true));
  }
  return lines.join("\\n");
}"""


def open_ide(page, name: str):
    """Open's form posts to a new tab, which lands on the runner's page."""
    with page.expect_popup() as popup:
        row(page, name).get_by_role("button", name=f"Open {name}").click()
    ide = popup.value
    expect(ide).to_have_title("Devex REPL")
    expect(ide.locator("#connection")).to_have_text("Connected")
    return ide


def open_file(ide, path: str, showing: str) -> None:
    ide.locator(f'#file-tree button[data-path="{path}"]').click()
    expect(ide.locator("#current-file")).to_have_text(path)
    expect(ide.locator("#editor")).to_contain_text(showing)  # its content arrived


def wait_for_terminal(ide, title: str, pattern: str) -> None:
    """Until the terminal tab shows a line matching the pattern. A shell or a program may
    take its time to start on a busy machine: as long as a runner may."""
    try:
        ide.wait_for_function(
            f"([title, pattern]) => new RegExp(pattern, 'm').test(({TERMINAL_TEXT})(title))",
            arg=[title, pattern],
            timeout=SLOW,
        )
    except PlaywrightTimeout:
        text = ide.evaluate(TERMINAL_TEXT, title)
        raise AssertionError(f"{title} never showed {pattern!r}; it shows:\n{text}") from None


def test_edit_run_and_find_the_edit_after_a_restart(page):
    sockets = watch_sockets(page.context)
    sign_in(page)
    create(page, "ide")
    expect(status(page, "ide")).to_have_text("running", timeout=SLOW)

    ide = open_ide(page, "ide")
    # The token went to the runner in the socket's first frame, not in its URL.
    [(url, sent)] = sockets
    assert urlsplit(url).path == "/ws" and "token" not in url
    first = json.loads(sent[0])
    assert first["event"] == "auth" and len(first["data"]["token"]) > 20
    assert all(json.loads(frame)["event"] != "auth" for frame in sent[1:])

    open_file(ide, "main.py", "Hello from your Devex REPL!")
    expect(ide.locator("#save-state")).to_have_text("Saved")
    ide.evaluate("code => window.devexEditor.setValue(code)", PROGRAM)
    expect(ide.locator("#save-state")).to_have_text("Unsaved changes")
    expect(ide.locator("#save-state")).to_have_text("Saved")  # autosaved, about 1 s later

    ide.locator("#run-button").click()
    wait_for_terminal(ide, "Run", r"^marker-4242$")
    expect(ide.locator("#run-status")).to_have_text("exited with code 0")
    expect(ide.locator("#run-button")).to_have_text("Run")
    expect(ide.get_by_role("tab", name="Run")).to_have_attribute("aria-selected", "true")
    shot(ide, "ide-editor-run.png")

    ide.get_by_role("button", name="Save now").click()
    expect(ide.locator("#backup-state")).to_have_text(
        re.compile(r"^Backed up \d\d:\d\d:\d\d$"), timeout=SLOW
    )

    row(page, "ide").get_by_role("button", name="Stop ide").click()
    expect(status(page, "ide")).to_have_text("stopped", timeout=SLOW)
    expect(ide.locator("#connection")).to_have_text("Stopped")  # told, and not reconnecting
    expect(ide.locator("#notice")).to_contain_text("Open it again from the dashboard")
    ide.close()

    row(page, "ide").get_by_role("button", name="Start ide").click()
    expect(status(page, "ide")).to_have_text("running", timeout=SLOW)
    ide = open_ide(page, "ide")
    open_file(ide, "main.py", "marker-")
    assert ide.evaluate("window.devexEditor.getValue()") == PROGRAM


def test_terminals_and_stopping_a_run(page):
    sign_in(page)
    create(page, "shell")
    expect(status(page, "shell")).to_have_text("running", timeout=SLOW)
    ide = open_ide(page, "shell")

    # One terminal comes with the page; "+ Terminal" opens another, in front.
    expect(ide.get_by_role("tab", name="Terminal 1")).to_be_visible()
    ide.get_by_role("button", name="New terminal").click()
    second = ide.get_by_role("tab", name="Terminal 2")
    expect(second).to_have_attribute("aria-selected", "true")
    ide.keyboard.type("echo $((6*7))\n")  # the new terminal has the focus
    wait_for_terminal(ide, "Terminal 2", r"^42$")
    shot(ide, "ide-terminal.png")

    # A program that would run for a minute: the Run button turns into Stop.
    open_file(ide, "main.py", "Hello from your Devex REPL!")
    ide.evaluate(
        "code => window.devexEditor.setValue(code)",
        'import time\nprint("waiting", flush=True)\ntime.sleep(60)\n',
    )
    expect(ide.locator("#save-state")).to_have_text("Saved")
    ide.locator("#run-button").click()
    wait_for_terminal(ide, "Run", r"^waiting$")
    expect(ide.locator("#run-button")).to_have_text("Stop")
    ide.locator("#run-button").click()
    expect(ide.locator("#run-status")).to_have_text(re.compile(r"^ended by signal \d+$"))
    expect(ide.locator("#run-button")).to_have_text("Run")
    expect(ide.get_by_role("tab")).to_have_count(3)  # two terminals and the run

    # Narrow screens: the panels stack and nothing scrolls sideways.
    ide.set_viewport_size({"width": 360, "height": 760})
    assert_no_sideways_scrolling(ide, "IDE")
    expect(ide.locator("#editor")).to_be_visible()
    expect(ide.locator("#terminal-panels")).to_be_visible()
    shot(ide, "ide-360px.png")
