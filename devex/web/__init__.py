"""The web layer: what only the Flask web process uses (the views are in ``devex.blueprints``).

Request plumbing (``security``, ``errorhandlers``, ``jsonbody``, ``hosts``, ``headers``,
``redirects``, ``weblogs``, ``openapi``), operations (``operations``, ``degraded``,
``probes``), authentication (``auth/``), the JSON schemas (``schemas/``) and the
dashboard's display helpers (``pages``, ``htmx``, ``actions``, ``timefmt``,
``login_errors``). Workers and the runner never import it.
"""
