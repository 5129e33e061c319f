"""The HTMX dashboard through Flask's test client: pages, forms, partials, CSRF and 404s.

Most tests use an app without a worker, so a REPL stays in the status a test puts it in;
the browser tests (test_dashboard_browser.py) drive the real lifecycle.
"""

from __future__ import annotations

import re

import pytest

from devex import create_app
from devex.infra import keys
from devex.models import Repl, Status
from devex.services.repls import Actor
from devex.web.actions import actions_for
from devex.web.htmx import htmx
from devex.web.redirects import safe_next
from devex.web.timefmt import ago
from tests.support.auth_helpers import walk_to
from tests.support.github_login import LOGIN_TEXTS

HX = {"HX-Request": "true"}
ME = Actor(id="local", login="local")
OTHER = Actor(id="other", login="other")


@pytest.fixture
def idle_app(data_dir):
    """No worker: jobs are queued but never run, so statuses stay where a test puts them."""
    return create_app(
        {
            "TESTING": True,
            "DEVEX_DATA_DIR": data_dir,
            "DEVEX_SECRET_KEY": "test-secret",
            "DEVEX_EMBEDDED_WORKER": "false",
            "DEVEX_QUOTA_REPLS": "3",
        }
    )


@pytest.fixture
def web(idle_app):
    return idle_app.test_client()


@pytest.fixture
def user(web):
    """Signs in through the login page's form, like a person; returns the CSRF token."""
    page = web.get("/login")
    assert 'action="/auth/local"' in page.text
    r = web.post("/auth/local", data={"next": "/"})
    assert r.status_code == 302 and r.headers["Location"] == "/"
    return meta_token(web.get("/").text)


