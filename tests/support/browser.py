"""Browser tests' shared parts: Debian's chromium through Playwright, the embedded app served
on a free port, and helpers that read the dashboard as a person does. Registered as a
pytest plugin in ``tests/conftest.py``; nothing here sleeps (Playwright's ``expect`` waits).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SLOW = 60_000  # ms: starting a runner process, with margin for a busy CI machine
QUICK = 15_000




@pytest.fixture(scope="module")
def browser() -> Iterator:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def site(app) -> Iterator[str]:
    """The embedded app served by werkzeug on a free port of 127.0.0.1."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="dashboard-http", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(10)
    server.server_close()


@pytest.fixture
def page(browser, site):
    context = browser.new_context(base_url=site, viewport={"width": 1100, "height": 760})
    context.set_default_timeout(QUICK)
    page = context.new_page()
    yield page
    context.close()


def sign_in(page) -> None:
    page.goto("/")
    expect(page).to_have_title("Sign in · Devex")
    page.get_by_role("button", name="Continue as local user").click()
    expect(page).to_have_title("Your REPLs · Devex")


def create(page, name: str, *, start: bool = True, template: str = "python") -> None:
    page.get_by_label("Name").fill(name)
    page.get_by_label("Template").select_option(template)
    page.get_by_label("Start it now").set_checked(start)
    page.get_by_role("button", name="Create REPL").click()


def row(page, name: str):
    return page.locator("#repl-rows tr.repl-row").filter(
        has=page.get_by_role("link", name=name, exact=True)
    )


def status(page, name: str):
    return row(page, name).get_by_test_id("status")


def mark_page(page) -> None:
    """A marker that only survives while the page is never reloaded or left."""
    page.evaluate("window.__devexMarker = 'still the same page'")


def assert_same_page(page) -> None:
    assert page.evaluate("window.__devexMarker") == "still the same page"


def record_badges(page) -> None:
    """From now on, note every status each row shows (``window.__badges[name]``), however
    briefly: a MutationObserver sees each swap before the next one can happen."""
    page.evaluate(
        """() => {
          window.__badges = {};
          const note = () => {
            for (const tr of document.querySelectorAll("#repl-rows tr.repl-row")) {
              const name = tr.querySelector(".repl-name").textContent.trim();
              const status = tr.querySelector("[data-testid=status]").textContent.trim();
              const seen = (window.__badges[name] = window.__badges[name] || []);
              if (seen[seen.length - 1] !== status) { seen.push(status); }
            }
          };
          new MutationObserver(note).observe(document.getElementById("repl-rows"),
            {childList: true, subtree: true, characterData: true, attributes: true});
        }"""
    )


def badges(page, name: str) -> list[str]:
    return page.evaluate("name => (window.__badges || {})[name] || []", name)


def row_names(page) -> list[str]:
    return [n.strip() for n in page.locator("#repl-rows tr.repl-row .repl-name").all_inner_texts()]


def assert_no_sideways_scrolling(page, what: str) -> None:
    page.wait_for_load_state("load")  # the style sheet applies
    width = page.evaluate("document.scrollingElement.scrollWidth")
    assert width <= 360, f"{what}: {width} px wide at 360 px"


def watch_sockets(context) -> list[tuple[str, list]]:
    """From now on, every WebSocket any page of the context opens: (url, frames sent)."""
    sockets: list[tuple[str, list]] = []

    def on_socket(ws) -> None:
        sent: list = []
        ws.on("framesent", lambda payload: sent.append(payload))
        sockets.append((ws.url, sent))

    context.on("page", lambda p: p.on("websocket", on_socket))
    return sockets


def shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / name), full_page=True)



needs_chromium = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian chromium at /usr/bin/chromium (scripts/ensure-test-tools installs it)",
    ),
]
