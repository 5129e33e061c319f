"""Schemas of the login routes (``/auth/...``)."""

from __future__ import annotations

from apiflask import Schema
from apiflask.fields import Boolean, String


class MeOut(Schema):
    id = String(required=True)
    login = String(required=True)
    name = String(required=True)
    avatar_url = String(required=True)
    is_admin = Boolean(required=True)
    csrf_token = String(required=True)