def form_token(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def meta_token(html: str) -> str:
    return re.search(r'<meta name="csrf-token" content="([^"]+)"', html).group(1)


def service(app):
    return app.extensions["devex"].repls


def store(app):
    return app.extensions["devex"].components.store


def make(app, name="alpha", owner=ME) -> Repl:
    return service(app).create(owner, name, "python", start=False).repl


def set_status(app, repl_id: str, status: Status, **fields) -> None:
    walk_to(store(app), repl_id, status, **fields)


def status_of(app, repl_id: str) -> Status:
    return store(app).require(repl_id).status


# -- signing in ---------------------------------------------------------------------------


def test_anonymous_visitor_is_sent_to_the_login_page(web):
    r = web.get("/")
    assert r.status_code == 302
    assert r.headers["Location"] == "/login?next=/"
    r = web.get("/repls/abc123/row", headers=HX)
    assert r.status_code == 401 and r.headers["HX-Redirect"].startswith("/login")


def test_login_page_offers_the_local_user_in_embedded_mode(web):
    page = web.get("/login?next=/repls/abc")
    assert page.status_code == 200
    assert "<title>Sign in · Devex</title>" in page.text
    assert "Continue as local user" in page.text
    assert 'name="next" value="/repls/abc"' in page.text
    assert "Sign in with GitHub" not in page.text


# Each is a ``next`` some browser would follow off this site (Werkzeug strips the tab and
# leaves ``//evil.example/``; browsers read ``\`` as ``/``), or a newline in a header (500).
EVIL_NEXT = [
    "/%09/evil.example",
    "/%0a/evil.example",
    "/%0d/evil.example",
    "/%09%0d%0a/evil.example",
    "/%5C%5Cevil.example",  # /\\evil.example
    "/%5Cevil.example",
    "//evil.example",
    "///evil.example",
    "https://evil.example/",
    "https:/evil.example",
    "%09//evil.example",
    "javascript:alert(1)",
    "evil.example",
    "/%7F/evil.example",
]


def _stays_here(location: str) -> bool:
    return location == "/"


def test_login_page_never_redirects_elsewhere(web, user):
    assert web.get("/login?next=//evil.example/").headers["Location"] == "/"
    assert web.get("/login?next=/repls/x").headers["Location"] == "/repls/x"
    for evil in EVIL_NEXT:
        r = web.get(f"/login?next={evil}")
        assert r.status_code == 302, evil
        assert _stays_here(r.headers["Location"]), (evil, r.headers["Location"])


@pytest.mark.parametrize("evil", EVIL_NEXT)
def test_local_login_never_redirects_elsewhere(web, evil):
    page = web.get(f"/login?next={evil}")
    assert page.status_code == 200
    assert 'name="next" value="/"' in page.text  # the form carries only a safe path
    r = web.post(f"/auth/local?next={evil}", data={"next": ""})
    assert r.status_code == 302 and _stays_here(r.headers["Location"]), r.headers["Location"]
    web.post("/auth/logout", data={"csrf_token": meta_token(web.get("/").text)})
    from urllib.parse import unquote

    r = web.post("/auth/local", data={"next": unquote(evil)})
    assert r.status_code == 302 and _stays_here(r.headers["Location"]), r.headers["Location"]


@pytest.mark.parametrize("evil", EVIL_NEXT)
def test_actions_logout_and_confirm_never_lead_elsewhere(idle_app, web, user, evil):
    from urllib.parse import unquote

    raw = unquote(evil)
    repl = make(idle_app)
    set_status(idle_app, repl.id, Status.STOPPED)
    page = web.get(f"/repls/{repl.id}/delete?next={evil}")
    assert page.status_code == 200
    assert '<a class="button" href="/">Cancel</a>' in page.text
    assert 'name="next" value="/"' in page.text
    r = web.post(f"/repls/{repl.id}/start", data={"csrf_token": user, "next": raw})
    assert r.status_code == 303 and r.headers["Location"] == "/"
    r = web.post(f"/repls/{repl.id}/delete", data={"csrf_token": user, "next": raw})
    assert r.status_code == 303 and r.headers["Location"] == "/"
    r = web.post("/auth/logout", data={"csrf_token": user, "next": raw})
    assert r.status_code == 302 and r.headers["Location"] == "/login"


def test_logout_follows_a_local_next(web, user):
    r = web.post("/auth/logout", data={"csrf_token": user, "next": "/login?next=/tokens"})
    assert r.headers["Location"] == "/login?next=/tokens"


@pytest.mark.parametrize(
    "target",
    [
        "/\t/evil.example",
        "/\n/x",
        "/\r/x",
        "/x\x7f",
        "/\\evil",
        "/\\\\evil",
        "//evil",
        "///evil",
        "https://evil",
        "https:/evil",
        "evil/x",
    ],
)
def test_safe_next_refuses(target):
    assert safe_next(target) == "/"


def test_safe_next_keeps_local_paths():
    for target in ("/", "/repls/a", "/repls/a?next=//x", "/tokens#new", "/a//b", "/%09"):
        assert safe_next(target) == target
    assert safe_next(None) == "/" and safe_next("", default="/x") == "/x"


def test_login_page_offers_github_in_cluster_mode(data_dir):
    app = create_app(
        {
            "TESTING": True,
            "DEVEX_DATA_DIR": data_dir,
            "DEVEX_SECRET_KEY": "test-secret",
            "DEVEX_AUTH": "github",
            "DEVEX_GITHUB_CLIENT_ID": "id",
            "DEVEX_GITHUB_CLIENT_SECRET": "secret",
            "DEVEX_EMBEDDED_WORKER": "false",
        }
    )
    client = app.test_client()
    page = client.get("/login")
    assert 'href="/auth/github?next=%2F"' in page.text
    assert "Continue as local user" not in page.text
    assert 'role="alert"' not in page.text
    for code, message in LOGIN_TEXTS.items():
        page = client.get(f"/login?error={code}")
        assert f'data-testid="login-error">{message}</p>' in page.text.replace("&#39;", "'")
    # Never the query string's own words: unknown codes get a generic text.
    page = client.get("/login?error=Your+account+is+locked.+Call+%2B1-555-EVIL")
    assert "locked" not in page.text and "555" not in page.text
    assert 'data-testid="login-error">Signing in did not work. Please try again.</p>' in page.text


def test_sign_out_form_ends_the_session(web, user):
    assert 'action="/auth/logout"' in web.get("/").text
    r = web.post("/auth/logout", data={"csrf_token": user})
    assert r.status_code == 302
    assert web.get("/").status_code == 302


# -- the list -------------------------------------------------------------------------------


def test_empty_list_invites_to_create_the_first_repl(web, user):
    page = web.get("/")
    assert page.status_code == 200
    assert "<title>Your REPLs · Devex</title>" in page.text
    assert "No REPLs yet." in page.text
    assert 'id="repl-rows"' in page.text
    assert '<label for="repl-name">Name</label>' in page.text
    assert "Python · Python 3.12" in page.text


def test_list_shows_name_template_language_status_and_actions(idle_app, web, user):
    repl = make(idle_app, "alpha")
    set_status(idle_app, repl.id, Status.STOPPED)
    page = web.get("/").text
    row = re.search(rf'<tr id="repl-{repl.id}".*?</tr>', page, re.S).group(0)
    assert ">alpha</a>" in row
    assert "Python" in row and "Python 3.12" in row
    assert 'class="badge badge-idle" data-testid="status">stopped<' in row
    assert "just now" in row
    assert f'action="/repls/{repl.id}/start"' in row
    assert f'href="/repls/{repl.id}/delete?next=%2F"' in row
    assert "hx-confirm=" in row
    assert "/stop" not in row and "/open" not in row
    assert "hx-trigger" not in row  # final status: no polling


def test_every_form_carries_the_csrf_token(idle_app, web, user):
    for status in (Status.STOPPED, Status.FAILED):
        set_status(idle_app, make(idle_app, f"r-{status.value}").id, status)
    page = web.get("/").text
    forms = re.findall(r"<form\b.*?</form>", page, re.S)
    assert len(forms) == 4  # sign out, create, Start, Retry
    for form in forms:
        assert f'name="csrf_token" value="{user}"' in form


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (Status.CREATING, ("delete",)),
        (Status.STOPPED, ("start", "delete")),
        (Status.STARTING, ("stop", "delete")),
        (Status.RUNNING, ("open", "stop", "delete")),
        (Status.STOPPING, ("force-stop", "delete")),
        (Status.DELETING, ()),
        (Status.FAILED, ("retry", "force-stop", "delete")),
    ],
)
def test_actions_follow_the_status(status, expected):
    repl = Repl(
        id="a1", name="n", template="python", owner_id="u", owner_login="u", storage_prefix="u/a1/"
    )
    repl.status = status
    repl.url = "http://127.0.0.1:9/"
    assert actions_for(repl) == expected


