"""Settings module for rq's command line: ``rq worker -c devex.rq_config ...`` (or
``RQ_CONFIG=devex.rq_config`` in the environment).

rq reads it once at start-up, before it sets up its own log handlers: ``DICT_CONFIG`` makes
the worker, its work horses and its scheduler log JSON lines (``devex.logs``) with the job
and REPL ids, and rq then adds no handler of its own. ``--url`` still wins over
``REDIS_URL``; without it the worker uses ``DEVEX_REDIS_URL`` like the web does.

Before all that, ``.env`` is read as ``flask`` reads it (variables already set win), and
the settings are built: a bad one stops the worker with one line, ``Error: DEVEX_...``,
and exit status 2, before rq connects (``devex.startup``).
"""

from __future__ import annotations

from devex.logs import worker_dict_config
from devex.startup import settings_or_exit

_settings = settings_or_exit()
REDIS_URL = _settings.redis_url or None
QUEUES = [_settings.queue_name]
DICT_CONFIG = worker_dict_config()
