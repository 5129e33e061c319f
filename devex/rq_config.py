"""Settings module for rq's command line: ``rq worker -c devex.rq_config ...`` (or
``RQ_CONFIG=devex.rq_config`` in the environment).

rq reads it once at start-up, before it sets up its own log handlers: ``DICT_CONFIG`` makes
the worker, its work horses and its scheduler log JSON lines (``devex.logs``) with the job
and REPL ids, and rq then adds no handler of its own. ``--url`` still wins over
``REDIS_URL``; without it the worker uses ``DEVEX_REDIS_URL`` like the web does.
"""

from __future__ import annotations

import os

from devex.logs import worker_dict_config

REDIS_URL = os.environ.get("DEVEX_REDIS_URL") or None
QUEUES = [os.environ.get("DEVEX_QUEUE_NAME") or "devex"]
DICT_CONFIG = worker_dict_config()
