"""Options every command accepts, before or after the command name, and logging set-up.

``ztctl --dry-run expire`` and ``ztctl expire --dry-run`` mean the same: the
group callback stores what it was given in the context, and ``command``
adds the same options to each command and merges the two.
"""

from __future__ import annotations

import functools
import inspect
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, fields
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from pythonjsonlogger.json import JsonFormatter
from typer._click import exceptions as click_exceptions

from ztctl.engine.model import Mode
from ztctl.errors import UsageError
from ztctl.redact import RedactingFilter


class OutputFormat(StrEnum):
    TABLE = "table"
    JSON = "json"


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Config file. Default: $ZTCTL_CONFIG, then ./ztctl.yaml, ~/.config/ztctl/ztctl.yaml, /etc/ztctl/ztctl.yaml.",
        show_default=False,
    ),
]
DryRunOption = Annotated[
    bool, typer.Option("--dry-run", help="Build and show the plan; write nothing to the controller or the portal.")
]
AuditOption = Annotated[
    bool,
    typer.Option(
        "--audit",
        help="Read-only on the controller and the portal's memberships; record the findings in the audit log.",
    ),
]
OutputOption = Annotated[
    OutputFormat | None,
    typer.Option("--output", "-o", help="table: Rich tables for people; json: one JSON document on stdout."),
]
VerboseOption = Annotated[
    int, typer.Option("--verbose", "-v", count=True, help="More log output on stderr: -v for actions, -vv for requests.")
]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="Log errors only.")]
LogFormatOption = Annotated[
    LogFormat | None,
    typer.Option("--log-format", help="text: one line per message; json: one JSON object per line, for log collectors."),
]
MetricsFileOption = Annotated[
    Path | None,
    typer.Option(
        "--metrics-file",
        metavar="PATH",
        help="Write run metrics in the Prometheus text format to PATH, atomically (node_exporter's textfile collector).",
        show_default=False,
    ),
]
ReportOption = Annotated[
    Path | None,
    typer.Option(
        "--report",
        metavar="FILE",
        help="Write the findings as a JSON report to FILE (for a CI artifact), whatever --output says.",
        show_default=False,
    ),
]
WaitOption = Annotated[
    float | None,
    typer.Option(
        "--wait",
        metavar="SECONDS",
        min=0,
        max=86400,
        help="If another run holds the lock, wait up to SECONDS for it instead of exiting with status 6.",
        show_default=False,
    ),
]
ForceOption = Annotated[
    bool,
    typer.Option(
        "--force",
        help="Apply deauthorizations and deletions that a safety rail would refuse (mass revocation, empty portal).",
    ),
]


@dataclass
class CliOptions:
    config: Path | None = None
    dry_run: bool = False
    audit: bool = False
    output: OutputFormat = OutputFormat.TABLE
    verbose: int = 0
    quiet: bool = False
    wait: float | None = None
    force: bool = False
    log_format: LogFormat = LogFormat.TEXT
    metrics_file: Path | None = None
    report: Path | None = None

    @property
    def mode(self) -> Mode:
        if self.dry_run and self.audit:
            raise UsageError("--dry-run and --audit cannot be used together", hint="pick one of them")
        if self.audit:
            return Mode.AUDIT
        if self.dry_run:
            return Mode.DRY_RUN
        return Mode.APPLY

    @property
    def is_json(self) -> bool:
        return self.output is OutputFormat.JSON


_OPTION_TYPES: dict[str, Any] = {
    "config": ConfigOption,
    "dry_run": DryRunOption,
    "audit": AuditOption,
    "output": OutputOption,
    "verbose": VerboseOption,
    "quiet": QuietOption,
    "wait": WaitOption,
    "force": ForceOption,
    "log_format": LogFormatOption,
    "metrics_file": MetricsFileOption,
    "report": ReportOption,
}


def _option_parameters(names: tuple[str, ...]) -> list[inspect.Parameter]:
    defaults = CliOptions()
    parameters = []
    for name in names:
        default = None if name in ("output", "log_format") else getattr(defaults, name)
        parameters.append(
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=_OPTION_TYPES[name])
        )
    return parameters


