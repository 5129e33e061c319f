"""Schemas of the operators' checks (``/readyz``, ``/api/admin/health``)."""

from __future__ import annotations

from apiflask import Schema
from apiflask.fields import String


class ReadyOut(Schema):
    redis = String(required=True)


class DependenciesOut(Schema):
    redis = String(required=True)
    storage = String(required=True)
    runtime = String(required=True)
