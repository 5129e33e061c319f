"""The JSON API of ``API.md``: thin views over the service layer."""

from __future__ import annotations

from apiflask import APIBlueprint
from flask import Response, current_app, request
from werkzeug.routing import BaseConverter

from devex.errors import Unauthorized
from devex.extension import extension
from devex.web.schemas.common import OkOut
from devex.web.schemas.repls import (
    CreateIn,
    EventList,
    ReplJob,
    ReplList,
    ReplListQuery,
    ReplOut,
    SessionOut,
    TemplateList,
)
from devex.web.schemas.runner import HeartbeatIn
from devex.web.security import require_actor
from devex_shared.access_tokens import (
    RUNNER_SCOPE,
    RUNNER_TOKEN_MAX_AGE,
    TokenError,
    repl_key,
    verify,
)
from devex_shared.bearer import parse_bearer

bp = APIBlueprint("api", __name__, url_prefix="/api", tag="REPLs")


class ReplIdConverter(BaseConverter):
    """A REPL id in ``/api/repl/<id>`` is never ``create``: ``GET /api/repl/create`` is
    then a 405 whose ``Allow`` names POST only, not a lookup of a REPL called "create"."""

    regex = r"(?!create$)[^/]+"


# Before the routes below are added: they need the converter to compile.
bp.record_once(lambda state: state.app.url_map.converters.setdefault("repl_id",
                                                                     ReplIdConverter))

COMMON = {401: "Not logged in", 403: "CSRF token missing or wrong"}
ONE = {**COMMON, 404: "No such REPL (or not yours)"}


RUNNER_ENDPOINTS = frozenset({"api.heartbeat", "api.idle"})


@bp.before_request
def _authenticate():
    # Before body parsing: an anonymous or CSRF-less call learns nothing else, and no
    # body is read for a caller without a valid credential (runners included).
    if request.endpoint in RUNNER_ENDPOINTS:
        _runner((request.view_args or {}).get("repl_id", ""))
    else:
        require_actor()


def _as_is(body: dict) -> Response:
    """JSON of a body already in the contract's shape (``Repl.public()``), without the
    output schema's dump: the hot reads skip that work. The schema still documents the
    answer, and the tests check that both agree."""
    return current_app.json.response(body)


def _job(outcome):
    return {"repl": outcome.repl.public(), "job_id": outcome.job_id}, (
        202 if outcome.accepted else 200
    )


@bp.get("/templates")
@bp.output(TemplateList)
@bp.doc(summary="The template catalogue", responses={**COMMON})
def templates():
    require_actor()
    return {"templates": [t.public() for t in extension().components.catalog.all()]}


@bp.post("/repl/create")
@bp.input(CreateIn, arg_name="data")
@bp.output(ReplJob, status_code=202)
@bp.doc(
    summary="Create a REPL (and start it unless start is false)",
    responses={**COMMON, 409: "Name taken", 413: "Body too large", 429: "Quota reached"},
)
def create(data):
    actor = require_actor()
    outcome = extension().repls.create(actor, data["name"], data["template"], data["start"])
    return {"repl": outcome.repl.public(), "job_id": outcome.job_id}, 202


@bp.get("/repl/")
@bp.input(ReplListQuery, location="query", arg_name="query")
@bp.output(ReplList)
@bp.doc(summary="My REPLs, newest first, a page at a time", responses={**COMMON})
def list_repls(query):
    page = extension().repls.page(require_actor(), query["limit"], query["cursor"])
    return _as_is({"repls": [r.public() for r in page.repls], "total": page.total,
                   "next_cursor": page.next_cursor})


@bp.get("/repl/<repl_id:repl_id>")
@bp.output(ReplOut)
@bp.doc(summary="One REPL", responses=ONE)
def get_repl(repl_id: str):
    return _as_is(extension().repls.get(require_actor(), repl_id).public())


@bp.post("/repl/<repl_id>/start")
@bp.output(ReplJob, status_code=202)
@bp.doc(
    summary="Start a REPL",
    responses={
        **ONE,
        200: "Already running or starting",
        409: "Deleting or stopping",
        429: "Quota reached",
    },
)
def start(repl_id: str):
    return _job(extension().repls.start(require_actor(), repl_id))


@bp.post("/repl/<repl_id>/stop")
@bp.output(ReplJob, status_code=202)
@bp.doc(
    summary="Stop a REPL, saving its files (force=true: without saving)",
    responses={**ONE, 200: "Already stopped or stopping", 409: "Deleting"},
)
def stop(repl_id: str):
    force = request.args.get("force", "").lower() in ("1", "true", "yes")
    return _job(extension().repls.stop(require_actor(), repl_id, force=force))


@bp.delete("/repl/<repl_id:repl_id>")
@bp.output(ReplJob, status_code=202)
@bp.doc(summary="Delete a REPL and its files", responses={**ONE, 200: "Already deleting"})
def delete(repl_id: str):
    return _job(extension().repls.delete(require_actor(), repl_id))


@bp.get("/repl/<repl_id>/events")
@bp.output(EventList)
@bp.doc(summary="Progress and audit events, oldest first", responses=ONE)
def events(repl_id: str):
    events = extension().repls.events(require_actor(), repl_id)
    return {"events": [{"at": e.at, "kind": e.kind, "message": e.message} for e in events]}


@bp.post("/repl/<repl_id>/session")
@bp.output(SessionOut)
@bp.doc(
    summary="A short-lived token for the IDE to reach the runner",
    responses={**ONE, 409: "Not running"},
)
def ide_session(repl_id: str):
    return extension().repls.ide_session(require_actor(), repl_id)


def _runner(repl_id: str) -> None:
    """The caller must hold a fresh runner token for this REPL: runners sign one for every
    heartbeat and idle call (runner/heartbeat.py), so minutes of age suffice."""
    token = parse_bearer(request.headers.get("Authorization"))
    key = repl_key(extension().settings.secret_key, repl_id)
    try:
        verify(key, repl_id, RUNNER_SCOPE, token, max_age=RUNNER_TOKEN_MAX_AGE)
    except TokenError:
        raise Unauthorized("A valid runner token for this REPL is required.") from None


@bp.post("/runner/<repl_id>/heartbeat")
@bp.input(HeartbeatIn, arg_name="data")
@bp.output(OkOut)
@bp.doc(summary="Runner: record activity", responses={401: "Bad runner token", 404: "Gone"})
def heartbeat(repl_id: str, data):
    extension().repls.runner_heartbeat(repl_id, data["active"], data.get("autosave"))
    return {"ok": True}


@bp.post("/runner/<repl_id>/idle")
@bp.output(OkOut)
@bp.doc(
    summary="Runner: idle for the idle period, stop me",
    responses={401: "Bad runner token", 404: "Gone"},
)
def idle(repl_id: str):
    extension().repls.runner_idle(repl_id)
    return {"ok": True}
