"""The import directions of docs/ARCHITECTURE.md, read from the source with ``ast``.

web (``devex/web/``, ``devex/blueprints/``) -> services -> infra and ``devex_shared``; ``jobs/``
-> services and infra; ``runner/`` -> ``devex_shared`` only. Imports inside functions count
too: a lazy import is still a dependency, and the runner image has no ``devex`` to find.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("devex", "devex_shared", "jobs", "runner")

# Which layer a module belongs to: the first prefix it falls under.
LAYERS = (
    ("devex.web", "web"),
    ("devex.blueprints", "web"),
    ("devex.services", "services"),
    ("devex.infra", "infra"),
    ("devex_shared", "shared"),
    ("jobs", "jobs"),
    ("runner", "runner"),
)

WEB = ("devex.web", "devex.blueprints")
FLASK = ("flask", "flask_*", "apiflask")

# layer -> (what it must never import, why). A pattern names a module and everything under
# it; one ending in "*" matches top-level names (``flask_*``: flask_dance, flask_session...).
RULES: dict[str, tuple[tuple[str, ...], str]] = {
    "web": (("jobs",), "the web enqueues jobs by dotted path and never imports worker code"),
    "services": (WEB + FLASK + ("jobs",),
                 "services hold the rules: no HTTP, and no worker code"),
    "infra": (WEB + FLASK + ("devex.services", "jobs"),
              "infra speaks to Redis, S3, Kubernetes and processes: nothing above it"),
    "jobs": (WEB + FLASK, "jobs run in workers: services and infra, never the web"),
    "shared": (("devex", "jobs", "runner", "redis", "rq", "kubernetes") + FLASK,
               "devex_shared is installed whole in the runner image, without the core's "
               "dependencies"),
    "runner": (("devex", "jobs"), "the runner image ships devex_shared only"),
}


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    module: str
    layer: str
    imported: str

    def __str__(self) -> str:
        return (f"{self.path}:{self.line}: {self.module} ({self.layer}) imports {self.imported}:"
                f" {RULES[self.layer][1]}")


def layer_of(module: str) -> str | None:
    """None for devex's own top level (the factory, settings, models, errors, CLI)."""
    for prefix, layer in LAYERS:
        if module == prefix or module.startswith(prefix + "."):
            return layer
    return None


def matches(module: str, pattern: str) -> bool:
    if pattern.endswith("*"):
        return fnmatch(module.split(".")[0], pattern)
    return module == pattern or module.startswith(pattern + ".")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES
            for p in sorted((ROOT / package).rglob("*.py")) if "__pycache__" not in p.parts}


def imports_of(module: str, source: str, is_package: bool,
               known: set[str]) -> list[tuple[int, str]]:
    """(line, imported module) for every import statement, wherever it stands.

    ``from a import b`` counts as importing ``a.b`` when that is a module of ours, else ``a``.
    """
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against this module's package
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[:len(package) - (node.level - 1)]
                base = ".".join(package + ([node.module] if node.module else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((node.lineno, sub if sub in known else base))
    return found


def violations_in(module: str, source: str, path: str, is_package: bool = False,
                  known: frozenset[str] = frozenset()) -> list[Violation]:
    layer = layer_of(module)
    if layer is None:
        return []
    banned = RULES[layer][0]
    return [Violation(path, line, module, layer, imported)
            for line, imported in sorted(imports_of(module, source, is_package, set(known)))
            if any(matches(imported, pattern) for pattern in banned)]


def all_violations() -> list[Violation]:
    modules = project_modules()
    known = frozenset(modules)
    return [v for name, path in modules.items()
            for v in violations_in(name, path.read_text(), str(path.relative_to(ROOT)),
                                   path.name == "__init__.py", known)]


@pytest.fixture(scope="module")
def violations() -> list[Violation]:
    return all_violations()


@pytest.mark.parametrize("layer", sorted(RULES))
def test_layer_imports_only_what_it_may(layer, violations):
    found = [str(v) for v in violations if v.layer == layer]
    if found:
        pytest.fail(f"{len(found)} import(s) against the rules:\n" + "\n".join(found),
                    pytrace=False)


def test_every_layer_has_modules():
    """The scan sees the tree: a renamed package cannot leave a rule checking nothing."""
    seen = {layer_of(name) for name in project_modules()}
    assert set(RULES) <= seen, set(RULES) - seen


def test_the_checker_finds_imports_inside_functions_and_relative_ones():
    source = (
        "import os\n"
        "from . import keys\n"
        "def later():\n"
        "    from devex.web import security\n"
        "    import flask_session\n"
        "class K:\n"
        "    def m(self):\n"
        "        from ..services import repls\n"
    )
    known = frozenset({"devex.infra.keys", "devex.web.security", "devex.services.repls"})
    found = violations_in("devex.infra.sample", source, "sample.py", known=known)
    assert [(v.line, v.imported) for v in found] == [
        (4, "devex.web.security"), (5, "flask_session"), (8, "devex.services.repls")]
    assert "devex.infra.sample (infra) imports devex.web.security" in str(found[0])


def test_the_checker_tells_devex_from_devex_shared():
    source = "from devex_shared.storage import sync\nfrom devex import metrics\n"
    known = frozenset({"devex_shared.storage.sync", "devex.metrics"})
    found = violations_in("runner.cli", source, "runner/cli.py", known=known)
    assert [v.imported for v in found] == ["devex.metrics"]
