"""The ``ztctl`` command line: Typer commands that parse options, call the engine and render.

Exit statuses hold on every path: ``ZtctlGroup.main`` maps Click's usage
errors to 2, aborts and interrupts to 130, and an unexpected exception to 5
after logging it, instead of Click's and Python's default of 1, which would
read as "changes pending".
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from typer._click import exceptions as click_exceptions
from typer.core import TyperGroup

from ztctl import __version__
from ztctl.cli import jsonout
from ztctl.cli.operator import register as register_operator_commands
from ztctl.cli.options import (
    BASIC_OPTIONS,
    AuditOption,
    CliOptions,
    ConfigOption,
    DryRunOption,
    ForceOption,
    LogFormat,
    LogFormatOption,
    MetricsFileOption,
    OutputFormat,
    OutputOption,
    QuietOption,
    ReportOption,
    VerboseOption,
    WaitOption,
    command,
)
from ztctl.cli.render import render_plan, stdout_console
from ztctl.cli.runner import (
    fail,
    load_settings_or_fail,
    progress_paused,
    require_confirmation_possible,
    run_engine_command,
)
from ztctl.engine import Mode, RunResult, stages
from ztctl.engine.portal_ops import dump_portal_text, load_portal_file, upgrade_database
from ztctl.errors import ExitCode, UsageError, ZtctlError
from ztctl.redact import redact

log = logging.getLogger("ztctl")


class ZtctlGroup(TyperGroup):
    def main(self, args: Any = None, prog_name: Any = None, complete_var: Any = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        code = _run_group(super().main, args, prog_name, complete_var, extra)
        code = _flush_output(code)
        if standalone_mode:
            sys.exit(code)
        return code


def _run_group(main: Any, args: Any, prog_name: Any, complete_var: Any, extra: dict[str, Any]) -> int:
    argv = list(sys.argv[1:] if args is None else args)
    try:
        returned = main(args=argv, prog_name=prog_name, complete_var=complete_var, standalone_mode=False, **extra)
    except click_exceptions.ClickException as exc:
        exc.show()
        _emit_json_error(argv, ExitCode.USAGE, "UsageError", exc.format_message())
        return int(ExitCode.USAGE)
    except (typer.Abort, KeyboardInterrupt):
        print("ztctl: interrupted", file=sys.stderr)
        _emit_json_error(argv, ExitCode.INTERRUPTED, "Interrupted", "interrupted")
        return int(ExitCode.INTERRUPTED)
    except ZtctlError as exc:
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        _emit_json_error(argv, exc.exit_code, type(exc).__name__, str(exc))
        return int(exc.exit_code)
    except OSError as exc:
        if exc.errno not in _OUTPUT_ERRNOS and not _output_broken():
            return _internal_error(argv, exc)
        # Standard output is full, closed or gone: a CI job that reads it must
        # not take the partial document for a result.
        print(f"ztctl: cannot write the output: {exc.strerror or exc}", file=sys.stderr)
        return int(ExitCode.PARTIAL_FAILURE)
    except Exception as exc:  # noqa: BLE001 - the last line of defence for the exit status
        return _internal_error(argv, exc)
    # Typer returns the exit code of typer.Exit, and None when a command returns normally.
    return returned if isinstance(returned, int) else 0


def _internal_error(argv: list[str], exc: BaseException) -> int:
    message = redact(f"{type(exc).__name__}: {exc}")
    log.critical("internal error, the run stopped early: %s", message, exc_info=exc)
    try:
        _emit_json_error(argv, ExitCode.PARTIAL_FAILURE, "InternalError", f"internal error: {message}")
    except OSError:
        pass  # stdout is what failed, and the log line above records the error
    return int(ExitCode.PARTIAL_FAILURE)


# Errors from writing a full, closed or vanished output. Files that ztctl
# writes itself (reports, metrics) report their own errors before this.
_OUTPUT_ERRNOS = frozenset({errno.ENOSPC, errno.EPIPE, errno.EBADF, errno.EIO, errno.EDQUOT})

_stdout_closed = False
"""Set when ztctl started with standard output closed; its output then goes nowhere."""


def _output_broken() -> bool:
    """Tell whether standard output can no longer be written."""
    if _stdout_closed:
        return True
    try:
        sys.stdout.flush()
    except (OSError, ValueError, AttributeError):
        return True
    return False


def _flush_output(code: int) -> int:
    """Flush standard output now, so that a failure to write it sets the exit status.

    Python would otherwise find out at exit, print a traceback and exit 120.
    """
    if not _output_broken():
        return code
    print("ztctl: cannot write the output", file=sys.stderr)
    # Whatever is still buffered cannot be written; send it nowhere, so the
    # interpreter's own flush at exit does not fail again.
    sys.stdout = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - stays open until exit
    return code if code not in (ExitCode.OK, ExitCode.CHANGES_PENDING) else int(ExitCode.PARTIAL_FAILURE)


def _emit_json_error(argv: list[str], code: ExitCode, kind: str, message: str) -> None:
    """Print the JSON error document for a failure that happened before a command could print one."""
    wants_json = any(
        arg in ("--output=json", "-ojson") or (arg in ("--output", "-o") and following == "json")
        for arg, following in zip(argv, [*argv[1:], ""], strict=True)
    )
    if not wants_json:
        return
    command = next((arg for arg in argv if arg in _COMMAND_NAMES), "unknown")
    document = jsonout.base_document(command, "unknown", int(code))
    document["error"] = {"type": kind, "message": redact(message), "hint": "see ztctl --help"}
    jsonout.emit(document)


_COMMAND_NAMES = (
    "reconcile", "expire", "sync", "diff", "repair", "unknown", "portal", "db", "demo",
    "history", "explain", "check", "adopt", "ack",
)


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


def _print_version(value: bool) -> None:
    if value:
        print(f"ztctl {__version__}")
        raise typer.Exit(0)


@app.callback()
def main_callback(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option("--version", is_eager=True, callback=_print_version, help="Print the version and exit."),
    ] = False,
    config: ConfigOption = None,
    dry_run: DryRunOption = False,
    audit: AuditOption = False,
    output: OutputOption = None,
    verbose: VerboseOption = 0,
    quiet: QuietOption = False,
    wait: WaitOption = None,
    force: ForceOption = False,
    log_format: LogFormatOption = None,
    metrics_file: MetricsFileOption = None,
    report: ReportOption = None,
) -> None:
    ctx.obj = CliOptions(
        config=config, dry_run=dry_run, audit=audit, output=output or OutputFormat.TABLE,
        verbose=verbose, quiet=quiet, wait=wait, force=force, log_format=log_format or LogFormat.TEXT,
        metrics_file=metrics_file, report=report,
    )


@command(app)
def reconcile(options: CliOptions) -> None:
    """Run the whole job: expire, sync, diff and repair, unknown."""
    run_engine_command(options, "reconcile", stages.reconcile)


@command(app)
def expire(options: CliOptions) -> None:
    """End activations past their expiry, deauthorizing their members first."""
    run_engine_command(options, "expire", stages.expire)


@command(app)
def sync(options: CliOptions) -> None:
    """Read every managed network's members from the controller into the cache."""
    run_engine_command(options, "sync", stages.sync)


