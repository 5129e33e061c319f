"""The Devex runner: the process inside every REPL.

``python -m runner serve`` serves the IDE page, a health check and the file API over HTTP;
``python -m runner sync-down`` / ``sync-up`` move files between storage and the workspace.
No Flask and no Redis here: the runner only imports ``devex.tokens`` and ``devex.infra.storage``.
"""
