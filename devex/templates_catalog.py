"""The REPL template catalogue, read from ``repl_templates/<id>/template.yaml``.

Each template folder holds ``template.yaml`` (the manifest) and ``files/`` (starter files
copied into every new REPL of that template).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

TEMPLATE_ID = re.compile(r"^[a-z][a-z0-9-]{0,30}$")


class TemplateError(ValueError):
    pass


@dataclass(frozen=True)
class Resources:
    cpu_request: str = "100m"
    memory_request: str = "256Mi"
    cpu_limit: str = "1"
    memory_limit: str = "1Gi"


@dataclass(frozen=True)
class Template:
    id: str
    name: str
    language: str
    description: str
    image: str
    port: int = 8080
    run: str = ""  # the IDE's Run button: a shell command run in the workspace
    shell: str = ""  # the terminal's shell; empty: the runner's default (bash, else sh)
    resources: Resources = field(default_factory=Resources)
    files_dir: Path = Path()

    def public(self) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "language": self.language,
            "description": self.description,
        }

    def files(self) -> list[tuple[str, Path]]:
        """Starter files as (relative key, path), sorted."""
        return sorted(
            (p.relative_to(self.files_dir).as_posix(), p)
            for p in self.files_dir.rglob("*")
            if p.is_file()
        )


def load_template(folder: Path) -> Template:
    manifest = folder / "template.yaml"
    try:
        data = yaml.safe_load(manifest.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise TemplateError(f"{manifest}: {exc}") from None
    tid = folder.name
    if not TEMPLATE_ID.match(tid):
        raise TemplateError(f"{folder}: template ids are lower-case DNS labels")
    res = data.get("resources") or {}
    try:
        return Template(
            id=tid,
            name=str(data["name"]),
            language=str(data["language"]),
            description=str(data.get("description", "")),
            image=str(data["image"]),
            port=int(data.get("port", 8080)),
            run=str(data.get("run") or ""),
            shell=str(data.get("shell") or ""),
            resources=Resources(
                cpu_request=str(res.get("requests", {}).get("cpu", "100m")),
                memory_request=str(res.get("requests", {}).get("memory", "256Mi")),
                cpu_limit=str(res.get("limits", {}).get("cpu", "1")),
                memory_limit=str(res.get("limits", {}).get("memory", "1Gi")),
            ),
            files_dir=folder / "files",
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise TemplateError(f"{manifest}: missing or bad field {exc}") from None


class Catalog:
    def __init__(self, templates: dict[str, Template]):
        self._templates = dict(sorted(templates.items()))

    @classmethod
    def load(cls, root: Path) -> Catalog:
        found = {}
        for folder in sorted(p for p in root.iterdir() if (p / "template.yaml").exists()):
            t = load_template(folder)
            found[t.id] = t
        if not found:
            raise TemplateError(f"no templates under {root}")
        return cls(found)

    def get(self, template_id: str) -> Template | None:
        return self._templates.get(template_id)

    def all(self) -> list[Template]:
        return list(self._templates.values())

    def ids(self) -> list[str]:
        return list(self._templates)
