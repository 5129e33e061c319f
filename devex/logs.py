"""Log lines for operators: one JSON object per line outside embedded mode.

Each line carries ``time``, ``level``, ``logger`` and ``message``, and, when known, the
``request_id``, ``user_id``, ``repl_id`` and ``job_id`` it belongs to (a filter reads them
from the Flask request or the RQ job under way, so no call site has to pass them). Messages
and tracebacks go through ``devex_shared.redact`` with the configured secrets: a library that
quotes an endpoint URL with a password, or a setting, does not put it in the log.

Web: ``install(app, settings)`` (from the app factory) formats the root logger and
gunicorn's own loggers (its access lines gain method, path, status, duration and the
request id). Workers: ``rq worker -c devex.rq_config`` hands rq ``worker_dict_config()``,
so rq's own lines are JSON too. Embedded mode keeps Flask's plain text.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from devex_shared.redact import redact

REQUEST_ID = "devex.request_id"  # WSGI environ key of the request's id
CONTEXT_FIELDS = ("request_id", "user_id", "repl_id", "job_id")
# What an X-Request-ID sent by a proxy may look like to be kept (UUIDs, hex, trace ids);
# anything else is replaced, so a client cannot write arbitrary text into the logs.
_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
SECRET_SETTINGS = ("DEVEX_SECRET_KEY", "DEVEX_S3_SECRET_ACCESS_KEY",
                   "DEVEX_GITHUB_CLIENT_SECRET", "DEVEX_METRICS_TOKEN")
ACCESS_LOGGER = "gunicorn.access"
SERVER_LOGGERS = ("gunicorn.error", ACCESS_LOGGER)


class _RequestIds:
    """New request ids: 64 random bits per process (drawn again in a forked child, so
    gunicorn's workers differ) and a counter. No system call per request: a call that
    lets go of the GIL hands a threaded worker's other requests the CPU mid-request. Never
    the ``random`` module, whose shared state a seeded user of it (e.g. a property-based
    test) owns."""

    def __init__(self) -> None:
        self.new_process()
        os.register_at_fork(after_in_child=self.new_process)

    def new_process(self) -> None:
        self.prefix = os.urandom(8).hex()
        self.counter = itertools.count(1)

    def next(self) -> str:
        return f"{self.prefix}{next(self.counter):016x}"


_request_ids = _RequestIds()


def request_id_from(environ: Mapping) -> str:
    """The caller's ``X-Request-ID`` when it looks like an id, else a new one."""
    sent = environ.get("HTTP_X_REQUEST_ID", "")
    if sent and _SANE_ID.match(sent):
        return sent
    return _request_ids.next()


class ContextFilter(logging.Filter):
    """Adds the request's and the job's ids to every record (never a Redis call: only what
    this request or job already knows)."""

    def filter(self, record: logging.LogRecord) -> bool:
        # Flask and rq are looked up, not imported: a worker never loads Flask for this.
        flask = sys.modules.get("flask")
        if flask is not None and flask.has_request_context():
            _set(record, "request_id", flask.request.environ.get(REQUEST_ID))
            _set(record, "user_id", getattr(flask.g.get("actor"), "id", None))
            _set(record, "repl_id", (flask.request.view_args or {}).get("repl_id"))
            return True
        job = _current_job()
        if job is not None:
            _set(record, "job_id", job.id)
            if job.func_name.startswith("jobs.repl.") and job.args:
                _set(record, "repl_id", job.args[0])
        return True


def _current_job():
    rq_job = sys.modules.get("rq.job")
    if rq_job is None:
        return None
    try:
        return rq_job.get_current_job()
    except (AttributeError, ValueError):  # a job whose data cannot be read
        return None


def _set(record: logging.LogRecord, name: str, value: object) -> None:
    if value and not getattr(record, name, None):
        setattr(record, name, value)


class JsonFormatter(logging.Formatter):
    def __init__(self, secret_values: Iterable[str] = ()):
        super().__init__()
        self.secrets = tuple(s for s in secret_values if s)

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage(), self.secrets),
        }
        if record.name == ACCESS_LOGGER and isinstance(record.args, Mapping):
            entry.update(_access_fields(record.args))
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value:
                entry[name] = str(value)
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info), self.secrets)
        if record.stack_info:
            entry["stack"] = redact(self.formatStack(record.stack_info), self.secrets)
        return json.dumps(entry, default=str)


def _access_fields(atoms: Mapping) -> dict[str, object]:
    """gunicorn's access atoms (already without /auth/ query strings: devex.web.weblogs)."""
    fields: dict[str, object] = {
        "method": atoms.get("m"),
        "path": atoms.get("U"),
        "status": _int(atoms.get("s")),
        "duration_ms": round(_int(atoms.get("D")) / 1000, 3),
        "remote_addr": atoms.get("h"),
    }
    request_id = atoms.get("{x-request-id}o")
    if request_id and request_id != "-":
        fields["request_id"] = request_id
    return fields


def _int(value: object) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 0


def secrets_of(environ: Mapping[str, str]) -> list[str]:
    return [environ.get(name, "") for name in SECRET_SETTINGS]


def wants_json(settings) -> bool:
    return settings.log_format == "json" or (not settings.log_format and not settings.embedded)


def wants_json_env(environ: Mapping[str, str]) -> bool:
    """``wants_json`` from the environment, before any settings exist (gunicorn's master)."""
    chosen = environ.get("DEVEX_LOG_FORMAT", "").strip().lower()
    return chosen == "json" if chosen else bool(environ.get("DEVEX_REDIS_URL"))


def configure_json(secret_values: Iterable[str], stream=None) -> None:
    """JSON lines from the root logger (and so every logger that propagates) and from
    gunicorn's loggers, which keep their own destinations. Safe to call again."""
    formatter = JsonFormatter(secret_values)
    context = ContextFilter()
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h.formatter, JsonFormatter)]:
        root.removeHandler(handler)  # called again (a second app): one handler, new secrets
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    handler.addFilter(context)
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    for name in SERVER_LOGGERS:
        for server_handler in logging.getLogger(name).handlers:
            server_handler.setFormatter(formatter)
            if not any(isinstance(f, ContextFilter) for f in server_handler.filters):
                server_handler.addFilter(context)


def install(app, settings) -> None:
    """JSON logs for the web when not embedded (``DEVEX_LOG_FORMAT`` decides otherwise).
    Tests build many apps in one process: there the format changes only when asked."""
    if not wants_json(settings) or (app.testing and not settings.log_format):
        return
    from flask.logging import default_handler

    configure_json([settings.secret_key, settings.s3_secret_access_key,
                    settings.github_client_secret, settings.metrics_token])
    app.logger.removeHandler(default_handler)  # Flask's plain one, if it was added already


def worker_dict_config(environ: Mapping[str, str] | None = None) -> dict:
    """``logging.config.dictConfig`` for ``rq worker`` (via ``devex.rq_config``): JSON on
    stderr from the root logger, which rq's own loggers then use instead of their own."""
    env = os.environ if environ is None else environ
    if env.get("DEVEX_LOG_FORMAT", "").strip().lower() == "text":
        return {"version": 1, "disable_existing_loggers": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter, "secret_values": secrets_of(env)}},
        "filters": {"context": {"()": ContextFilter}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr",
                                "formatter": "json", "filters": ["context"]}},
        "root": {"level": "INFO", "handlers": ["stderr"]},
    }