def test_failed_repl_shows_its_reason_retry_and_force_stop(idle_app, web, user):
    repl = make(idle_app, "flaky")
    set_status(idle_app, repl.id, Status.FAILED, error="Starting failed: out of memory")
    row = web.get(f"/repls/{repl.id}/row").text
    assert 'badge-bad" data-testid="status">failed<' in row
    assert "Starting failed: out of memory" in row
    assert ">Retry</button>" in row and f'action="/repls/{repl.id}/start"' in row
    assert ">Force stop</a>" in row


def test_another_users_repl_never_appears_and_its_urls_answer_404(idle_app, web, user):
    theirs = make(idle_app, "secret-project", owner=OTHER)
    set_status(idle_app, theirs.id, Status.STOPPED)
    assert "secret-project" not in web.get("/").text
    for path in ("", "/row", "/delete", "/force-stop"):
        r = web.get(f"/repls/{theirs.id}{path}")
        assert r.status_code == 404, path
        assert "No such REPL." in r.text
        assert "secret-project" not in r.text
    for action in ("start", "stop", "force-stop", "delete", "open"):
        r = web.post(f"/repls/{theirs.id}/{action}", data={"csrf_token": user})
        assert r.status_code == 404, action
        r = web.post(f"/repls/{theirs.id}/{action}", headers={**HX, "X-CSRF-Token": user})
        assert r.status_code == 404, action
    assert status_of(idle_app, theirs.id) == Status.STOPPED


def test_unknown_repl_gets_a_readable_404_page(web, user):
    r = web.get("/repls/nosuchrepl")
    assert r.status_code == 404
    assert "<title>Not found · Devex</title>" in r.text
    assert "No such REPL." in r.text
    assert "Back to your REPLs" in r.text


# -- creating ---------------------------------------------------------------------------------


def test_create_without_javascript_redirects_to_the_list(idle_app, web, user):
    r = web.post("/repls", data={"csrf_token": user, "name": "  first  ", "template": "python"})
    assert r.status_code == 303 and r.headers["Location"] == "/"
    [repl] = service(idle_app).list(ME)
    assert repl.name == "first"
    assert repl.desired.value == "stopped"  # the "Start it now" box was not ticked
    assert ">first</a>" in web.get("/").text


def test_create_with_htmx_answers_the_new_row_and_a_fresh_form(idle_app, web, user):
    r = web.post(
        "/repls",
        data={"name": "fresh", "template": "python", "start": "1"},
        headers={**HX, "X-CSRF-Token": user},
    )
    assert r.status_code == 201
    assert r.text.lstrip().startswith('<tr id="repl-')
    assert 'data-status="creating"' in r.text
    assert 'hx-trigger="every 1s"' in r.text  # transitional: the row polls itself
    assert re.search(r'<template>\s*<form id="create-form"[^>]*hx-swap-oob="true"', r.text)
    assert 'name="name" value=""' in r.text
    [repl] = service(idle_app).list(ME)
    assert repl.desired.value == "running"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("bad/name", "letters, digits, spaces"),
        ("   ", "must not be empty"),
        ("x" * 65, "at most 64 characters"),
    ],
)
def test_bad_name_is_shown_inline_and_nothing_is_created(idle_app, web, user, name, message):
    r = web.post("/repls", data={"csrf_token": user, "name": name, "template": "python"})
    assert r.status_code == 400
    assert 'aria-invalid="true"' in r.text
    assert 'id="repl-name-error"' in r.text and message in r.text
    assert "<title>Your REPLs · Devex</title>" in r.text  # the whole page, form kept
    assert service(idle_app).list(ME) == []


