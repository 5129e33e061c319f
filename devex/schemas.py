"""Marshmallow schemas of the JSON contract; APIFlask turns them into the OpenAPI document."""

from __future__ import annotations

from apiflask import Schema
from apiflask.fields import Boolean, List, Nested, String
from apiflask.validators import Length, OneOf
from marshmallow import EXCLUDE

from devex.models import AUTOSAVE_STATES, Desired, Status


class ReplOut(Schema):
    id = String(required=True)
    name = String(required=True)
    template = String(required=True)
    status = String(required=True, validate=OneOf([s.value for s in Status]))
    desired = String(required=True, validate=OneOf([d.value for d in Desired]))
    url = String(required=True, allow_none=True)
    created_at = String(required=True)
    updated_at = String(required=True)
    last_activity_at = String(required=True, allow_none=True)
    error = String(required=True, allow_none=True)


class ReplList(Schema):
    repls = List(Nested(ReplOut), required=True)


class ReplJob(Schema):
    repl = Nested(ReplOut, required=True)
    job_id = String(required=True, allow_none=True)


class CreateIn(Schema):
    class Meta:
        unknown = EXCLUDE

    # Names are checked by the service layer, so the API and the dashboard share one rule.
    name = String(required=True, metadata={"description": "1-64 of letters, digits, space, -_."})
    template = String(required=True)
    start = Boolean(load_default=True)


class TemplateOut(Schema):
    id = String(required=True)
    name = String(required=True)
    language = String(required=True)
    description = String(required=True)


class TemplateList(Schema):
    templates = List(Nested(TemplateOut), required=True)


class EventOut(Schema):
    at = String(required=True)
    kind = String(required=True)
    message = String(required=True)


class EventList(Schema):
    events = List(Nested(EventOut), required=True)


class SessionOut(Schema):
    url = String(required=True)
    token = String(required=True)
    expires_at = String(required=True, metadata={"format": "date-time"})


class AutosaveIn(Schema):
    class Meta:
        unknown = EXCLUDE

    state = String(required=True, validate=OneOf(AUTOSAVE_STATES))
    savedAt = String(load_default=None, allow_none=True, validate=Length(max=40))  # noqa: N815
    error = String(load_default=None, allow_none=True)


class HeartbeatIn(Schema):
    class Meta:
        unknown = EXCLUDE

    active = Boolean(load_default=False)
    autosave = Nested(AutosaveIn, load_default=None, allow_none=True)


class OkOut(Schema):
    ok = Boolean(required=True)


class MeOut(Schema):
    id = String(required=True)
    login = String(required=True)
    name = String(required=True)
    avatar_url = String(required=True)
    is_admin = Boolean(required=True)
    csrf_token = String(required=True)


class ReadyOut(Schema):
    redis = String(required=True)
    storage = String(required=True)
    runtime = String(required=True)
