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
    repls = devex().repls.list_all(require_admin(), Status(wanted) if wanted else None)
    return {"repls": [{**r.public(), "owner_id": r.owner_id, "owner_login": r.owner_login}
                      for r in repls]}