@command(app)
def diff(
    options: CliOptions,
    apply: Annotated[bool, typer.Option("--apply", help="Repair the drift shown, after a confirmation.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="With --apply: do not ask for confirmation.")] = False,
) -> None:
    """Show drift between the portal and the controller per network; exit 1 when there is some."""
    try:
        mode = options.mode
        if apply and mode is not Mode.APPLY:
            raise UsageError(
                f"--apply cannot be combined with --{mode}", hint="drop one of them: --apply writes, the other does not"
            )
        if mode is Mode.APPLY and not apply:
            mode = Mode.DRY_RUN
        if mode is Mode.APPLY:
            require_confirmation_possible(yes, json_output=options.is_json)
    except ZtctlError as exc:
        fail(options, "diff", exc)
    shown = {"plan": False}

    def confirm(run: RunResult) -> bool:
        with progress_paused():
            render_plan(stdout_console(), run)
            shown["plan"] = True
            pending = sum(1 for stage in run.stages for f in stage.findings if f.pending and f.action)
            return typer.confirm(f"Apply {pending} change(s)?", default=False, err=True)

    asks = mode is Mode.APPLY and not yes and not options.is_json
    run_engine_command(
        options, "diff", lambda job: stages.diff(job, confirm=confirm if asks else None),
        mode=mode, plan_shown=lambda: shown["plan"],
    )


@command(app)
def repair(options: CliOptions) -> None:
    """Apply the repairs that `diff` shows, without the tables."""
    run_engine_command(options, "repair", stages.repair)


@command(app)
def unknown(options: CliOptions) -> None:
    """List and flag members that have no membership in the portal, and apply the unknown-member policy."""
    run_engine_command(options, "unknown", stages.unknown)


@command(portal_app, "load", options=("config", "dry_run", "output", "verbose", "quiet", "wait", "force", "log_format"))
def portal_load(
    options: CliOptions,
    file: Annotated[Path, typer.Argument(help="Portal file, YAML or JSON (by its .json suffix).")],
) -> None:
    """Make the portal database match FILE, all or nothing."""
    loaded = load_settings_or_fail(options, "portal load")
    try:
        result = load_portal_file(loaded, file, mode=options.mode, wait=options.wait, force=options.force)
    except ZtctlError as exc:
        fail(options, "portal load", exc)
    # Like every dry run, one that would change something exits 1.
    code = int(ExitCode.CHANGES_PENDING if not result.applied and result.plan.changes else ExitCode.OK)
    if options.is_json:
        document = jsonout.base_document("portal load", str(options.mode), code)
        document.update(source=result.source, applied=result.applied, summary=result.counts,
                        changes=list(result.plan.changes))
        jsonout.emit(document)
    else:
        console = stdout_console()
        for change in result.plan.changes:
            console.print(f"  {change}", highlight=False)
        verb = "loaded" if result.applied else "dry run, nothing written"
        console.print(f"portal {verb} from {result.source}: {result.describe()}")
    raise typer.Exit(code)


@command(portal_app, "dump", options=BASIC_OPTIONS)
def portal_dump(options: CliOptions) -> None:
    """Write the portal's networks and memberships to stdout, as YAML (or JSON with --output json)."""
    loaded = load_settings_or_fail(options, "portal dump")
    try:
        text = dump_portal_text(loaded, "json" if options.is_json else "yaml")
    except ZtctlError as exc:
        fail(options, "portal dump", exc)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


@command(db_app, "upgrade", options=("config", "dry_run", "audit", "output", "verbose", "quiet", "wait", "log_format"))
def db_upgrade(options: CliOptions) -> None:
    """Create the portal database or upgrade its schema to this version of ztctl."""
    loaded = load_settings_or_fail(options, "db upgrade")
    try:
        result = upgrade_database(loaded, mode=options.mode, wait=options.wait)
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


@command(app, options=("output", "verbose", "quiet", "log_format"))
def demo(
    options: CliOptions,
    keep: Annotated[
        Path | None,
        typer.Option(
            "--keep", metavar="DIR",
            help="Keep the portal in DIR, write a config file for it there, and keep the emulator running "
            "until Ctrl-C, to try the other commands on the demo.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run the whole job against the built-in controller emulator, with a sample portal."""
    from ztctl.cli.demo import run_demo

    if keep is not None and options.is_json:
        fail(options, "demo", UsageError("--keep cannot be used with --output json", hint="drop one of them"))
    try:
        code = run_demo(options, keep)
    except ZtctlError as exc:
        fail(options, "demo", exc)
    raise typer.Exit(code)


register_operator_commands(app)


def _terminate(signum: int, frame: object) -> None:
    # Treat SIGTERM (cron's timeout, systemd's stop) like Ctrl-C, so the run
    # record is closed and the exit status says "interrupted".
    raise KeyboardInterrupt


def main() -> None:
    global _stdout_closed
    if sys.stdout is None:
        _stdout_closed = True
        sys.stdout = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - stays open until exit
    signal.signal(signal.SIGTERM, _terminate)
    app()