ALL_OPTIONS = tuple(field.name for field in fields(CliOptions))
BASIC_OPTIONS = ("config", "output", "verbose", "quiet", "log_format")
"""The options of commands that neither act nor report: only where to read and how to print."""


def command(
    app: typer.Typer, name: str | None = None, *, options: tuple[str, ...] = ALL_OPTIONS
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register ``func(options, ...)`` as a command that also takes the shared ``options``.

    The command's own parameters keep their place; the shared ones follow,
    so every command documents them in its ``--help``.
    """

    def decorate(func: Callable[..., None]) -> Callable[..., None]:
        own = [
            parameter
            for parameter in inspect.signature(func, eval_str=True).parameters.values()
            if parameter.name != "options"
        ]
        context = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
        parameters = [context, *own, *_option_parameters(options)]

        @functools.wraps(func)
        def wrapper(ctx: typer.Context, **values: Any) -> None:
            given = {name: values.pop(name) for name in options}
            func(merge_options(ctx, accepted=options, **given), **values)

        wrapper.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {parameter.name: parameter.annotation for parameter in parameters}
        del wrapper.__wrapped__  # type: ignore[attr-defined]
        app.command(name)(wrapper)
        return func

    return decorate


def merge_options(ctx: typer.Context, *, accepted: tuple[str, ...] = ALL_OPTIONS, **given: Any) -> CliOptions:
    """Combine the options given before the command name with those given after it.

    An option given before the name of a command that does not take it is an
    error, as it is after the name: ``ztctl --report r.json check`` must not
    quietly write no report.
    """
    base = ctx.obj if isinstance(ctx.obj, CliOptions) else CliOptions()
    defaults = CliOptions()
    for name in ALL_OPTIONS:
        if name not in accepted and getattr(base, name) != getattr(defaults, name):
            flag = "--" + name.replace("_", "-")
            raise click_exceptions.UsageError(f"`{ctx.command_path}` does not take {flag}", ctx)
    options = CliOptions(
        config=given.get("config") or base.config,
        dry_run=given.get("dry_run", False) or base.dry_run,
        audit=given.get("audit", False) or base.audit,
        output=given.get("output") or base.output,
        verbose=given.get("verbose", 0) + base.verbose,
        quiet=given.get("quiet", False) or base.quiet,
        wait=given.get("wait") if given.get("wait") is not None else base.wait,
        force=given.get("force", False) or base.force,
        log_format=given.get("log_format") or base.log_format,
        metrics_file=given.get("metrics_file") or base.metrics_file,
        report=given.get("report") or base.report,
    )
    configure_logging(options)
    return options


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A handler that writes to whatever ``sys.stderr`` is at the time of each record.

    A progress bar on a terminal replaces ``sys.stderr`` while it is drawn, so
    that log lines print above the bar instead of being glued to it.
    """

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass  # always sys.stderr, read at each record


def configure_logging(options: CliOptions) -> None:
    """Send log lines to stderr, at WARNING unless -v or -q says otherwise.

    The default level keeps a cron run that has nothing to do silent.
    """
    if options.quiet:
        level = logging.ERROR
    elif options.verbose >= 2:
        level = logging.DEBUG
    elif options.verbose == 1:
        level = logging.INFO
    else:
        level = logging.WARNING
    handler = _StderrHandler()
    if options.log_format is LogFormat.JSON:
        handler.setFormatter(
            JsonFormatter(
                "{asctime}{levelname}{name}{message}",
                style="{",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                datefmt="%Y-%m-%dT%H:%M:%S%z",
            )
        )
    else:
        handler.setFormatter(logging.Formatter("ztctl %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, "_ztctl", False):
            root.removeHandler(existing)
    handler._ztctl = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    # httpx logs every request at INFO and Alembic its set-up on every schema
    # check; the controller client logs its own request lines, so keep these
    # libraries' lines for -vvv.
    library_level = logging.DEBUG if options.verbose >= 3 else logging.WARNING
    for name in ("httpx", "httpcore", "alembic"):
        logging.getLogger(name).setLevel(library_level)
