"""``flask devex ...``: operator commands. The app factory registers ``devex_cli``."""

from __future__ import annotations

import click
import yaml
from flask import current_app
from flask.cli import AppGroup

from devex.config import ConfigError, Settings
from devex.templates_catalog import Catalog, TemplateError

devex_cli = AppGroup("devex", help="Devex operator commands.")

# The real key is derived from DEVEX_SECRET_KEY when the REPL starts; never printed here.
KEY_PLACEHOLDER = "set-when-the-repl-starts"


def _settings() -> Settings:
    ext = current_app.extensions.get("devex")
    settings = getattr(ext, "settings", ext)
    if isinstance(settings, Settings):
        return settings
    return Settings.from_env()


@devex_cli.command("manifests")
@click.option("--template", "template_id", required=True, help="Template id, e.g. python.")
@click.option("--repl-id", default="0123456789ab", show_default=True,
              help="REPL id to render (12 lower-case hex characters).")
@click.option("--owner", default="octocat", show_default=True, help="Owner login.")
@click.option("--owner-id", default="1", show_default=True, help="Owner's GitHub user id.")
def manifests_command(template_id: str, repl_id: str, owner: str, owner_id: str) -> None:
    """Print the Kubernetes objects a REPL of TEMPLATE gets, as multi-document YAML."""
    from devex.infra.runtime.kubernetes import manifests
    from devex.models import Repl

    try:
        settings = _settings()
        catalog = Catalog.load(settings.templates_dir)
    except (ConfigError, TemplateError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    template = catalog.get(template_id)
    if template is None:
        raise click.BadParameter(
            f"unknown template {template_id!r}; one of: {', '.join(catalog.ids())}",
            param_hint="--template")
    repl = Repl(id=repl_id, name="preview", template=template.id, owner_id=owner_id,
                owner_login=owner, storage_prefix=f"{owner}/{repl_id}/")
    try:
        objects = manifests.all_objects(repl, template, settings, KEY_PLACEHOLDER)
    except (ValueError, ConfigError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"# flask devex manifests --template {template.id} --repl-id {repl_id}")
    click.echo(f"# namespace {settings.k8s_namespace}; the runner key Secret holds a "
               "placeholder here")
    click.echo(yaml.safe_dump_all(objects, sort_keys=False, explicit_start=True), nl=False)
