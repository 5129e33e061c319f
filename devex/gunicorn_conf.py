"""gunicorn settings for Devex's web: ``gunicorn -c python:devex.gunicorn_conf wsgi:app``.

- First, read before anything else: ``.env`` as ``flask`` reads it (variables already set
  win), then the settings: a bad one stops gunicorn with one line, ``Error: DEVEX_...``,
  before any worker boots (exit 2; ``devex.startup``).
- ``logger_class``: gunicorn's own lines (the master's too, from its first one) as JSON
  like the app's (``devex.logs``), unless embedded or ``DEVEX_LOG_FORMAT=text``. Without
  this file only the lines written after a worker loaded the app are JSON.
- With ``PROMETHEUS_MULTIPROC_DIR`` (several workers, one ``/metrics``): the directory is
  made and emptied when gunicorn starts (without ``--preload``: workers load the app
  after that), and a worker that exits is marked dead, as prometheus_client asks.

- ``reuse_port``: a listening socket per worker (see below).

Every other option still comes from the command line.
"""

from __future__ import annotations

import os
from pathlib import Path

from gunicorn.glogging import Logger

from devex.logs import configure_json, secrets_of, wants_json_env
from devex.startup import settings_or_exit

settings_or_exit()

class JsonLogger(Logger):
    def setup(self, cfg) -> None:
        super().setup(cfg)  # gunicorn's handlers and destinations, then our format on them
        configure_json(secrets_of(os.environ))


if wants_json_env(os.environ):
    logger_class = JsonLogger

# Each worker listens on its own SO_REUSEPORT socket and the kernel spreads connections
# over them. With one shared socket, gthread workers accept greedily: a few long-lived
# keep-alive connections (an ingress, a load test) can all land on one worker while the
# others idle, halving throughput (seen in bench/http_wrk.py). The price: connections
# waiting in a dying worker's backlog are reset (a worker restart, not a deploy).
reuse_port = True


def on_starting(server) -> None:
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        # Counts of an earlier run would be added to this one's.
        for stale in Path(directory).glob("*.db"):
            stale.unlink()


def child_exit(server, worker) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
