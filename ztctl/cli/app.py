"""The ``ztctl`` command line: Typer commands that parse options, call the engine and render.

Exit statuses hold on every path: ``ZtctlGroup.main`` maps Click's usage
errors to 2, aborts and interrupts to 130, and an unexpected exception to 5
after logging it, instead of Click's and Python's default of 1, which would
read as "changes pending".
"""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from typer._click import exceptions as click_exceptions
from typer.core import TyperGroup

from ztctl.cli import jsonout
from ztctl.cli.options import (
    AuditOption,
    ConfigOption,
    DryRunOption,
    OutputFormat,
    OutputOption,
    QuietOption,
    VerboseOption,
    CliOptions,
    merge_options,
)
from ztctl.cli.render import render_plan, stdout_console
from ztctl.cli.runner import fail, load_settings_or_fail, require_confirmation_possible, run_engine_command
from ztctl.engine import Mode, RunResult, stages
from ztctl.engine.portal_ops import dump_portal_text, load_portal_file, upgrade_database
from ztctl.errors import ExitCode, ZtctlError
from ztctl.redact import redact

log = logging.getLogger("ztctl")


class ZtctlGroup(TyperGroup):
    def main(self, args: Any = None, prog_name: Any = None, complete_var: Any = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        code = _run_group(super().main, args, prog_name, complete_var, extra)
        if standalone_mode:
            sys.exit(code)
        return code


def _run_group(main: Any, args: Any, prog_name: Any, complete_var: Any, extra: dict[str, Any]) -> int:
    try:
        returned = main(args=args, prog_name=prog_name, complete_var=complete_var, standalone_mode=False, **extra)
    except click_exceptions.ClickException as exc:
        exc.show()
        return int(ExitCode.USAGE)
    except (typer.Abort, KeyboardInterrupt):
        print("ztctl: interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    except ZtctlError as exc:
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return int(exc.exit_code)
    except Exception as exc:  # noqa: BLE001 - the last line of defence for the exit status
        log.critical("internal error, the run stopped early: %s", redact(f"{type(exc).__name__}: {exc}"),
                     exc_info=True)
        return int(ExitCode.PARTIAL_FAILURE)
    # Typer returns the exit code of typer.Exit, and None when a command returns normally.
    return returned if isinstance(returned, int) else 0


app = typer.Typer(
    cls=ZtctlGroup,
    help="Keep ZeroTier network controllers in line with an access portal.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,
)
portal_app = typer.Typer(help="Load and dump the portal's networks and memberships.", no_args_is_help=True)
db_app = typer.Typer(help="Manage the portal database schema.", no_args_is_help=True)
app.add_typer(portal_app, name="portal")
app.add_typer(db_app, name="db")


@app.callback()
def main_callback(
    ctx: typer.Context,
    config: ConfigOption = None,
    dry_run: DryRunOption = False,
    audit: AuditOption = False,
    output: OutputOption = None,
    verbose: VerboseOption = 0,
    quiet: QuietOption = False,
) -> None:
    ctx.obj = CliOptions(
        config=config, dry_run=dry_run, audit=audit, output=output or OutputFormat.TABLE,
        verbose=verbose, quiet=quiet,
    )


def _options(ctx: typer.Context, **given: Any) -> CliOptions:
    return merge_options(ctx, **given)


@app.command()
def reconcile(
    ctx: typer.Context, config: ConfigOption = None, dry_run: DryRunOption = False, audit: AuditOption = False,
    output: OutputOption = None, verbose: VerboseOption = 0, quiet: QuietOption = False,
) -> None:
    """Run the whole job: expire, sync, diff and repair, unknown."""
    options = _options(ctx, config=config, dry_run=dry_run, audit=audit, output=output, verbose=verbose, quiet=quiet)
    run_engine_command(options, "reconcile", stages.reconcile)


@app.command()
def expire(
    ctx: typer.Context, config: ConfigOption = None, dry_run: DryRunOption = False, audit: AuditOption = False,
    output: OutputOption = None, verbose: VerboseOption = 0, quiet: QuietOption = False,
) -> None:
    """End activations past their expiry, deauthorizing their members first."""
    options = _options(ctx, config=config, dry_run=dry_run, audit=audit, output=output, verbose=verbose, quiet=quiet)
    run_engine_command(options, "expire", stages.expire)


@app.command()
def sync(
    ctx: typer.Context, config: ConfigOption = None, dry_run: DryRunOption = False, audit: AuditOption = False,
    output: OutputOption = None, verbose: VerboseOption = 0, quiet: QuietOption = False,
) -> None:
    """Read every managed network's members from the controller into the cache."""
    options = _options(ctx, config=config, dry_run=dry_run, audit=audit, output=output, verbose=verbose, quiet=quiet)
    run_engine_command(options, "sync", stages.sync)


@app.command()
def diff(
    ctx: typer.Context,
    apply: Annotated[bool, typer.Option("--apply", help="Repair the drift shown, after a confirmation.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="With --apply: do not ask for confirmation.")] = False,
    config: ConfigOption = None, dry_run: DryRunOption = False, audit: AuditOption = False,
    output: OutputOption = None, verbose: VerboseOption = 0, quiet: QuietOption = False,
) -> None:
    """Show drift between the portal and the controller per network; exit 1 when there is some."""
    options = _options(ctx, config=config, dry_run=dry_run, audit=audit, output=output, verbose=verbose, quiet=quiet)
    try:
        mode = options.mode
        if mode is Mode.APPLY and not apply:
            mode = Mode.DRY_RUN
        if mode is Mode.APPLY:
            require_confirmation_possible(yes or options.is_json)
    except ZtctlError as exc:
        fail(options, "diff", exc)
    shown = {"plan": False}

    def confirm(run: RunResult) -> bool:
        render_plan(stdout_console(), run)
        shown["plan"] = True
        pending = sum(1 for stage in run.stages for f in stage.findings if f.pending and f.action)
        return typer.confirm(f"Apply {pending} change(s)?", default=False, err=True)

    asks = mode is Mode.APPLY and not yes and not options.is_json
    run_engine_command(
        options, "diff", lambda job: stages.diff(job, confirm=confirm if asks else None),
        mode=mode, plan_shown=lambda: shown["plan"],
    )


@app.command()
def repair(
    ctx: typer.Context, config: ConfigOption = None, dry_run: DryRunOption = False, audit: AuditOption = False,
    output: OutputOption = None, verbose: VerboseOption = 0, quiet: QuietOption = False,
) -> None:
    """Apply the repairs that `diff` shows, without the tables."""
    options = _options(ctx, config=config, dry_run=dry_run, audit=audit, output=output, verbose=verbose, quiet=quiet)
    run_engine_command(options, "repair", stages.repair)


@app.command()
def unknown(
    ctx: typer.Context, config: ConfigOption = None, dry_run: DryRunOption = False, audit: AuditOption = False,
    output: OutputOption = None, verbose: VerboseOption = 0, quiet: QuietOption = False,
) -> None:
    """List and flag members that no one in the portal knows, and apply the unknown-member policy."""
    options = _options(ctx, config=config, dry_run=dry_run, audit=audit, output=output, verbose=verbose, quiet=quiet)
    run_engine_command(options, "unknown", stages.unknown)


@portal_app.command("load")
def portal_load(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="Portal file, YAML or JSON (by its .json suffix).")],
    config: ConfigOption = None, dry_run: DryRunOption = False, audit: AuditOption = False,
    output: OutputOption = None, verbose: VerboseOption = 0, quiet: QuietOption = False,
) -> None:
    """Make the portal database match FILE, all or nothing."""
    options = _options(ctx, config=config, dry_run=dry_run, audit=audit, output=output, verbose=verbose, quiet=quiet)
    loaded = load_settings_or_fail(options, "portal load")
    try:
        result = load_portal_file(loaded, file, mode=options.mode)
    except ZtctlError as exc:
        fail(options, "portal load", exc)
    if options.is_json:
        document = jsonout.base_document("portal load", str(options.mode), 0)
        document.update(source=result.source, applied=result.applied, summary=result.counts,
                        changes=list(result.plan.changes))
        jsonout.emit(document)
    else:
        console = stdout_console()
        for change in result.plan.changes:
            console.print(f"  {change}", highlight=False)
        verb = "loaded" if result.applied else "dry run, nothing written"
        console.print(f"portal {verb} from {result.source}: {result.describe()}")


@portal_app.command("dump")
def portal_dump(
    ctx: typer.Context,
    config: ConfigOption = None, output: OutputOption = None, verbose: VerboseOption = 0, quiet: QuietOption = False,
) -> None:
    """Write the portal's networks and memberships to stdout, as YAML (or JSON with --output json)."""
    options = _options(ctx, config=config, dry_run=False, audit=False, output=output, verbose=verbose, quiet=quiet)
    loaded = load_settings_or_fail(options, "portal dump")
    try:
        text = dump_portal_text(loaded, "json" if options.is_json else "yaml")
    except ZtctlError as exc:
        fail(options, "portal dump", exc)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


@db_app.command("upgrade")
def db_upgrade(
    ctx: typer.Context, config: ConfigOption = None, dry_run: DryRunOption = False, audit: AuditOption = False,
    output: OutputOption = None, verbose: VerboseOption = 0, quiet: QuietOption = False,
) -> None:
    """Create the portal database or upgrade its schema to this version of ztctl."""
    options = _options(ctx, config=config, dry_run=dry_run, audit=audit, output=output, verbose=verbose, quiet=quiet)
    loaded = load_settings_or_fail(options, "db upgrade")
    try:
        result = upgrade_database(loaded, mode=options.mode)
    except ZtctlError as exc:
        fail(options, "db upgrade", exc)
    if options.is_json:
        document = jsonout.base_document("db upgrade", "apply", 0)
        document.update(database=result.database, from_revision=result.from_revision, to_revision=result.to_revision)
        jsonout.emit(document)
    elif result.from_revision == result.to_revision:
        print(f"{result.database}: schema already at {result.to_revision}")
    else:
        print(f"{result.database}: schema upgraded from {result.from_revision or 'empty'} to {result.to_revision}")


@app.command()
def demo(
    ctx: typer.Context, output: OutputOption = None, verbose: VerboseOption = 0, quiet: QuietOption = False,
) -> None:
    """Run the whole job against the built-in controller emulator, with a sample portal."""
    from ztctl.cli.demo import run_demo

    options = _options(ctx, config=None, dry_run=False, audit=False, output=output, verbose=verbose, quiet=quiet)
    raise typer.Exit(run_demo(options))


def _terminate(signum: int, frame: object) -> None:
    # Treat SIGTERM (cron's timeout, systemd's stop) like Ctrl-C, so the run
    # record is closed and the exit status says "interrupted".
    raise KeyboardInterrupt


def main() -> None:
    signal.signal(signal.SIGTERM, _terminate)
    app()
