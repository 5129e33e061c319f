"""The web layer's shape: every blueprint is registered by the app factory and nowhere else,
and every dashboard page family guards its pages alike (login first, CSRF on changes)."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest

import devex
import devex.blueprints
from devex import create_app

# One page of each dashboard page family, and one change each.
PAGES = ["/", "/repls/nope", "/tokens", "/admin"]
CHANGES = ["/repls", "/tokens", "/tokens/nope/revoke"]


@pytest.fixture
def idle_app(data_dir):
    app = create_app({"TESTING": True, "DEVEX_DATA_DIR": data_dir,
                      "DEVEX_SECRET_KEY": "test-secret", "DEVEX_EMBEDDED_WORKER": "false"})
    yield app
    app.extensions["devex"].close()


def test_every_blueprint_module_is_registered_by_the_factory(idle_app):
    names = [m.name for m in pkgutil.iter_modules(devex.blueprints.__path__)]
    assert names
    for name in names:
        bp = importlib.import_module(f"devex.blueprints.{name}").bp
        assert idle_app.blueprints.get(bp.name) is bp, name


def test_blueprints_are_registered_in_the_factory_only():
    package = Path(devex.__file__).parent
    registering = sorted(str(p.relative_to(package)) for p in package.rglob("*.py")
                         if "register_blueprint(" in p.read_text())
    assert registering == ["app.py"]


@pytest.mark.parametrize("path", PAGES)
def test_every_page_family_sends_anonymous_visitors_to_the_login_page(idle_app, path):
    r = idle_app.test_client().get(path)
    assert r.status_code == 302
    assert r.headers["Location"].startswith("/login?next=")
    hx = idle_app.test_client().get(path, headers={"HX-Request": "true"})
    assert hx.status_code == 401 and hx.headers["HX-Redirect"].startswith("/login?next=")


@pytest.mark.parametrize("path", CHANGES)
def test_every_page_family_refuses_a_change_without_the_csrf_token(idle_app, path):
    web = idle_app.test_client()
    assert web.post("/auth/local", data={"next": "/"}).status_code == 302
    r = web.post(path, data={"name": "x"})
    assert r.status_code == 403
    assert "CSRF" in r.text  # the error page, in people's words
