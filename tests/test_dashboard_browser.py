"""The dashboard in a real browser: Debian's chromium driven by Playwright, against the
embedded app (in-process Redis, worker thread, local runner processes) on 127.0.0.1.

Waiting is Playwright's auto-waiting ``expect``; nothing sleeps. Screenshots of the list,
the create form with an error, and a failed REPL go to ``test-artifacts/screenshots/``.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qsl, urlsplit

from devex.errors import RuntimeFailure
from devex.services.repls import Actor
from tests.support.browser import (
    QUICK,
    SLOW,
    assert_no_sideways_scrolling,
    assert_same_page,
    badges,
    create,
    expect,
    mark_page,
    needs_chromium,
    record_badges,
    row,
    row_names,
    shot,
    sign_in,
    status,
    watch_sockets,
)
from tests.support.waiting import wait_for

pytestmark = needs_chromium


def test_a_persons_whole_journey(page):
    sign_in(page)
    expect(page.get_by_text("No REPLs yet.")).to_be_visible()
    mark_page(page)
    record_badges(page)

    create(page, "journey")
    expect(status(page, "journey")).to_have_text("running", timeout=SLOW)
    assert_same_page(page)  # creating → starting → running arrived by polling, no reload
    seen = badges(page, "journey")
    assert seen[0] == "creating" and seen[-1] == "running", seen
    assert set(seen[1:-1]) <= {"creating", "starting"}, seen  # nothing but the way there
    expect(page.get_by_text("No REPLs yet.")).to_be_hidden()
    expect(page.get_by_label("Name")).to_have_value("")  # a fresh form for the next one
    expect(row(page, "journey")).to_contain_text("Python 3.12")
    shot(page, "list.png")
    page.set_viewport_size({"width": 360, "height": 760})
    assert_no_sideways_scrolling(page, "list")
    expect(page.get_by_text("No REPLs yet.")).to_be_hidden()
    shot(page, "list-360px.png")
    page.set_viewport_size({"width": 1100, "height": 760})

    # A second REPL goes in at the top of the list, above the first.
    create(page, "second", start=False)
    expect(status(page, "second")).to_have_text("stopped", timeout=SLOW)
    assert row_names(page) == ["second", "journey"]
    assert_same_page(page)

    requests, responses = [], []

    def on_request(request):
        requests.append(request)

    def on_response(response):
        responses.append(response)

    page.context.on("request", on_request)
    page.context.on("response", on_response)
    sockets = watch_sockets(page.context)
    with page.expect_popup() as popup_info:
        row(page, "journey").get_by_role("button", name="Open journey").click()
    ide = popup_info.value
    # The runner's own page, reached with the token the dashboard handed over ...
    expect(ide).to_have_title("Devex REPL")
    expect(ide.get_by_role("button", name="main.py")).to_be_visible()  # its socket took the token
    # ... in the URL's fragment, which no server (nor its access log) ever sees ...
    [opened] = [r for r in responses if urlsplit(r.url).path.endswith("/open")]
    assert opened.status == 303
    handed = urlsplit(opened.headers["location"])
    assert handed.fragment.startswith("token=") and len(handed.fragment) > 20
    assert "token" not in handed.query
    runner = f"{handed.scheme}://{handed.netloc}"
    assert runner.startswith("http://127.0.0.1:")
    to_runner = [r for r in requests if r.url.startswith(runner)]
    assert to_runner, "the browser never talked to the runner"
    for r in to_runner:
        assert "token" not in urlsplit(r.url).query, r.url
    # ... and sent to the runner in its WebSocket's first frame instead.
    [(socket_url, sent)] = sockets
    assert socket_url.startswith(runner.replace("http", "ws", 1)) and "token" not in socket_url
    token = dict(parse_qsl(handed.fragment))["token"]
    assert json.loads(sent[0]) == {"event": "auth", "data": {"token": token}}
    # The page drops it from the address bar.
    assert "token" not in ide.url and ide.evaluate("location.hash") == ""
    assert ide.request.get(runner + handed.path + "healthz").status == 200
    ide.close()
    page.context.remove_listener("request", on_request)
    page.context.remove_listener("response", on_response)

    row(page, "journey").get_by_role("button", name="Stop journey").click()
    expect(status(page, "journey")).to_have_text("stopped", timeout=SLOW)
    expect(row(page, "journey").get_by_role("button", name="Open journey")).to_have_count(0)

    row(page, "journey").get_by_role("button", name="Start journey").click()
    expect(status(page, "journey")).to_have_text("running", timeout=SLOW)

    questions = []

    def accept(dialog):
        questions.append(dialog.message)
        dialog.accept()

    page.on("dialog", accept)
    row(page, "journey").get_by_role("link", name="Delete journey").click()
    expect(row(page, "journey")).to_have_count(0, timeout=SLOW)
    row(page, "second").get_by_role("link", name="Delete second").click()
    expect(row(page, "second")).to_have_count(0, timeout=SLOW)
    assert questions == [
        "Delete “journey”? Its files are removed for good.",
        "Delete “second”? Its files are removed for good.",
    ]
    expect(page.get_by_text("No REPLs yet.")).to_be_visible()
    assert_same_page(page)


def test_bad_and_duplicate_names_are_shown_inline(page):
    sign_in(page)
    mark_page(page)

    create(page, "no/slashes", start=False)
    error = page.locator("#repl-name-error")
    expect(error).to_have_text(
        "The name may contain letters, digits, spaces, '-', '_' and '.' only."
    )
    expect(page.get_by_label("Name")).to_have_value("no/slashes")  # kept for fixing
    expect(page.get_by_label("Name")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#repl-rows tr.repl-row")).to_have_count(0)
    shot(page, "create-form-error.png")

    create(page, "Twin", start=False)
    expect(status(page, "Twin")).to_have_text("stopped", timeout=SLOW)
    expect(error).to_have_count(0)  # the form came back clean

    create(page, "twin", start=False)
    expect(error).to_have_text("You already have a REPL named 'twin'.")
    expect(page.locator("#repl-rows tr.repl-row")).to_have_count(1)
    assert_same_page(page)


def test_a_failed_start_shows_its_reason_and_retry_works(page, app, monkeypatch):
    runtime = app.extensions["devex"].components.runtime
    real_start = runtime.start
    calls = []

    def start_failing_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeFailure("simulated failure")
        return real_start(*args, **kwargs)

    # The embedded worker thread shares this process and these components.
    monkeypatch.setattr(runtime, "start", start_failing_once)

    sign_in(page)
    mark_page(page)
    create(page, "flaky", start=False)
    expect(status(page, "flaky")).to_have_text("stopped", timeout=SLOW)

    row(page, "flaky").get_by_role("button", name="Start flaky").click()
    expect(status(page, "flaky")).to_have_text("failed", timeout=SLOW)
    expect(row(page, "flaky").get_by_test_id("reason")).to_have_text(
        "Starting failed: simulated failure"
    )
    expect(row(page, "flaky").get_by_role("link", name="Force stop flaky")).to_be_visible()
    shot(page, "failed-repl.png")

    row(page, "flaky").get_by_role("button", name="Retry flaky").click()
    expect(status(page, "flaky")).to_have_text("running", timeout=SLOW)
    expect(row(page, "flaky").get_by_test_id("reason")).to_have_count(0)
    assert len(calls) == 2
    assert_same_page(page)

    row(page, "flaky").get_by_role("link", name="flaky", exact=True).click()
    expect(page).to_have_title("flaky · Devex")
    log = page.locator("ol.events")
    expect(log).to_contain_text("Starting failed: simulated failure")
    expect(log).to_contain_text("Running at http://127.0.0.1:")
    shot(page, "repl-detail.png")


def test_another_users_repl_never_appears_and_its_urls_answer_404(page, app):
    repls = app.extensions["devex"].repls
    theirs = repls.create(Actor(id="other", login="other"), "their-secret", "python", False).repl

    sign_in(page)
    create(page, "mine", start=False)
    expect(status(page, "mine")).to_have_text("stopped", timeout=SLOW)
    expect(status(page, "their-secret")).to_have_count(0)
    page.reload()
    expect(row(page, "mine")).to_have_count(1)
    expect(page.get_by_text("their-secret")).to_have_count(0)

    token = page.locator('meta[name="csrf-token"]').get_attribute("content")
    for path in ("", "/row", "/delete", "/force-stop"):
        assert page.request.get(f"/repls/{theirs.id}{path}").status == 404, path
    for action in ("start", "stop", "force-stop", "delete", "open"):
        r = page.request.post(
            f"/repls/{theirs.id}/{action}", headers={"X-CSRF-Token": token}, form={"next": "/"}
        )
        assert r.status == 404, action
    after = repls.get(Actor(id="other", login="other"), theirs.id)  # still there, untouched
    assert after.desired.value == "stopped" and after.status.value in ("creating", "stopped")

    page.goto(f"/repls/{theirs.id}")
    expect(page).to_have_title("Not found · Devex")
    expect(page.get_by_role("alert")).to_have_text("No such REPL.")


LONG_REASON = "Starting failed: pulling https://registry.example/" + "x" * 40 + "/" + "a1b2c3" * 30


def test_narrow_screens_never_scroll_sideways(page, app, monkeypatch):
    """At 360 px, no page is wider than the screen: the login page with an error, the list
    and the detail page with a long failure reason, the tokens page with a new token."""
    runtime = app.extensions["devex"].components.runtime

    def start_failing(*args, **kwargs):
        raise RuntimeFailure(LONG_REASON.removeprefix("Starting failed: "))

    monkeypatch.setattr(runtime, "start", start_failing)
    page.set_viewport_size({"width": 360, "height": 760})

    page.goto("/login?error=unavailable")
    expect(page.get_by_role("alert")).to_have_text(
        "GitHub cannot be reached right now; try again shortly."
    )
    assert_no_sideways_scrolling(page, "login page")

    sign_in(page)
    create(page, "narrow")
    expect(status(page, "narrow")).to_have_text("failed", timeout=SLOW)
    expect(row(page, "narrow").get_by_test_id("reason")).to_have_text(LONG_REASON)
    assert_no_sideways_scrolling(page, "list")

    row(page, "narrow").get_by_role("link", name="narrow", exact=True).click()
    expect(page).to_have_title("narrow · Devex")
    expect(page.get_by_test_id("reason")).to_have_text(LONG_REASON)
    assert_no_sideways_scrolling(page, "detail page")
    shot(page, "repl-detail-360px.png")

    page.goto("/tokens")
    page.get_by_label("Name").fill("ci-" + "y" * 40)
    page.get_by_role("button", name="Create token").click()
    expect(page.get_by_role("heading", name="created")).to_be_visible()
    assert_no_sideways_scrolling(page, "tokens page")
    shot(page, "tokens-360px.png")


def test_without_javascript_create_and_delete_work(browser, site, app):
    context = browser.new_context(
        base_url=site, java_script_enabled=False, viewport={"width": 1100, "height": 760}
    )
    context.set_default_timeout(QUICK)
    page = context.new_page()
    repls = app.extensions["devex"].repls
    me = Actor(id="local", login="local")
    try:
        sign_in(page)
        create(page, "plain", start=False)
        # A plain form post: the server redirects back to the list, which shows the new row.
        expect(page).to_have_title("Your REPLs · Devex")
        expect(row(page, "plain")).to_have_count(1)
        expect(page.get_by_text("No REPLs yet.")).to_be_hidden()
        [made] = repls.list(me)
        assert made.name == "plain" and made.desired.value == "stopped"

        # No hx-confirm without JavaScript: the link leads to a page that asks.
        row(page, "plain").get_by_role("link", name="Delete plain").click()
        expect(page).to_have_title("Delete plain · Devex")
        expect(page.get_by_role("heading", level=1)).to_have_text("Delete “plain”?")
        page.get_by_role("button", name="Yes, delete").click()
        expect(page).to_have_title("Your REPLs · Devex")

        wait_for(lambda: repls.list(me) == [], 60, "the REPL to be deleted")
        page.reload()  # nothing polls without JavaScript
        expect(row(page, "plain")).to_have_count(0)
        expect(page.get_by_text("No REPLs yet.")).to_be_visible()
    finally:
        context.close()
