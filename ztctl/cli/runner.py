"""Run one engine command for the CLI: settings, job, result, rendering, exit status.

This is the only place where engine errors become messages and exit
statuses; commands stay a few lines long.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from pathlib import Path
from typing import NoReturn

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from sqlalchemy.exc import SQLAlchemyError

from ztctl.cli import jsonout
from ztctl.cli.options import CliOptions, LogFormat
from ztctl.cli.render import (
    render_outcomes,
    render_plan,
    stderr_console,
    stdout_console,
    summary_line,
)
from ztctl.cli.reports import report_document, write_metrics, write_report
from ztctl.config import LoadedSettings, load_settings
from ztctl.engine import Job, Mode, RunResult, exit_code_for, open_job
from ztctl.engine.history import last_runs
from ztctl.errors import ExitCode, Interrupted, UsageError, ZtctlError
from ztctl.portal.db import WriteAccess, create_portal_engine, session_factory
from ztctl.redact import redact

log = logging.getLogger(__name__)

EngineCommand = Callable[[Job], RunResult]

# The progress bar being drawn, if any, so that a question can stop it first.
_live_progress: ContextVar[Progress | None] = ContextVar("live_progress", default=None)

# Commands whose output is their plan, printed even when they also apply it.
_PLAN_COMMANDS = ("diff", "unknown")


def run_engine_command(
    options: CliOptions,
    command: str,
    action: EngineCommand,
    *,
    mode: Mode | None = None,
    plan_shown: Callable[[], bool] = lambda: False,
) -> NoReturn:
    """Open a job, run ``action`` on it, render the result and exit with its status."""
    started = time.monotonic()
    job: Job | None = None
    run_mode: Mode | None = mode
    try:
        run_mode = mode or options.mode
        # A report or metrics file that cannot be written is found out before
        # the run acts, not after, when it would hide the run's own status.
        for path, flag in ((options.report, "--report"), (options.metrics_file, "--metrics-file")):
            if path is not None:
                check_writable(path, flag)
        loaded = load_settings(options.config)
        job = open_job(loaded, command=command, mode=run_mode, wait=options.wait, force=options.force)
        with progress_display(job, options):
            result = action(job)
        result.run_id = job.recorder.run_id
        if job.controller is not None:
            stats = job.controller.stats
            result.requests = {"total": stats.total, "retries": stats.retries, "by_kind": dict(stats.by_kind)}
        code = exit_code_for(result)
        job.finish(result, code)
        try:
            _write_files(options, job, result, command=command, mode=run_mode, code=code, started=started)
        except ZtctlError as exc:
            # The run itself is done and recorded; only the file is missing.
            log.error("%s", exc)
            code = code or ExitCode.PARTIAL_FAILURE
    except ZtctlError as exc:
        _abandon(options, job, exc, command=command, mode=run_mode, started=started)
        fail(options, command, exc, mode=run_mode)
    except (KeyboardInterrupt, typer.Abort):
        # typer.Abort is Ctrl-C or end of input at the confirmation question.
        interrupted = Interrupted("interrupted; the run stopped early")
        _abandon(options, job, interrupted, command=command, mode=run_mode, started=started)
        fail(options, command, interrupted, mode=run_mode)
    except BaseException as exc:
        if job is not None:
            job.finish(None, ExitCode.PARTIAL_FAILURE, error=redact(f"{type(exc).__name__}: {exc}"))
        raise
    finally:
        if job is not None:
            job.close()
    render_result(options, result, code, plan_shown=plan_shown())
    raise typer.Exit(code)


@contextmanager
def progress_display(job: Job, options: CliOptions) -> Iterator[None]:
    """Show how many networks are done on a terminal; cron, pipes and JSON output get nothing."""
    if options.is_json or options.quiet or not sys.stderr.isatty():
        yield
        return
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=stderr_console(), transient=True,
    )
    tasks: dict[str, TaskID] = {}

    def update(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = progress.add_task(f"{stage}: networks", total=total)
        progress.update(tasks[stage], completed=done, total=total)

    job.progress = update
    token = _live_progress.set(progress)
    try:
        with progress:
            yield
    finally:
        _live_progress.reset(token)
        job.progress = None


@contextmanager
def progress_paused() -> Iterator[None]:
    """Stop the progress bar while a plan is printed and a question asked, so that it cannot draw over them."""
    progress = _live_progress.get()
    if progress is None:
        yield
        return
    progress.stop()
    try:
        yield
    finally:
        progress.start()


def _abandon(
    options: CliOptions, job: Job | None, error: ZtctlError, *, command: str, mode: Mode | None, started: float
) -> None:
    """Close the run's record and still write its report and metrics, so a failed run is visible too."""
    if job is not None:
        job.finish(None, error.exit_code, error=redact(str(error)))
    if job is None and isinstance(error, UsageError):
        return  # stopped before any run began, so there is no run to report on
    try:
        _write_files(options, job, None, command=command, mode=mode, code=int(error.exit_code), started=started,
                     error=error)
    except ZtctlError as exc:
        log.error("%s", exc)


