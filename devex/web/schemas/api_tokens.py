"""Schemas of the personal API token routes (``/api/tokens``)."""

from __future__ import annotations

from apiflask import Schema
from apiflask.fields import Boolean, List, Nested, String
from apiflask.validators import Range
from marshmallow import EXCLUDE

from devex.services.api_tokens import NAME_PATTERN as TOKEN_NAME_PATTERN
from devex.web.schemas.common import JsonInteger


class TokenCreateIn(Schema):
    class Meta:
        unknown = EXCLUDE

    # The name is checked by the service layer; the pattern is that very rule.
    name = String(required=True, metadata={
        "description": "1-64 printable characters (surrounding spaces trimmed)",
        "pattern": TOKEN_NAME_PATTERN,
    })
    expires_in_days = JsonInteger(
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
