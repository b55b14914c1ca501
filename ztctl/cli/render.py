"""Rich tables for people: drift per network, the outcome of each action, and a summary."""

from __future__ import annotations

import os
import sys

from rich.console import Console
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

_STATUS_STYLE = {
    OutcomeStatus.APPLIED: "green",
    OutcomeStatus.SKIPPED: "yellow",
    OutcomeStatus.FAILED: "red",
    OutcomeStatus.REFUSED: "red",
}


def _width(stream: object) -> int | None:
    """Let Rich size a terminal (or follow $COLUMNS); give pipes and files a fixed width."""
    if "COLUMNS" in os.environ or getattr(stream, "isatty", lambda: False)():
        return None
    return _PIPE_WIDTH


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
        for column in ("Stage", "Network", "Node", "Action", "Result", "Detail"):
            table.add_column(column, no_wrap=column != "Detail")
        for stage_name, outcome in rows:
            finding = outcome.finding
            table.add_row(
                stage_name,
                finding.network_id,
                finding.node_id,
                str(finding.action),
                Text(str(outcome.status), style=_STATUS_STYLE[outcome.status]),
                outcome.detail or finding.reason,
            )
        console.print(table)
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
        unknown += f", {len(unknown_authorized)} of them authorized"
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
                f"sync: network {report.network_id} ({report.name or '-'}), {kind}: "
                f"{report.member_count} member(s), {report.cache_changes} cache row(s) changed"
            )


def _render_previous_failures(console: Console, result: RunResult) -> None:
    failures = result.previous_failures
    if not failures:
        return
    first = failures[0]
    console.print(
        Text(f"the last run (#{first['run_id']}, {first['command']}) left {len(failures)} failure(s):", style="yellow")
    )
    for failure in failures:
        where = " ".join(part for part in (failure["network"], failure["node"], failure["action"]) if part)
        console.print(Text(f"  {failure['outcome']}: {where or 'the run'}: {failure['detail']}", style="yellow"))


def _render_errors(console: Console, result: RunResult) -> None:
    _render_previous_failures(console, result)
    # A refusal holds for every stage of the run on its network; say it once.
    refused: set[str] = set()
    for stage in result.stages:
        for message in stage.errors:
            console.print(Text(f"error: {message}", style="red"))
        for report in stage.networks:
            if report.error:
                console.print(Text(f"error: network {report.network_id}: {report.error}", style="red"))
            if report.refusal and report.network_id not in refused:
                refused.add(report.network_id)
                console.print(
                    Text(
                        f"refused: network {report.network_id}: {report.refusal}; nothing was changed on it "
                        "(--force applies it anyway)",
                        style="red",
                    )
                )


def _render_network(console: Console, stage: StageResult, report: NetworkReport) -> None:
    if report.error:
        return
    title = f"{stage.stage}: network {report.network_id}"
    if report.name:
        title += f" ({report.name})"
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
    columns = ["Kind", "Node", "Owner / name", "Portal", "Controller", "Action", "Reason"]
    if seen:
        columns.insert(5, "Last seen")
    for column in columns:
        # IDs and states stay on one line; the free text wraps.
        wraps = column in ("Owner / name", "Reason", "Last seen")
        table.add_column(column, no_wrap=not wraps, overflow="fold" if wraps else "ellipsis")
    for finding in report.findings:
        cells = [
            finding.kind,
            finding.node_id,
            _who(finding),
            finding.portal_state,
            finding.controller_state,
            Text(str(finding.action) if finding.action else "none", style="bold" if finding.action else "dim"),
            finding.reason,
        ]
        if seen:
            cells.insert(5, _last_seen(finding))
        table.add_row(*cells)
    console.print(table)


def _last_seen(finding: Finding) -> str:
    parts = []
    if finding.last_seen_at:
        parts.append(f"{finding.last_seen_at:%Y-%m-%d %H:%M}Z")
    if finding.physical_address:
        parts.append(f"from {finding.physical_address}")
    return " ".join(parts) or "-"


def _who(finding: Finding) -> str:
    parts = [part for part in (finding.owner, finding.name) if part]
    return " / ".join(parts) if parts else "-"
