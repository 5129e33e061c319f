"""Entry point for gunicorn: ``gunicorn wsgi:app``.

``.env`` is read as ``flask`` reads it (variables already set win). A bad setting ends the
worker with one line, ``Error: DEVEX_...``, and gunicorn's "App failed to load" status, so
its master stops instead of booting worker after worker (``devex.startup``).
"""

from devex import create_app
from devex.startup import app_load_status, exit_on_config_error, load_env_file

load_env_file()
with exit_on_config_error(app_load_status()):
    app = create_app()
