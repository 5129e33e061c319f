"""Redis replies as text. Connections keep raw bytes (RQ needs them); the stores speak ``str``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def decode(value: bytes | T) -> str | T:
    """Bytes as text; anything else (None, a script's integer, a str) as it is."""
    return value.decode() if isinstance(value, bytes) else value


def decode_hash(raw: Mapping[Any, Any]) -> dict[str, str]:
    """A hash reply (``HGETALL``) as text."""
    # On the hot path: one type check per hash, not two per field.
    if raw and isinstance(next(iter(raw)), bytes):
        return {k.decode(): v.decode() for k, v in raw.items()}
    return dict(raw)


def decode_pairs(flat: list) -> dict[str, str]:
    """A hash as a script returns it (``[field, value, ...]``) as text."""
    items = [v.decode() for v in flat] if flat and isinstance(flat[0], bytes) else flat
    return dict(zip(items[::2], items[1::2], strict=True))