def test_bad_name_with_htmx_swaps_only_the_form(web, user):
    r = web.post(
        "/repls",
        data={"name": "no/slashes", "template": "python"},
        headers={**HX, "X-CSRF-Token": user},
    )
    assert r.status_code == 400
    assert r.headers["HX-Retarget"] == "#create-form"
    assert r.headers["HX-Reswap"] == "outerHTML"
    assert r.text.lstrip().startswith('<form id="create-form"')
    assert 'value="no/slashes"' in r.text
    assert "hx-swap-oob" not in r.text


def test_unknown_template_is_shown_at_the_template_picker(web, user):
    r = web.post("/repls", data={"csrf_token": user, "name": "ok", "template": "cobol"})
    assert r.status_code == 400
    assert 'id="repl-template-error"' in r.text and "Unknown template" in r.text


def test_duplicate_name_is_shown_inline(idle_app, web, user):
    make(idle_app, "Twin")
    r = web.post("/repls", data={"csrf_token": user, "name": "twin", "template": "python"})
    assert r.status_code == 409
    assert "You already have a REPL named &#39;twin&#39;." in r.text
    assert 'id="repl-name-error"' in r.text


def test_quota_is_shown_as_a_form_error_with_retry_after(idle_app, web, user):
    for i in range(3):
        make(idle_app, f"r{i}")
    r = web.post(
        "/repls",
        data={"name": "one-more", "template": "python"},
        headers={**HX, "X-CSRF-Token": user},
    )
    assert r.status_code == 429
    assert r.headers["Retry-After"] == "60"
    assert "limit of 3 REPLs" in r.text and "form-error" in r.text


def test_a_post_without_the_csrf_token_changes_nothing(idle_app, web, user):
    r = web.post("/repls", data={"name": "sneaky", "template": "python"})
    assert r.status_code == 403
    assert "Missing or wrong CSRF token." in r.text
    repl = make(idle_app, "mine")
    set_status(idle_app, repl.id, Status.STOPPED)
    for action in ("start", "delete", "force-stop"):
        r = web.post(f"/repls/{repl.id}/{action}", data={"csrf_token": "wrong"})
        assert r.status_code == 403
    assert status_of(idle_app, repl.id) == Status.STOPPED
    assert [r.name for r in service(idle_app).list(ME)] == ["mine"]


# -- live status --------------------------------------------------------------------------------


def test_row_partial_polls_while_transitional_and_answers_286_when_final(idle_app, web, user):
    repl = make(idle_app, "moving")
    r = web.get(f"/repls/{repl.id}/row", headers=HX)
    assert r.status_code == 200
    assert f'hx-get="/repls/{repl.id}/row" hx-trigger="every 1s"' in r.text
    set_status(idle_app, repl.id, Status.STOPPED)
    r = web.get(f"/repls/{repl.id}/row", headers=HX)
    assert r.status_code == 286  # htmx stops polling
    assert "hx-trigger" not in r.text and 'data-status="stopped"' in r.text


def test_row_of_a_deleted_repl_removes_itself(idle_app, web, user):
    repl = make(idle_app, "going")
    store(idle_app).delete(store(idle_app).require(repl.id))
    r = web.get(f"/repls/{repl.id}/row", headers=HX)
    assert r.status_code == 404
    assert r.headers["HX-Reswap"] == "delete"


def test_detail_shows_the_event_log_and_polls_while_transitional(idle_app, web, user):
    repl = make(idle_app, "logged")
    store(idle_app).add_event(repl.id, "files", "Copied 3 starter files.")
    page = web.get(f"/repls/{repl.id}")
    assert page.status_code == 200
    assert "<title>logged · Devex</title>" in page.text
    assert "Event log" in page.text
    assert "Created from the python template." in page.text and "by local" in page.text
    assert "Copied 3 starter files." in page.text
    partial = web.get(f"/repls/{repl.id}", headers={**HX, "HX-Target": "repl-detail"})
    assert partial.status_code == 200 and partial.text.lstrip().startswith(
        '<section id="repl-detail"'
    )
    set_status(idle_app, repl.id, Status.FAILED, error="Creating failed: disk full")
    store(idle_app).add_event(repl.id, "failed", "Creating failed: disk full")
    partial = web.get(f"/repls/{repl.id}", headers={**HX, "HX-Target": "repl-detail"})
    assert partial.status_code == 286
    assert partial.text.count("Creating failed: disk full") == 2  # the reason and the event


# -- actions ------------------------------------------------------------------------------------