def _write_files(
    options: CliOptions,
    job: Job | None,
    result: RunResult | None,
    *,
    command: str,
    mode: Mode | None,
    code: int,
    started: float,
    error: BaseException | None = None,
) -> None:
    if options.report is not None:
        document = report_document(result, command=command, mode=str(mode), exit_code=code, error=error)
        write_report(options.report, document)
    if options.metrics_file is not None:
        last_success = _last_success(options, job, command)
        write_metrics(
            options.metrics_file, result, command=command, exit_code=code, started=started, last_success=last_success
        )


def _last_success(options: CliOptions, job: Job | None, command: str) -> datetime | None:
    """Read when the last successful run finished, for the metrics; None if the portal cannot say."""
    engine = None
    try:
        if job is not None:
            sessions = job.sessions
        else:
            # The run failed before it opened the portal (a rejected token, say),
            # but the metrics must still carry the last success forward.
            engine = create_portal_engine(load_settings(options.config).settings.database.url, access=WriteAccess.NONE)
            sessions = session_factory(engine)
        with sessions() as session:
            _, success = last_runs(session, command)
            return success.finished_at if success is not None else None
    except (SQLAlchemyError, ZtctlError) as exc:
        log.warning("could not read the last successful run for the metrics: %s", exc)
        return None
    finally:
        if engine is not None:
            engine.dispose()


def render_result(options: CliOptions, result: RunResult, code: int, *, plan_shown: bool = False) -> None:
    log.info("%s: %s", result.command, summary_line(result))
    if result.requests:
        log.info("%s: %d request(s) to the controller, %d of them retries", result.command,
                 result.requests["total"], result.requests["retries"])
    if options.is_json:
        jsonout.emit(jsonout.run_document(result, code))
        return
    console = stdout_console()
    show_plan = result.mode.is_read_only or result.command in _PLAN_COMMANDS
    applied = not result.mode.is_read_only
    if show_plan and not plan_shown:
        # After an apply, the outcome's summary line stands for the plan's.
        render_plan(console, result, dry_run=options.dry_run, summary=not applied)
    if applied:
        render_outcomes(console, result, errors=not show_plan, summary=show_plan and not plan_shown)


def fail(options: CliOptions, command: str, error: ZtctlError, *, mode: Mode | None = None) -> NoReturn:
    """Report ``error`` on stderr (and as a JSON document with ``--output json``) and exit with its code."""
    report_error(options, command, error, mode=mode)
    raise typer.Exit(error.exit_code)


def report_error(options: CliOptions, command: str, error: BaseException, *, mode: Mode | None = None) -> None:
    code = error.exit_code if isinstance(error, ZtctlError) else ExitCode.PARTIAL_FAILURE
    hint = getattr(error, "hint", None)
    if options.log_format is LogFormat.JSON:
        # A log collector must get the line that explains why the run failed too.
        log.error("%s", redact(str(error)), extra={"hint": redact(hint) if hint else None, "exit_code": int(code)})
    else:
        console = stderr_console()
        console.print(f"[red]error:[/red] {_escape(redact(str(error)))}")
        if hint:
            console.print(f"[dim]hint:[/dim] {_escape(redact(hint))}")
    if options.is_json:
        if mode is None:
            try:
                mode = options.mode
            except UsageError:
                mode = None
        jsonout.emit(jsonout.base_document(command, str(mode) if mode else "unknown", int(code), error))


def check_writable(path: Path, flag: str) -> None:
    """Raise ``UsageError`` unless a file can be written at ``path``."""
    directory = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise UsageError(f"{flag} {path}: is a directory", hint="name a file")
    if not directory.is_dir():
        raise UsageError(f"{flag} {path}: directory {directory} does not exist", hint="create it, or name another file")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise UsageError(
            f"{flag} {path}: directory {directory} is not writable by this user", hint="fix its permissions"
        )


def stdin_is_terminal() -> bool:
    return sys.stdin.isatty()


def require_confirmation_possible(yes: bool, *, json_output: bool) -> None:
    """Reject ``--apply`` without ``--yes`` when no one can answer the question, or its answer would spoil JSON."""
    if yes:
        return
    if json_output:
        raise UsageError(
            "--apply with --output json needs --yes, because a question would corrupt the JSON on stdout",
            hint="add --yes, or drop --output json to answer the question",
        )
    if not stdin_is_terminal():
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
