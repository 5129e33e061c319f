"""Schemas of what runners send (``/api/runner/<id>/heartbeat``)."""

from __future__ import annotations

from apiflask import Schema
from apiflask.fields import Nested, String
from apiflask.validators import Length, OneOf
from marshmallow import EXCLUDE

from devex.models import AUTOSAVE_STATES
from devex.web.schemas.common import StrictBoolean


class AutosaveIn(Schema):
    class Meta:
        unknown = EXCLUDE

    state = String(required=True, validate=OneOf(AUTOSAVE_STATES))
    savedAt = String(load_default=None, allow_none=True, validate=Length(max=40))  # noqa: N815
    error = String(load_default=None, allow_none=True)


class HeartbeatIn(Schema):
    class Meta:
        unknown = EXCLUDE

    active = StrictBoolean(load_default=False)
    autosave = Nested(AutosaveIn, load_default=None, allow_none=True)