def test_start_without_javascript_redirects_back(idle_app, web, user):
    repl = make(idle_app)
    set_status(idle_app, repl.id, Status.STOPPED)
    r = web.post(f"/repls/{repl.id}/start", data={"csrf_token": user, "next": f"/repls/{repl.id}"})
    assert r.status_code == 303 and r.headers["Location"] == f"/repls/{repl.id}"
    assert status_of(idle_app, repl.id) == Status.STARTING


def test_actions_with_htmx_answer_the_row(idle_app, web, user):
    repl = make(idle_app)
    set_status(idle_app, repl.id, Status.RUNNING, url="http://127.0.0.1:9/")
    r = web.post(f"/repls/{repl.id}/stop", headers={**HX, "X-CSRF-Token": user})
    assert r.status_code == 200
    assert 'data-status="stopping"' in r.text and 'hx-trigger="every 1s"' in r.text
    r = web.post(f"/repls/{repl.id}/force-stop", headers={**HX, "X-CSRF-Token": user})
    assert r.status_code == 200
    assert "Force stop requested" in web.get(f"/repls/{repl.id}").text


def test_retry_of_a_failed_repl_starts_it(idle_app, web, user):
    repl = make(idle_app)
    set_status(idle_app, repl.id, Status.FAILED, error="Starting failed: boom")
    r = web.post(f"/repls/{repl.id}/start", headers={**HX, "X-CSRF-Token": user})
    assert r.status_code == 200 and 'data-status="starting"' in r.text
    assert "boom" not in r.text


def test_refused_action_is_shown_readably(idle_app, web, user):
    repl = make(idle_app)
    set_status(idle_app, repl.id, Status.DELETING)
    r = web.post(f"/repls/{repl.id}/start", headers={**HX, "X-CSRF-Token": user})
    assert r.status_code == 409
    assert r.headers["HX-Retarget"] == "#flash"
    assert 'role="alert">The REPL is deleting; it cannot be started now.</p>' in r.text
    r = web.post(f"/repls/{repl.id}/start", data={"csrf_token": user})
    assert r.status_code == 409
    assert "<title>Not possible now · Devex</title>" in r.text


def test_delete_asks_first_without_javascript(idle_app, web, user):
    repl = make(idle_app, "doomed")
    set_status(idle_app, repl.id, Status.STOPPED)
    page = web.get(f"/repls/{repl.id}/delete?next=/")
    assert page.status_code == 200
    assert "Delete “doomed”?" in page.text and "removed for good" in page.text
    assert status_of(idle_app, repl.id) == Status.STOPPED  # asking changes nothing
    r = web.post(
        f"/repls/{repl.id}/delete", data={"csrf_token": form_token(page.text), "next": "/"}
    )
    assert r.status_code == 303 and r.headers["Location"] == "/"
    assert status_of(idle_app, repl.id) == Status.DELETING


def test_delete_from_the_detail_page_returns_to_the_list(idle_app, web, user):
    repl = make(idle_app)
    r = web.post(f"/repls/{repl.id}/delete", data={"csrf_token": user, "next": f"/repls/{repl.id}"})
    assert r.headers["Location"] == "/"


def test_open_is_refused_unless_running(idle_app, web, user):
    repl = make(idle_app)
    set_status(idle_app, repl.id, Status.STOPPED)
    r = web.post(f"/repls/{repl.id}/open", data={"csrf_token": user})
    assert r.status_code == 409 and "start it first" in r.text


def test_open_hands_the_runner_a_short_lived_token(idle_app, web, user):
    repl = make(idle_app)
    set_status(idle_app, repl.id, Status.RUNNING, url="http://127.0.0.1:9/")
    r = web.post(f"/repls/{repl.id}/open", data={"csrf_token": user})
    assert r.status_code == 303
    location = r.headers["Location"]
    # In the fragment: browsers never send it, so no proxy or access log records it.
    assert location.startswith("http://127.0.0.1:9/#token=")
    assert "?" not in location


def test_redirect_after_an_action_stays_on_this_site(idle_app, web, user):
    repl = make(idle_app)
    set_status(idle_app, repl.id, Status.STOPPED)
    r = web.post(
        f"/repls/{repl.id}/start", data={"csrf_token": user, "next": "https://evil.example/"}
    )
    assert r.headers["Location"] == "/"


# -- helpers ------------------------------------------------------------------------------------


