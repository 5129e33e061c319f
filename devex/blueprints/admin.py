"""Administrators (``DEVEX_ADMINS``): everyone's REPLs. Stopping one goes through the
ordinary ``POST /api/repl/<id>/stop``, which lets admins act on any REPL."""

from __future__ import annotations

from apiflask import APIBlueprint
from flask import request

from devex import schemas_auth
from devex.errors import InvalidInput
from devex.models import Status
from devex.security import devex, require_admin

bp = APIBlueprint("admin", __name__, url_prefix="/api/admin", tag="Administration")


@bp.before_request
def _authenticate():
    require_admin()


@bp.get("/repls")
@bp.output(schemas_auth.AdminReplList)
@bp.doc(
    summary="Every user's REPLs with their owner, newest first (?status=running to filter)",
    responses={401: "Not logged in", 403: "Not an administrator"},
)
def all_repls():
    require_admin()
    wanted = request.args.get("status") or None
    if wanted is not None and wanted not in {s.value for s in Status}:
        raise InvalidInput(f"Unknown status {wanted!r}.", code="invalid_status")
    store = devex().components.store
    out = []
    for repl_id in reversed(store.list_ids()):
        repl = store.get(repl_id)
        if repl is None or (wanted and repl.status.value != wanted):
            continue
        out.append({**repl.public(), "owner_id": repl.owner_id, "owner_login": repl.owner_login})
    return {"repls": out}
