"""Rich tables for people: drift per network, the outcome of each action, and a summary."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence

from rich.cells import cell_len
from rich.console import Console
from rich.segment import Segments
from rich.table import Table
from rich.text import Text

from ztctl.engine.model import (
    Finding,
    Mode,
    NetworkReport,
    OutcomeStatus,
    RunResult,
    StageResult,
)

# Wide enough for the drift table when stdout is a file or a pipe, where Rich
# would otherwise assume 80 columns and wrap every row.
_PIPE_WIDTH = 160

# The minimum width of a free-text column (owner, reason, detail). In a
# narrower column a reason wraps to one short word per line.
_TEXT_MIN_WIDTH = 12

# Column sizings: what a column gives up when the table is too wide for the console.
_WHOLE = "whole"  # IDs, kinds, actions: always printed in full on one line
_WORDS = "words"  # states such as "authorized, bridge": may break between words
_TEXT = "text"  # free text: wraps, folding a word longer than the column

# C0 controls, DEL and C1 controls: ESC and CSI can clear the screen or
# recolour what follows, and CR or BS can hide what came before.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_SHORT_ESCAPES = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}

_STATUS_STYLE = {
    OutcomeStatus.APPLIED: "green",
    OutcomeStatus.SKIPPED: "yellow",
    OutcomeStatus.FAILED: "red",
    OutcomeStatus.REFUSED: "red",
}


def printable(text: str) -> str:
    """Return ``text`` with each control character written as a visible escape, ``\\x1b`` for ESC.

    Names, owners, reasons and error messages come from the controller and
    the portal. Printed raw, an escape sequence in one could clear the
    screen or recolour the lines after it. Tab and newline are escaped too
    (as ``\\t`` and ``\\n``), so that a value stays on its own table row.
    """
    return _CONTROL.sub(lambda match: _SHORT_ESCAPES.get(match[0], f"\\x{ord(match[0]):02x}"), text)


def _columns_from_environment() -> int | None:
    """$COLUMNS as a width, or None when it is unset or not a positive whole number."""
    value = os.environ.get("COLUMNS", "").strip()
    if value.isascii() and value.isdigit() and int(value) > 0:
        return int(value)
    return None


def _width(stream: object) -> int | None:
    """Follow a valid $COLUMNS, let Rich size a terminal, and give pipes and files a fixed width.

    Rich reads $COLUMNS on its own and takes COLUMNS=0 as a width of zero,
    which prints nothing. So a value that is not a positive number counts as
    unset, and this function passes an explicit width wherever Rich would read one.
    """
    columns = _columns_from_environment()
    if columns is not None:
        return columns
    if not getattr(stream, "isatty", lambda: False)():
        return _PIPE_WIDTH
    if "COLUMNS" not in os.environ:
        return None
    try:
        return os.get_terminal_size(stream.fileno()).columns or 80  # type: ignore[attr-defined]
    except (AttributeError, ValueError, OSError):
        return 80


def stdout_console() -> Console:
    # No markup: names and owners come from the portal and the controller, and
    # a "[/]" in one must print as it is, not crash the table.
    return Console(file=sys.stdout, highlight=False, markup=False, width=_width(sys.stdout))


def stderr_console() -> Console:
    return Console(file=sys.stderr, highlight=False, width=_width(sys.stderr))


def render_plan(console: Console, result: RunResult, *, dry_run: bool = False, summary: bool = True) -> None:
    """Print each network's findings as a table, then a summary line unless ``summary`` is False; errors first.

    ``dry_run`` says the operator asked for a dry run, which the summary then
    confirms; a plain ``diff`` is read-only without being one.
    """
    _render_errors(console, result)
    for stage in _plan_stages(result):
        for report in stage.networks:
            _render_network(console, stage, report)
    _render_sync(console, result)
    if summary:
        console.print(summary_line(result, dry_run=dry_run), soft_wrap=True)


def render_outcomes(
    console: Console, result: RunResult, *, errors: bool = True, always_summary: bool = False, summary: bool = False
) -> None:
    """Print what an apply run did; a run that did nothing prints nothing, so cron stays quiet.

    On a terminal each action is a table row; otherwise (cron mail, a log
    file) one summary line says what changed, and ``ztctl history`` has the
    details. ``errors=False`` leaves out the errors, for when the plan
    printed them already; ``summary`` prints the summary line even when
    nothing was done, for when the plan was printed without one.
    """
    if errors:
        _render_errors(console, result)
    rows = [(stage.stage, outcome) for stage in result.stages for outcome in stage.outcomes]
    if rows and (console.is_terminal or always_summary):
        table = Table(title="Actions", title_justify="left", expand=False)
        columns = [
            ("Stage", _WHOLE), ("Network", _WHOLE), ("Node", _WHOLE), ("Action", _WHOLE), ("Result", _WHOLE),
            ("Detail", _TEXT),
        ]
        cells = [
            [
                printable(stage_name),
                printable(outcome.finding.network_id),
                printable(outcome.finding.node_id),
                printable(str(outcome.finding.action)),
                Text(str(outcome.status), style=_STATUS_STYLE[outcome.status]),
                printable(outcome.detail or outcome.finding.reason),
            ]
            for stage_name, outcome in rows
        ]
        _print_table(console, table, columns, cells)
    if rows or always_summary or summary or result.has_errors or result.has_unapplied or result.has_refusals:
        console.print(summary_line(result), soft_wrap=True)


def summary_line(result: RunResult, *, dry_run: bool = False) -> str:
    counts = result.counts
    findings = [f for stage in _plan_stages(result) for f in stage.findings]
    # The same member can appear in two stages of a dry run (expire, then repair).
    to_change = {(f.network_id, f.node_id) for f in findings if f.pending and f.action is not None}
    unknown_authorized = {
        (f.network_id, f.node_id) for f in findings if f.kind == "unknown" and f.controller_state.startswith("authorized")
    }
    parts = [f"{counts.networks_processed} network(s) read"]
    if result.mode is Mode.APPLY and result.stages and any(s.outcomes for s in result.stages):
        parts.append(
            f"{counts.authorized} authorized, {counts.deauthorized} deauthorized, "
            f"{counts.deleted_memberships} deleted, {counts.expired_activations} activation(s) expired"
        )
        if counts.skipped:
            parts.append(f"{counts.skipped} skipped")
    else:
        parts.append(f"{len(to_change)} member(s) to change")
    unknown = f"{counts.unknown_members} unknown member(s)"
    if unknown_authorized:
        unknown += f", {len(unknown_authorized)} of them authorized when read"
    parts.append(unknown)
    if counts.errors:
        parts.append(f"{counts.errors} error(s)")
    if counts.refused:
        parts.append(f"{counts.refused} refused")
    if any(report.cache_changes for stage in result.stages for report in stage.networks):
        cached = sum(report.cache_changes for stage in result.stages for report in stage.networks)
        parts.append(f"{cached} cache row(s) {'to write' if result.mode.is_read_only else 'written'}")
    prefix = ""
    if dry_run:
        prefix = "dry run, nothing changed: "
    elif result.mode is Mode.AUDIT:
        prefix = "audit, findings recorded in the audit log: "
    return prefix + "; ".join(parts)


def _plan_stages(result: RunResult) -> list[StageResult]:
    return [stage for stage in result.stages if stage.stage != "sync"]


def _render_sync(console: Console, result: RunResult) -> None:
    """List the networks a ``sync`` command read; other commands show them in their plan tables."""
    if result.command != "sync":
        return
    for stage in result.stages:
        for report in stage.networks:
            if report.error:
                continue
            kind = "private" if report.private else "public"
            console.print(
                Text(
                    f"sync: network {printable(report.network_id)} ({printable(report.name) or '-'}), {kind}: "
                    f"{report.member_count} member(s), {report.cache_changes} cache row(s) changed"
                )
            )


def _render_previous_failures(console: Console, result: RunResult) -> None:
    failures = result.previous_failures
    if not failures:
        return
    first = failures[0]
    console.print(
        Text(
            f"the last run (#{first['run_id']}, {printable(str(first['command']))}) left {len(failures)} failure(s):",
            style="yellow",
        )
    )
    for failure in failures:
        where = printable(" ".join(str(part) for part in (failure["network"], failure["node"], failure["action"]) if part))
        detail = printable(str(failure["detail"]))
        console.print(Text(f"  {printable(str(failure['outcome']))}: {where or 'the run'}: {detail}", style="yellow"))


def _render_errors(console: Console, result: RunResult) -> None:
    _render_previous_failures(console, result)
    # A refusal applies to every stage of the run on its network, so print it once.
    refused: set[str] = set()
    for stage in result.stages:
        for message in stage.errors:
            console.print(Text(f"error: {printable(message)}", style="red"))
        for report in stage.networks:
            network = printable(report.network_id)
            if report.error:
                console.print(Text(f"error: network {network}: {printable(report.error)}", style="red"))
            if report.refusal and report.network_id not in refused:
                refused.add(report.network_id)
                console.print(
                    Text(
                        f"refused: network {network}: {printable(report.refusal)}; nothing was changed on it "
                        "(--force applies it anyway)",
                        style="red",
                    )
                )


def _render_network(console: Console, stage: StageResult, report: NetworkReport) -> None:
    if report.error:
        return
    title = f"{stage.stage}: network {printable(report.network_id)}"
    if report.name:
        title += f" ({printable(report.name)})"
    if report.private is False:
        title += ", public"
    if not report.findings:
        members = f", {report.member_count} member(s)" if report.member_count is not None else ""
        console.print(Text(f"{title}: in line with the portal{members}", style="green"))
        return
    table = Table(title=title, title_justify="left", expand=False)
    # Only Central reports when it last heard from a member; the column is
    # there to read, and no action depends on it.
    seen = any(finding.last_seen_at or finding.physical_address for finding in report.findings)
    columns = [
        ("Kind", _WHOLE), ("Node", _WHOLE), ("Owner / name", _TEXT), ("Portal", _WORDS), ("Controller", _WORDS),
        ("Action", _WHOLE), ("Reason", _TEXT),
    ]
    if seen:
        columns.insert(5, ("Last seen", _TEXT))
    rows = []
    for finding in report.findings:
        cells: list[str | Text] = [
            printable(str(finding.kind)),
            printable(finding.node_id),
            _who(finding),
            printable(finding.portal_state),
            printable(finding.controller_state),
            Text(str(finding.action) if finding.action else "none", style="bold" if finding.action else "dim"),
            printable(finding.reason),
        ]
        if seen:
            cells.insert(5, _last_seen(finding))
        rows.append(cells)
    _print_table(console, table, columns, rows)


def _print_table(
    console: Console, table: Table, columns: Sequence[tuple[str, str]], rows: Sequence[Sequence[str | Text]]
) -> None:
    """Add the columns and rows to ``table`` and print it, never cutting an ID to fit the console.

    A table wider than the console makes Rich shrink its columns, down to
    an ellipsis in an ID and to nothing in a column of free text. So each
    column gets a minimum width: IDs, kinds and actions their full width,
    states their longest word, free text a readable width to wrap in.

    NOTE: the drift table's ID, kind, state and action columns alone take
    about 85 columns when a kind such as ``authorized-not-active`` is in
    it, so on an 80-column terminal that table is wider than the screen.
    """
    minimum = len(columns) + 1  # the vertical rules
    _, right, _, left = table.padding
    for index, (header, sizing) in enumerate(columns):
        values = [header, *(_plain(row[index]) for row in rows)]
        widest = max(cell_len(value) for value in values)
        if sizing == _WHOLE:
            table.add_column(header, no_wrap=True, min_width=widest)
        elif sizing == _WORDS:
            longest_word = max(cell_len(word) for value in values for word in value.split() or [""])
            table.add_column(header, overflow="fold", min_width=longest_word)
        else:
            table.add_column(header, overflow="fold", min_width=min(widest, _TEXT_MIN_WIDTH))
        minimum += (table.columns[-1].min_width or 0) + left + right
    for row in rows:
        table.add_row(*row)
    if minimum <= console.width:
        console.print(table)
        return
    # On a console narrower than the sum of the minimum widths, Rich squeezes
    # some columns to nothing. So render the table at that sum and print it
    # uncropped. The terminal then wraps the long lines, which hides no ID.
    options = console.options.update(width=minimum)
    console.print(Segments(console.render(table, options)), crop=False)


def _plain(value: str | Text) -> str:
    return value.plain if isinstance(value, Text) else value


def _last_seen(finding: Finding) -> str:
    parts = []
    if finding.last_seen_at:
        parts.append(f"{finding.last_seen_at:%Y-%m-%d %H:%M}Z")
    if finding.physical_address:
        parts.append(f"from {printable(finding.physical_address)}")
    return " ".join(parts) or "-"


def _who(finding: Finding) -> str:
    parts = [printable(part) for part in (finding.owner, finding.name) if part]
    return " / ".join(parts) if parts else "-"