def test_htmx_helper_reads_the_hx_headers(idle_app):
    headers = {
        "HX-Request": "true",
        "HX-Target": "repl-rows",
        "HX-Trigger-Name": "caf%C3%A9",
        "HX-Trigger-Name-URI-AutoEncoded": "true",
    }
    with idle_app.test_request_context("/", headers=headers):
        hx = htmx()
        assert hx and hx.target == "repl-rows" and hx.trigger_name == "café"
    with idle_app.test_request_context("/", headers={"HX-Request": "true", "HX-Boosted": "true"}):
        assert not htmx()  # a boosted request wants the whole page
    with idle_app.test_request_context("/"):
        assert not htmx() and htmx().target is None


def test_time_and_redirect_helpers():
    assert ago(None) == "never"
    assert ago("2020-01-01T00:00:00Z") == "2020-01-01"
    assert safe_next("//evil.example") == "/" and safe_next("/\\evil") == "/"
    assert safe_next("/repls/a") == "/repls/a"


def test_static_files_are_served(web):
    assert b"htmx" in web.get("/static/vendor/htmx.min.js").data
    assert web.get("/static/style.css").status_code == 200


def test_dashboard_stays_out_of_the_openapi_document(web):
    spec = web.get("/api/openapi.json").json
    assert not any(p == "/" or p.startswith("/repls") for p in spec["paths"])


# -- personal tokens ----------------------------------------------------------------------------


def test_token_is_shown_once_and_works_as_a_bearer(idle_app, web, user):
    page = web.get("/tokens")
    assert page.status_code == 200 and "<title>Personal tokens · Devex</title>" in page.text
    assert "No tokens yet." in page.text
    r = web.post("/tokens", data={"csrf_token": user, "name": "laptop"})
    assert r.status_code == 201
    assert r.headers["Cache-Control"] == "no-store"
    plaintext = re.search(r'id="new-token-value" class="mono" readonly value="([^"]+)"', r.text)[1]
    assert plaintext.startswith("dvx_") and 'data-copy="#new-token-value"' in r.text
    again = web.get("/tokens").text
    assert "laptop" in again and plaintext not in again
    bearer = idle_app.test_client().get(
        "/api/repl/", headers={"Authorization": f"Bearer {plaintext}"}
    )
    assert bearer.status_code == 200


def test_bad_token_name_is_shown_inline(web, user):
    r = web.post("/tokens", data={"csrf_token": user, "name": "  "})
    assert r.status_code == 400
    assert 'id="token-name-error"' in r.text and "The token needs a name." in r.text


def test_revoking_a_token_with_and_without_htmx(idle_app, web, user):
    for name in ("one", "two"):
        web.post("/tokens", data={"csrf_token": user, "name": name})
    page = web.get("/tokens").text
    ids = re.findall(r'<tr id="token-([0-9a-f]+)"', page)
    assert len(ids) == 2
    r = web.post(f"/tokens/{ids[0]}/revoke", data={"csrf_token": user})
    assert r.status_code == 303 and r.headers["Location"] == "/tokens"
    r = web.post(f"/tokens/{ids[1]}/revoke", headers={**HX, "X-CSRF-Token": user})
    assert r.status_code == 200 and r.text == ""
    assert "No tokens yet." in web.get("/tokens").text
    r = web.post(f"/tokens/{ids[1]}/revoke", data={"csrf_token": user})
    assert r.status_code == 404 and "No such token." in r.text


def test_another_users_token_cannot_be_revoked(idle_app, web, user):
    theirs = idle_app.extensions["devex_auth"].api_tokens.create("other", "theirs")
    r = web.post(f"/tokens/{theirs.token.id}/revoke", data={"csrf_token": user})
    assert r.status_code == 404
    assert idle_app.extensions["devex_auth"].api_tokens.list("other")


# -- administrators -------------------------------------------------------------------------------


def test_admin_page_is_only_for_administrators(web, user):
    assert ">Admin</a>" not in web.get("/").text
    r = web.get("/admin")
    assert r.status_code == 403 and "Only administrators" in r.text


def test_admin_sees_every_running_repl_and_can_stop_it(data_dir):
    app = create_app(
        {
            "TESTING": True,
            "DEVEX_DATA_DIR": data_dir,
            "DEVEX_SECRET_KEY": "test-secret",
            "DEVEX_EMBEDDED_WORKER": "false",
            "DEVEX_ADMINS": "local",
        }
    )
    web = app.test_client()
    web.post("/auth/local")
    token = meta_token(web.get("/").text)
    running = make(app, "their-app", owner=OTHER)
    set_status(app, running.id, Status.RUNNING, url="http://127.0.0.1:9/")
    set_status(app, make(app, "parked", owner=OTHER).id, Status.STOPPED)

    page = web.get("/admin")
    assert page.status_code == 200 and "<title>Administration · Devex</title>" in page.text
    assert "their-app" in page.text and ">other<" in page.text
    assert "parked" not in page.text
    assert "their-app" not in web.get("/").text  # an admin's own list is still their own
    r = web.post(f"/repls/{running.id}/stop", data={"csrf_token": token, "next": "/admin"})
    assert r.status_code == 303 and r.headers["Location"] == "/admin"
    assert status_of(app, running.id) == Status.STOPPING


