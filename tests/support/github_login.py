"""GitHub login over real HTTP for the tests: the app served on loopback with a fake GitHub
(``tests/support/fake_github.py``), and a ``requests`` session as the browser."""

from __future__ import annotations

import threading
from urllib.parse import parse_qs, urlsplit

import requests
from werkzeug.serving import make_server

from devex import create_app

# What the login page says for each refusal code, word for word (users read these).
LOGIN_TEXTS = {
    "login_failed": "GitHub did not confirm the sign-in. Please try again.",
    "login_denied": "The sign-in was cancelled on GitHub.",
    "not_allowed": "This GitHub account may not use this Devex. Ask an administrator to be added.",
    "unavailable": "GitHub cannot be reached right now; try again shortly.",
    "suspended": "This account is suspended. Ask an administrator.",
}

TIMEOUT = 10


def github_app(fake, data_dir, **extra):
    config = {
        "TESTING": True,
        **fake.settings(),
        "DEVEX_SECRET_KEY": "github-test-secret",
        "DEVEX_DATA_DIR": data_dir,
        "DEVEX_EMBEDDED_WORKER": "false",
    }
    config.update(extra)
    return create_app(config)


class Live:
    """The app served over HTTP on 127.0.0.1, with a browser-like requests session."""

    def __init__(self, app):
        self.app = app
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.browser = requests.Session()

    def get(self, path, **kw):
        kw.setdefault("allow_redirects", False)
        return self.browser.get(self.url + path, timeout=TIMEOUT, **kw)

    def post(self, path, **kw):
        return self.browser.post(self.url + path, timeout=TIMEOUT, allow_redirects=False, **kw)

    def close(self):
        self.browser.close()
        self.server.shutdown()
        self.thread.join(10)
        self.server.server_close()

    @property
    def redis(self):
        return self.app.extensions["devex"].components.redis

    def start_login(self) -> str:
        """Click "Log in with GitHub": the URL GitHub's authorize page gets."""
        r = self.get("/auth/github")
        assert r.status_code == 302, r.text
        return r.headers["Location"]

    def on_github(self, authorize_url: str) -> str:
        """The user approves on GitHub: the callback URL GitHub redirects back to."""
        r = self.browser.get(authorize_url, allow_redirects=False, timeout=TIMEOUT)
        assert r.status_code == 302
        return r.headers["Location"]

    def login(self, **kw):
        return self.browser.get(
            self.on_github(self.start_login()), allow_redirects=False, timeout=TIMEOUT, **kw
        )

    def refused_to_login_page(self, r, code: str) -> str:
        """A browser refused at the callback is sent to the login page, which says why in
        the fixed words for ``code``; returns that page."""
        assert r.status_code == 302, (r.status_code, r.text)
        location = urlsplit(r.headers["Location"])
        assert location.path == "/login" and parse_qs(location.query) == {"error": [code]}
        page = self.get(f"{location.path}?{location.query}")
        assert page.status_code == 200 and "<title>Sign in · Devex</title>" in page.text
        shown = page.text.replace("&#39;", "'")
        assert f'data-testid="login-error">{LOGIN_TEXTS[code]}</p>' in shown
        assert 'href="/auth/github?' in page.text  # and offers to try again
        return page.text
