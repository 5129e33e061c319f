"""Finishing touches to the generated OpenAPI document, so that it says what the API does.

APIFlask builds the document from the marshmallow schemas; two facts are only known here:
a body whose schema has required fields is itself required (a POST without one is a 400,
so the document must not call the body optional), and the ``template`` of a new REPL is one
of the catalogue's ids, which are read at start-up (``repl_templates/``).
"""

from __future__ import annotations

from apiflask import APIFlask

from devex.templates_catalog import Catalog


def _schema(spec: dict, ref_or_schema: dict) -> dict:
    ref = ref_or_schema.get("$ref", "")
    if ref.startswith("#/components/schemas/"):
        return spec.get("components", {}).get("schemas", {}).get(ref.rsplit("/", 1)[1], {})
    return ref_or_schema


def complete(spec: dict, catalog: Catalog) -> dict:
    for operations in spec.get("paths", {}).values():
        for operation in operations.values():
            body = operation.get("requestBody") if isinstance(operation, dict) else None
            if not body:
                continue
            for media in body.get("content", {}).values():
                if _schema(spec, media.get("schema", {})).get("required"):
                    body["required"] = True
    create = spec.get("components", {}).get("schemas", {}).get("CreateIn", {})
    template = create.get("properties", {}).get("template")
    if template is not None:
        template["enum"] = catalog.ids()
    return spec


def init_openapi(app: APIFlask, catalog: Catalog) -> None:
    app.spec_processor(lambda spec: complete(spec, catalog))
