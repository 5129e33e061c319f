"""Administrators (``DEVEX_ADMINS``): everyone's REPLs, and suspending users. Stopping a REPL
goes through the ordinary ``POST /api/repl/<id>/stop``, which lets admins act on any REPL.
A suspended user's sessions and personal tokens stop working at their next request."""

from __future__ import annotations

from apiflask import APIBlueprint
from flask import request

from devex.errors import InvalidInput, NotFound
from devex.extension import extension
from devex.models import Status
from devex.web.schemas.admin import AdminReplList, SuspendIn, UserStandingOut
from devex.web.security import auth_ext, require_admin

bp = APIBlueprint("admin", __name__, url_prefix="/api/admin", tag="Administration")


@bp.before_request
def _authenticate():
    require_admin()


@bp.get("/repls")
@bp.output(AdminReplList)
@bp.doc(
    summary="Every user's REPLs with their owner, newest first (?status=running to filter)",
    responses={401: "Not logged in", 403: "Not an administrator"},
)
def all_repls():
    require_admin()
    wanted = request.args.get("status") or None
    if wanted is not None and wanted not in {s.value for s in Status}:
        raise InvalidInput(f"Unknown status {wanted!r}.", code="invalid_status")
    repls = extension().repls.list_all(require_admin(), Status(wanted) if wanted else None)
    return {"repls": [{**r.public(), "owner_id": r.owner_id, "owner_login": r.owner_login}
                      for r in repls]}


def _standing(user_id: str) -> dict:
    user = extension().components.store.get_user(user_id)
    if user is None:
        raise NotFound("No such user.")
    return {
        "id": user.id,
        "login": user.login,
        "suspended": bool(user.suspended),
        "suspended_by": user.suspended or None,
        "suspended_reason": user.suspended_reason or None,
        "suspended_at": user.suspended_at or None,
    }


USER = {401: "Not logged in", 403: "Not an administrator (or CSRF)", 404: "No such user"}


@bp.post("/users/<user_id>/suspend")
@bp.input(SuspendIn, arg_name="data")
@bp.output(UserStandingOut)
@bp.doc(
    summary="Suspend a user: their sessions and personal tokens stop working",
    responses={**USER, 409: "Administrators cannot suspend themselves"},
)
def suspend_user(user_id: str, data):
    admin = require_admin()
    auth_ext().accounts.suspend(user_id, data["reason"], by_id=admin.id)
    return _standing(user_id)


@bp.post("/users/<user_id>/resume")
@bp.output(UserStandingOut)
@bp.doc(summary="Lift a user's suspension (whoever suspended them)", responses=USER)
def resume_user(user_id: str):
    require_admin()
    auth_ext().accounts.resume(user_id)
    return _standing(user_id)