def test_unknown_page_is_a_readable_page_for_browsers_and_json_for_api(client):
    page = client.get("/no-such-page", headers={"Accept": "text/html,*/*;q=0.8"})
    assert page.status_code == 404 and page.mimetype == "text/html"
    assert "Not found" in page.get_data(as_text=True)
    api = client.get("/api/no-such-thing", headers={"Accept": "text/html"})
    assert api.status_code == 404 and api.json["error"]["code"] == "not_found"


# -- anonymous visitors leave nothing behind --------------------------------------------------


def session_keys(app) -> list[bytes]:
    return app.extensions["devex"].components.redis.keys(keys.SESSION_PREFIX + "*")


def test_anonymous_pages_create_no_sessions(idle_app, web):
    for _ in range(5):
        page = web.get("/login")
        assert page.status_code == 200 and "Continue as local user" in page.text
        assert 'name="csrf-token"' not in page.text and "hx-headers" not in page.text
        missing = web.get("/no-such-page", headers={"Accept": "text/html"})
        assert missing.status_code == 404 and "<title>Not found · Devex</title>" in missing.text
        assert web.get("/login?error=login_failed").status_code == 200
        assert web.get("/").status_code == 302
    assert session_keys(idle_app) == []
    assert web.get_cookie("session") is None
    # Logging in (no CSRF token needed for the local user) is what makes one.
    assert web.post("/auth/local", data={"next": "/"}).status_code == 302
    assert len(session_keys(idle_app)) == 1
    assert 'name="csrf-token"' in web.get("/").text


# -- logged out, then acting ------------------------------------------------------------------


def expire_session(web) -> None:
    """What a browser holds after its session ended server-side: a cookie naming nothing."""
    web.set_cookie("session", "no-such-session-id-" + "x" * 24)


@pytest.mark.parametrize("who", ["anonymous", "expired"])
def test_action_without_a_session_goes_to_the_login_page_of_the_page_it_came_from(
    idle_app, web, who
):
    repl = make(idle_app)
    set_status(idle_app, repl.id, Status.STOPPED)
    if who == "expired":
        expire_session(web)
    came_from = f"http://localhost/repls/{repl.id}?tab=log"
    for path in ("/repls", f"/repls/{repl.id}/start", f"/repls/{repl.id}/stop"):
        r = web.post(path, data={"name": "x", "template": "python"}, headers={"Referer": came_from})
        assert r.status_code == 302, (path, r.status_code)
        # Back to the page, never to the POST-only action URL.
        assert r.headers["Location"] == f"/login?next=/repls/{repl.id}?tab%3Dlog", path
        r = web.post(path, data={"name": "x"})
        assert r.headers["Location"] == "/login?next=/", path
        r = web.post(path, headers={"Referer": "https://evil.example/repls/x"})
        assert r.headers["Location"] == "/login?next=/", path
        r = web.post(path, headers={"Referer": "http://localhost//evil.example/"})
        assert r.headers["Location"] == "/login?next=/", path
    r = web.post(
        f"/repls/{repl.id}/start", headers={**HX, "HX-Current-URL": "http://localhost/tokens"}
    )
    assert r.status_code == 401 and r.headers["HX-Redirect"] == "/login?next=/tokens"
    assert service(idle_app).list(ME) == [store(idle_app).require(repl.id)]
    assert status_of(idle_app, repl.id) == Status.STOPPED
    assert session_keys(idle_app) == []


@pytest.mark.parametrize("who", ["anonymous", "expired"])
def test_api_without_a_session_is_401_json_even_where_rate_limited(idle_app, web, who):
    repl = make(idle_app)
    if who == "expired":
        expire_session(web)
    for path in ("/api/repl/create", f"/api/repl/{repl.id}/start"):
        r = web.post(path, json={"name": "x", "template": "python"})
        assert r.status_code == 401 and r.json["error"]["code"] == "unauthorized", path


def test_anonymous_calls_do_not_use_up_anyones_rate_limit(data_dir):
    app = create_app(
        {
            "TESTING": True,
            "DEVEX_DATA_DIR": data_dir,
            "DEVEX_SECRET_KEY": "test-secret",
            "DEVEX_EMBEDDED_WORKER": "false",
            "DEVEX_RATE_LIMIT_CREATE": "1/minute",
        }
    )
    anonymous = app.test_client()
    for _ in range(3):
        assert anonymous.post("/repls", data={"name": "x"}).status_code == 302
        assert anonymous.post("/api/repl/create", json={"name": "x"}).status_code == 401
    web = app.test_client()
    web.post("/auth/local", data={"next": "/"})
    token = meta_token(web.get("/").text)
    r = web.post("/repls", data={"csrf_token": token, "name": "one", "template": "python"})
    assert r.status_code == 303
    r = web.post("/repls", data={"csrf_token": token, "name": "two", "template": "python"})
    assert r.status_code == 429


