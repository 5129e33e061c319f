"""Publish the template catalogue's starter files to storage under ``_templates/<id>/``.

Creating a REPL is then one server-side ``copy_prefix(template_prefix(id), repl_prefix)``: no
file passes through the web or worker process. ``_templates`` cannot clash with a user's
prefix because GitHub logins never start with an underscore.
"""

from __future__ import annotations

import logging

from devex.templates_catalog import Catalog
from devex_shared.storage.base import StorageError
from devex_shared.storage.sync import SyncingStorage, md5_hex, validate_key

log = logging.getLogger(__name__)

TEMPLATES_PREFIX = "_templates/"


def template_prefix(template_id: str) -> str:
    if "/" in template_id:
        raise StorageError(f"invalid template id {template_id!r}")
    return validate_key(TEMPLATES_PREFIX + template_id) + "/"


def publish_templates(storage: SyncingStorage, catalog: Catalog) -> int:
    """Make ``_templates/<id>/`` mirror each template's files; returns the objects written.

    Unchanged files (same size and MD5) are not written again, so calling this at every
    start-up is cheap; keys of files removed from a template are deleted.
    """
    written = 0
    for template in catalog.all():
        prefix = template_prefix(template.id)
        remote = {obj.key: obj for obj in storage.list(prefix)}
        wanted: set[str] = set()
        for rel, path in template.files():
            key = validate_key(prefix + rel)
            wanted.add(key)
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise StorageError(f"template {template.id}: cannot read {rel}: {exc}") from exc
            current = remote.get(key)
            if current and current.size == len(data) and current.etag == md5_hex(data):
                continue
            storage.write(key, data)
            written += 1
        stale = sorted(set(remote) - wanted)
        if stale:
            storage.delete_keys(stale)
        log.info(
            "template %s published: %d file(s), %d removed", template.id, len(wanted), len(stale)
        )
    return written
