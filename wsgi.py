"""Entry point for gunicorn: ``gunicorn wsgi:app``."""

from devex import create_app

app = create_app()