# -- what administrators are offered for other people's REPLs ---------------------------------


@pytest.fixture
def admin_app(data_dir):
    return create_app(
        {
            "TESTING": True,
            "DEVEX_DATA_DIR": data_dir,
            "DEVEX_SECRET_KEY": "test-secret",
            "DEVEX_EMBEDDED_WORKER": "false",
            "DEVEX_ADMINS": "local",
        }
    )


def action_urls(html: str, repl_id: str) -> set[str]:
    """Every action a page offers for ``repl_id`` (form actions and confirm links)."""
    found = re.findall(rf'(?:action|href)="/repls/{repl_id}/([a-z-]+)', html)
    return set(found)


@pytest.mark.parametrize(
    ("status", "offered"),
    [
        (Status.RUNNING, {"stop"}),
        (Status.STARTING, {"stop"}),
        (Status.STOPPING, set()),  # no force stop for someone else's REPL
        (Status.STOPPED, set()),
        (Status.FAILED, set()),
    ],
)
def test_admin_is_offered_only_stop_for_another_users_repl(admin_app, status, offered):
    web = admin_app.test_client()
    web.post("/auth/local", data={"next": "/"})
    theirs = make(admin_app, "their-app", owner=OTHER)
    set_status(admin_app, theirs.id, status, url="http://127.0.0.1:9/")
    page = web.get(f"/repls/{theirs.id}")
    assert page.status_code == 200 and "their-app" in page.text
    assert action_urls(page.text, theirs.id) == offered
    row = web.get(f"/repls/{theirs.id}/row")
    assert action_urls(row.text, theirs.id) == offered
    if offered:  # and what is offered works
        r = web.post(
            f"/repls/{theirs.id}/stop",
            data={"csrf_token": meta_token(page.text), "next": f"/repls/{theirs.id}"},
        )
        assert r.status_code == 303 and status_of(admin_app, theirs.id) == Status.STOPPING


def test_admin_still_gets_every_action_on_their_own_repl(admin_app):
    web = admin_app.test_client()
    web.post("/auth/local", data={"next": "/"})
    mine = make(admin_app, "mine")
    set_status(admin_app, mine.id, Status.RUNNING, url="http://127.0.0.1:9/")
    assert action_urls(web.get(f"/repls/{mine.id}").text, mine.id) == {"open", "stop", "delete"}
    set_status(admin_app, mine.id, Status.FAILED, error="boom")
    assert action_urls(web.get(f"/repls/{mine.id}").text, mine.id) == {
        "start",
        "force-stop",
        "delete",
    }


def test_actions_for_a_non_owner():
    repl = Repl(
        id="a1", name="n", template="python", owner_id="u", owner_login="u", storage_prefix="u/a1/"
    )
    repl.url = "http://127.0.0.1:9/"
    admin = Actor(id="root", login="root", is_admin=True)
    owner = Actor(id="u", login="u")
    for status in Status:
        repl.status = status
        assert actions_for(repl, owner) == actions_for(repl)
        assert set(actions_for(repl, admin)) <= {"stop"}
        assert "force-stop" not in actions_for(repl, admin)


# -- the detail page of a REPL that is gone ---------------------------------------------------


def test_detail_polling_of_a_deleted_repl_goes_back_to_the_list(idle_app, web, user):
    repl = make(idle_app, "going")
    polling = {**HX, "HX-Target": "repl-detail", "HX-Current-URL": f"http://localhost/repls/{repl.id}"}
    assert web.get(f"/repls/{repl.id}", headers=polling).status_code == 200  # creating: polls
    store(idle_app).delete(store(idle_app).require(repl.id))
    r = web.get(f"/repls/{repl.id}", headers=polling)
    assert r.status_code in (200, 286)
    assert r.headers["HX-Redirect"] == "/"
    assert "HX-Retarget" not in r.headers
    # A plain visit still gets the readable 404 page.
    page = web.get(f"/repls/{repl.id}")
    assert page.status_code == 404 and "No such REPL." in page.text
    # As does another user's REPL polled this way: it looks like one that is gone.
    theirs = make(idle_app, "theirs", owner=OTHER)
    r = web.get(f"/repls/{theirs.id}", headers=polling)
    assert r.headers["HX-Redirect"] == "/" and "theirs" not in r.text
