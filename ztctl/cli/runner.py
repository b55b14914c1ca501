"""Run one engine command for the CLI: settings, job, result, rendering, exit status.

This is the only place where engine errors become messages and exit
statuses; commands stay a few lines long.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import NoReturn

import typer

from ztctl.cli import jsonout
from ztctl.cli.options import CliOptions
from ztctl.cli.render import render_outcomes, render_plan, stderr_console, stdout_console
from ztctl.config import LoadedSettings, load_settings
from ztctl.engine import Job, Mode, RunResult, exit_code_for, open_job
from ztctl.engine.stages import Confirm
from ztctl.errors import ExitCode, UsageError, ZtctlError
from ztctl.redact import redact

log = logging.getLogger(__name__)

EngineCommand = Callable[[Job], RunResult]


def run_engine_command(
    options: CliOptions,
    command: str,
    action: EngineCommand,
    *,
    mode: Mode | None = None,
    confirm: Confirm | None = None,
    plan_shown: Callable[[], bool] = lambda: False,
) -> NoReturn:
    """Open a job, run ``action`` on it, render the result and exit with its status."""
    job: Job | None = None
    try:
        run_mode = mode or options.mode
        loaded = load_settings(options.config)
        job = open_job(loaded, command=command, mode=run_mode)
        result = action(job)
        result.run_id = job.recorder.run_id
        code = exit_code_for(result)
        job.finish(result, code)
    except ZtctlError as exc:
        if job is not None:
            job.finish(None, exc.exit_code, error=redact(str(exc)))
        fail(options, command, exc)
    except KeyboardInterrupt:
        if job is not None:
            job.finish(None, ExitCode.INTERRUPTED, error="interrupted")
        raise
    except BaseException as exc:
        if job is not None:
            job.finish(None, ExitCode.PARTIAL_FAILURE, error=redact(f"{type(exc).__name__}: {exc}"))
        raise
    finally:
        if job is not None:
            job.close()
    render_result(options, result, code, plan_shown=plan_shown())
    raise typer.Exit(code)


def render_result(options: CliOptions, result: RunResult, code: int, *, plan_shown: bool = False) -> None:
    if options.is_json:
        jsonout.emit(jsonout.run_document(result, code))
        return
    console = stdout_console()
    show_plan = result.mode.is_read_only or result.command == "diff"
    if show_plan and not plan_shown:
        render_plan(console, result, dry_run=options.dry_run)
    if not result.mode.is_read_only:
        render_outcomes(console, result, verbose=options.verbose > 0)


def fail(options: CliOptions, command: str, error: ZtctlError) -> NoReturn:
    """Report ``error`` on stderr (and as a JSON document with ``--output json``) and exit with its code."""
    report_error(options, command, error)
    raise typer.Exit(error.exit_code)


def report_error(options: CliOptions, command: str, error: BaseException) -> None:
    code = error.exit_code if isinstance(error, ZtctlError) else ExitCode.PARTIAL_FAILURE
    console = stderr_console()
    console.print(f"[red]error:[/red] {_escape(redact(str(error)))}")
    hint = getattr(error, "hint", None)
    if hint:
        console.print(f"[dim]hint:[/dim] {_escape(redact(hint))}")
    if options.is_json:
        try:
            mode = str(options.mode)
        except UsageError:
            mode = "unknown"
        jsonout.emit(jsonout.base_document(command, mode, int(code), error))


def stdin_is_terminal() -> bool:
    return sys.stdin.isatty()


def require_confirmation_possible(yes: bool) -> None:
    """Reject ``--apply`` without ``--yes`` when no one is at a terminal to answer."""
    if not yes and not stdin_is_terminal():
        raise UsageError(
            "--apply asks for confirmation, but stdin is not a terminal",
            hint="add --yes to apply without asking, or run `ztctl repair`",
        )


def load_settings_or_fail(options: CliOptions, command: str) -> LoadedSettings:
    try:
        return load_settings(options.config)
    except ZtctlError as exc:
        fail(options, command, exc)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
