"""What several route families share: JSON-strict field types and the ``{"ok": true}`` answer."""

from __future__ import annotations

from apiflask import Schema
from apiflask.fields import Boolean, Integer


class StrictBoolean(Boolean):
    """JSON ``true`` or ``false`` only, as the document says (marshmallow's Boolean would
    also take 1, "yes", "on", ...)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


class JsonInteger(Integer):
    """A JSON integer as JSON Schema counts one (7, or 7.0), never "7" or true."""

    def _deserialize(self, value, attr, data, **kwargs):
        whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        if isinstance(value, bool) or not whole:
            raise self.make_error("invalid", input=value)
        return super()._deserialize(int(value), attr, data, **kwargs)


class OkOut(Schema):
    ok = Boolean(required=True)
