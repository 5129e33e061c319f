"""``flask devex repls ...``, ``flask devex reconcile`` and ``flask devex cull-idle``: what an
operator needs at a shell, with the app's own clients and rules.

Commands act as the REPL's owner with administrator rights (``OPERATOR`` in the REPL's
events), so a force stop is allowed here as it is to the owner. The periodic jobs run in
this process, with the app's components bound to the thread (``jobs.context``). Failures
are one readable line (``click.ClickException``), never a traceback.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence

import click
from flask import current_app
from flask.cli import AppGroup, with_appcontext
from redis import RedisError

from devex.errors import DevexError, RuntimeFailure, RuntimeUnavailable
from devex.infra import keys
from devex.models import Status
from devex.services.repls import Actor, ReplService
from devex_shared.redact import redact
from devex_shared.storage import StorageError

OPERATOR = "operator"
# What a command may run into; anything else is a bug and keeps its traceback.
EXPECTED = (RedisError, DevexError, StorageError, RuntimeFailure, RuntimeUnavailable, OSError)

repls_cli = AppGroup("repls", help="Look at and stop anyone's REPLs (administrators).")


def _components():
    return current_app.extensions["devex"].components


def readable_errors(command: Callable) -> Callable:
    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except DevexError as exc:
            raise click.ClickException(exc.message) from None
        except RedisError as exc:
            raise click.ClickException(f"Redis is unavailable: {redact(exc)}") from None
        except EXPECTED as exc:
            raise click.ClickException(f"{type(exc).__name__}: {redact(exc)}") from None

    return run


def _table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in [header, *rows]]
    return "\n".join(lines)


def _repl(repl_id: str):
    repl = _components().store.get(repl_id)
    if repl is None:
        raise click.ClickException(f"no REPL with the id {repl_id!r}")
    return repl


def _operator(repl) -> Actor:
    return Actor(id=repl.owner_id, login=OPERATOR, is_admin=True)


@repls_cli.command("list")
@click.option("--status", type=click.Choice([s.value for s in Status]), help="Only these.")
@click.option("--owner", help="Only this owner's (login or user id).")
@readable_errors
def list_command(status: str | None, owner: str | None) -> None:
    """Every user's REPLs, newest first."""
    repls = _components().store.list_all()
    shown = [r for r in repls if (status is None or r.status.value == status)
             and (owner is None or owner in (r.owner_login, r.owner_id))]
    if not shown:
        click.echo("no REPLs")
        return
    rows = [(r.id, r.name, r.owner_login, r.status.value, r.template, r.updated_at,
             (r.error or "")[:60]) for r in shown]
    click.echo(_table(rows, ("ID", "NAME", "OWNER", "STATUS", "TEMPLATE", "UPDATED", "ERROR")))
    click.echo(f"{len(shown)} of {len(repls)} REPLs")


@repls_cli.command("show")
@click.argument("repl_id")
@readable_errors
def show_command(repl_id: str) -> None:
    """Everything recorded about one REPL, its lock, last job and runner."""
    c = _components()
    repl = _repl(repl_id)
    raw = c.redis.hgetall(keys.repl_meta(repl_id))
    record = {k.decode(): v.decode() for k, v in raw.items()}
    if record.get("error"):
        record["error"] = redact(record["error"])
    record["lock"] = "held by a job" if c.store.is_locked(repl_id) else "free"
    job_id = record.get("job_id")
    if job_id:
        job = c.jobs.queue.fetch_job(job_id)
        state = getattr(job.get_status(refresh=False), "value", "?") if job else "gone"
        record["job_id"] = f"{job_id} ({state})"
    record["runner"] = "running" if c.runtime.is_running(repl) else "not running"
    width = max(len(k) for k in record)
    for key in sorted(record):
        click.echo(f"{key.ljust(width)}  {record[key]}")


def _stop(repl_id: str, force: bool) -> None:
    c = _components()
    repl = _repl(repl_id)
    outcome = ReplService(c).stop(_operator(repl), repl_id, force=force)
    if outcome.accepted:
        how = "force-stopping (no final save)" if force else "stopping (files saved)"
        click.echo(f"{repl_id}: {how}; job {outcome.job_id}")
    else:
        click.echo(f"{repl_id}: nothing to do, it is {outcome.repl.status.value}")


@repls_cli.command("stop")
@click.argument("repl_id")
@readable_errors
def stop_command(repl_id: str) -> None:
    """Stop a REPL, saving its files."""
    _stop(repl_id, force=False)


@repls_cli.command("force-stop")
@click.argument("repl_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@readable_errors
def force_stop_command(repl_id: str, yes: bool) -> None:
    """Stop a REPL without the final save (also while a save hangs)."""
    if not yes:
        click.confirm(f"Changes in {repl_id} since its last autosave will be lost. Go on?",
                      abort=True)
    _stop(repl_id, force=True)


@repls_cli.command("events")
@click.argument("repl_id")
@click.option("--limit", type=click.IntRange(min=1), help="Only the last N.")
@readable_errors
def events_command(repl_id: str, limit: int | None) -> None:
    """A REPL's events, oldest first."""
    _repl(repl_id)
    events = _components().store.events(repl_id)
    if limit:
        events = events[-limit:]
    if not events:
        click.echo("no events")
    for e in events:
        click.echo(f"{e.at}  {e.kind:<10}  {e.actor:<10}  {redact(e.message)}")


def _run_periodic(job: Callable[[], object]) -> object:
    from jobs import context

    context.bind_thread(_components())
    try:
        return job()
    finally:
        context.bind_thread(None)


def _describe(result: object) -> list[str]:
    """A periodic job's result in lines: ``key: a, b`` for each entry of a dict."""
    if isinstance(result, dict):
        return [f"{key}: {_items(value)}" for key, value in result.items()]
    return [_items(result)]


def _items(value: object) -> str:
    if isinstance(value, list | tuple | set):
        return ", ".join(str(v) for v in value) or "none"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


@click.command("reconcile")
@with_appcontext
@readable_errors
def reconcile_command() -> None:
    """Run reconcile now, in this process: runners vs records, interrupted changes."""
    from jobs import periodic

    for line in _describe(_run_periodic(periodic.reconcile)):
        click.echo(line)


@click.command("cull-idle")
@with_appcontext
@readable_errors
def cull_idle_command() -> None:
    """Stop idle REPLs now, in this process (files saved)."""
    from jobs import periodic

    stopped = _run_periodic(periodic.cull_idle)
    click.echo(f"stopping: {_items(stopped)}")
