"""Schemas of the administrators' routes (``/api/admin/...``): everyone's REPLs, and
suspending users."""

from __future__ import annotations

from apiflask import Schema
from apiflask.fields import Boolean, List, Nested, String
from apiflask.validators import Length
from marshmallow import EXCLUDE

from devex.web.schemas.repls import ReplOut


class AdminReplOut(ReplOut):
    owner_id = String(required=True)
    owner_login = String(required=True)


class AdminReplList(Schema):
    repls = List(Nested(AdminReplOut), required=True)


class SuspendIn(Schema):
    class Meta:
        unknown = EXCLUDE

    reason = String(
        load_default="",
        validate=Length(max=200),
        metadata={"description": "Why, for other administrators (at most 200 characters)."},
    )


class UserStandingOut(Schema):
    id = String(required=True)
    login = String(required=True)
    suspended = Boolean(required=True)
    suspended_by = String(required=True, allow_none=True,
                          metadata={"description": "admin, github, or null"})
    suspended_reason = String(required=True, allow_none=True)
    suspended_at = String(required=True, allow_none=True)
