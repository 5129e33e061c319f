"""The dashboard's administrators' page: every live REPL, whoever owns it (Stop is the one
action offered on someone else's REPL)."""

from __future__ import annotations

from flask import render_template

from devex.errors import Forbidden
from devex.extension import extension
from devex.models import Status
from devex.web.pages import page_blueprint
from devex.web.security import current_actor

bp = page_blueprint("admin_pages", __name__)

LIVE = (Status.STARTING, Status.RUNNING, Status.STOPPING)


@bp.get("/admin")
def index():
    actor = current_actor()
    if not actor.is_admin:
        raise Forbidden("Only administrators may see this page.", code="admin_only")
    live = [r for r in extension().repls.list_all(actor) if r.status in LIVE]
    return render_template("admin.html", repls=live)
