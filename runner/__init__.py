"""The Devex runner: the process inside every REPL.

``python -m runner serve`` serves the IDE page, a health check and the file API over HTTP;
``python -m runner sync-down`` / ``sync-up`` move files between storage and the workspace.
No Flask and no Redis here: besides its own modules the runner imports only ``devex_shared``
(the token format and storage), never ``devex``.
"""
