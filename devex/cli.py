"""``flask devex ...``: operator commands. The app factory registers ``devex_cli``."""

from __future__ import annotations

import click
import yaml
from flask import current_app
from flask.cli import AppGroup

from devex.cli_admin import cull_idle_command, reconcile_command, repls_cli
from devex.config import Settings
from devex.templates_catalog import Catalog, TemplateError

devex_cli = AppGroup("devex", help="Devex operator commands.")
for _command in (repls_cli, reconcile_command, cull_idle_command):  # devex/cli_admin.py
    devex_cli.add_command(_command)

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

    settings = _settings()  # a bad setting: click shows its one line (ConfigError)
    try:
        catalog = Catalog.load(settings.templates_dir)
    except (TemplateError, OSError) as exc:
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
    except ValueError as exc:  # a name or label Kubernetes would refuse
        raise click.ClickException(str(exc)) from None
    click.echo(f"# flask devex manifests --template {template.id} --repl-id {repl_id}")
    click.echo(f"# namespace {settings.kubernetes.namespace}; the runner key Secret holds a "
               "placeholder here")
    click.echo(yaml.safe_dump_all(objects, sort_keys=False, explicit_start=True), nl=False)


def _accounts_and_user(who: str):
    """The app's account rules and the user ``who`` names (a user id, or a login)."""
    from devex.infra import keys

    components = current_app.extensions["devex"].components
    user = components.store.get_user(who)
    if user is None:
        found = components.redis.get(keys.user_by_login(who))
        user = components.store.get_user(found.decode()) if found else None
    if user is None:
        raise click.ClickException(f"no user with the id or login {who!r}")
    return current_app.extensions["devex_auth"].accounts, user


@devex_cli.command("suspend")
@click.argument("who")
@click.option("--reason", default="", help="Why (shown to administrators).")
def suspend_command(who: str, reason: str) -> None:
    """Suspend a user (an id, or a login): their sessions and tokens stop working."""
    from devex.errors import DevexError

    accounts, user = _accounts_and_user(who)
    try:
        accounts.suspend(user.id, reason or "suspended by an operator")
    except DevexError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"suspended {user.login} (id {user.id})")


@devex_cli.command("resume")
@click.argument("who")
def resume_command(who: str) -> None:
    """Lift a user's suspension (an id, or a login)."""
    accounts, user = _accounts_and_user(who)
    accounts.resume(user.id)
    click.echo(f"resumed {user.login} (id {user.id})")
