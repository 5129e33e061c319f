"""Marshmallow schemas of the personal-token and admin routes."""

from __future__ import annotations

from apiflask import Schema
from apiflask.fields import Boolean, Integer, List, Nested, String
from apiflask.validators import Range
from marshmallow import EXCLUDE

from devex.schemas import ReplOut


class TokenCreateIn(Schema):
    class Meta:
        unknown = EXCLUDE

    # The name is checked by the service layer (1-64 printable characters).
    name = String(required=True)
    expires_in_days = Integer(
        load_default=None,
        allow_none=True,
        validate=Range(min=1, max=3650),
        metadata={"description": "Days until the token stops working; null: never."},
    )


class TokenOut(Schema):
    id = String(required=True)
    name = String(required=True)
    created_at = String(required=True)
    expires_at = String(required=True, allow_none=True)
    last_used_at = String(required=True, allow_none=True)
    expired = Boolean(required=True)


class TokenCreated(TokenOut):
    token = String(
        required=True,
        metadata={"description": "The plaintext token: shown this once, never again."},
    )


class TokenList(Schema):
    tokens = List(Nested(TokenOut), required=True)


class AdminReplOut(ReplOut):
    owner_id = String(required=True)
    owner_login = String(required=True)


class AdminReplList(Schema):
    repls = List(Nested(AdminReplOut), required=True)
