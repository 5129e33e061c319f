"""Schemas of the REPL routes (``/api/repl/...``, ``/api/templates``): REPLs, their events,
the IDE session, the template catalogue."""

from __future__ import annotations

from apiflask import Schema
from apiflask.fields import Integer, List, Nested, String
from apiflask.validators import Length, OneOf, Range
from marshmallow import EXCLUDE

from devex.models import Desired, Status
from devex.web.schemas.common import StrictBoolean

# A REPL name as ``services.repls.validate_name`` takes it: trimmed, 1-64 characters.
NAME_PATTERN = r"^\s*[A-Za-z0-9_.\-](?:[A-Za-z0-9 _.\-]{0,62}[A-Za-z0-9_.\-])?\s*$"


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
    total = Integer(required=True, metadata={"description": "How many REPLs the user has"})
    next_cursor = String(
        required=True, allow_none=True,
        metadata={"description": "Pass as ?cursor= for the next page; null on the last"},
    )


class ReplListQuery(Schema):
    class Meta:
        unknown = EXCLUDE  # cache-busting and other extra parameters are ignored

    limit = Integer(load_default=None, validate=Range(min=1, max=200),
                    metadata={"description": "Page size, 1 to 200 (default 100)"})
    cursor = String(load_default=None, validate=Length(max=200))


class ReplJob(Schema):
    repl = Nested(ReplOut, required=True)
    job_id = String(required=True, allow_none=True)


class CreateIn(Schema):
    class Meta:
        unknown = EXCLUDE

    # Names are checked by the service layer, so the API and the dashboard share one rule;
    # the pattern documents that rule exactly (tests/test_openapi.py holds them together).
    name = String(required=True, metadata={
        "description": "1-64 of letters, digits, space, -_. (surrounding spaces trimmed)",
        "pattern": NAME_PATTERN,
    })
    template = String(required=True)
    start = StrictBoolean(load_default=True)


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
