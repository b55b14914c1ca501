"""Options every command accepts, before or after the command name, and logging set-up.

``ztctl --dry-run expire`` and ``ztctl expire --dry-run`` mean the same:
the group callback stores what it was given in the context, and each command
merges its own copies of the options over that.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from ztctl.engine.model import Mode
from ztctl.errors import UsageError
from ztctl.redact import RedactingFilter


class OutputFormat(StrEnum):
    TABLE = "table"
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


@dataclass
class CliOptions:
    config: Path | None = None
    dry_run: bool = False
    audit: bool = False
    output: OutputFormat = OutputFormat.TABLE
    verbose: int = 0
    quiet: bool = False

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


def merge_options(
    ctx: typer.Context,
    *,
    config: Path | None,
    dry_run: bool,
    audit: bool,
    output: OutputFormat | None,
    verbose: int,
    quiet: bool,
) -> CliOptions:
    """Combine the options given before the command name with those given after it."""
    base = ctx.obj if isinstance(ctx.obj, CliOptions) else CliOptions()
    options = CliOptions(
        config=config or base.config,
        dry_run=dry_run or base.dry_run,
        audit=audit or base.audit,
        output=output or base.output,
        verbose=verbose + base.verbose,
        quiet=quiet or base.quiet,
    )
    configure_logging(options)
    return options


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
    handler = logging.StreamHandler(sys.stderr)
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
