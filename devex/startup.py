"""What each entry point does first: read ``.env`` as ``flask`` does, and stop with one
readable line (``Error: DEVEX_... ...``, no traceback) when a setting cannot work.

- ``flask run``, ``flask devex ...``: Flask reads ``.env`` itself (python-dotenv is
  installed); ``create_app`` raises ``ConfigError``, which click prints as that line
  (exit status 2).
- gunicorn: ``devex.gunicorn_conf`` checks in the master before any worker boots (exit 2);
  ``wsgi.py`` in each worker, when started without that file (exit 4, gunicorn's "App
  failed to load": its master then stops instead of booting worker after worker).
- ``rq worker``: ``devex.rq_config`` as rq reads it, and ``DevexWorker.work`` (exit 2).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from devex.config import ConfigError, Settings

USAGE_ERROR = 2  # click's status for bad input, as `flask` exits on a bad setting
GUNICORN_APP_LOAD_ERROR = 4  # gunicorn's arbiter halts on it; on any other it respawns


def app_load_status() -> int:
    """How to exit on a bad setting met while loading the app: gunicorn's "App failed to
    load" in a gunicorn worker, else 2 (``flask run`` finding ``wsgi.py``)."""
    return GUNICORN_APP_LOAD_ERROR if "gunicorn.arbiter" in sys.modules else USAGE_ERROR


def load_env_file() -> None:
    """Set what ``.flaskenv`` and ``.env`` (found from the working directory up, ``.env``
    winning) say, as ``flask`` does; variables already in the environment win. A no-op
    without python-dotenv."""
    try:
        import dotenv
    except ImportError:
        return
    found: dict[str, str | None] = {}
    for name in (".flaskenv", ".env"):
        path = dotenv.find_dotenv(name, usecwd=True)
        if path:
            found |= dotenv.dotenv_values(path, encoding="utf-8")
    for key, value in found.items():
        if value is not None and key not in os.environ:
            os.environ[key] = value


@contextmanager
def exit_on_config_error(status: int = USAGE_ERROR) -> Iterator[None]:
    """Turn a ``ConfigError`` into its one line on stderr and exit ``status``."""
    try:
        yield
    except ConfigError as exc:
        print(f"Error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(status) from None


def settings_or_exit() -> Settings:
    """``.env`` loaded, the settings from the environment -- or the one line and exit 2."""
    load_env_file()
    with exit_on_config_error():
        return Settings.from_env()
