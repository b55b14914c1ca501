"""Commands that answer an operator's questions: history, explain, check, adopt and ack."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from ztctl.cli import jsonout
from ztctl.cli.options import BASIC_OPTIONS, CliOptions, command
from ztctl.cli.render import printable, stdout_console
from ztctl.cli.runner import fail, load_settings_or_fail
from ztctl.config import parse_duration
from ztctl.engine import Mode
from ztctl.engine.ack import acknowledge
from ztctl.engine.adopt import AdoptResult, adopt
from ztctl.engine.check import run_checks
from ztctl.engine.explain import Explanation, explain
from ztctl.engine.history import HistoryFilter, query_history
from ztctl.engine.job import open_job
from ztctl.errors import ExitCode, UsageError, ZtctlError

NetworkArgument = Annotated[str, typer.Argument(help="Network ID, 16 hex digits.")]
NodeArgument = Annotated[str, typer.Argument(help="Node ID of the member, 10 hex digits.")]


def parse_moment(text: str, option: str, now: datetime) -> datetime:
    """Read ``2h`` (that long ago), ``2026-12-01`` (midnight UTC) or an ISO 8601 time with a zone."""
    text = text.strip()
    try:
        if re.fullmatch(r"(\d+[smhd])+", text):
            return now - parse_duration(text)
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
                return moment.replace(tzinfo=UTC)
            raise UsageError(f"invalid {option} {text!r}: a time needs a zone, such as Z or +02:00")
        return moment.astimezone(UTC)
    except (ValueError, OverflowError):
        raise UsageError(
            f"invalid {option} {text!r}: expected a duration such as 2h or 7d (at most 100 years), "
            "a date such as 2026-12-01, or a time such as 2026-12-01T08:00:00Z"
        ) from None


def register(app: typer.Typer) -> None:
    """Add the operator commands to ``app``."""

    @command(app, "history", options=BASIC_OPTIONS)
    def history(
        options: CliOptions,
        network: Annotated[str | None, typer.Option("--network", help="Only this network ID.")] = None,
        node: Annotated[str | None, typer.Option("--node", help="Only this node ID.")] = None,
        action: Annotated[str | None, typer.Option("--action", help="Only this action: deauthorize, expire, ...")] = None,
        outcome: Annotated[
            str | None, typer.Option("--outcome", help="Only this outcome: applied, skipped, failed, refused, found.")
        ] = None,
        since: Annotated[str | None, typer.Option("--since", help="From: 2h, 7d, 2026-12-01 or an ISO time.")] = None,
        until: Annotated[str | None, typer.Option("--until", help="Before: same forms as --since.")] = None,
        limit: Annotated[
            int, typer.Option("--limit", min=1, max=100_000, help="At most this many entries, newest first.")
        ] = 200,
    ) -> None:
        """Show the audit log: every applied, skipped, refused and failed action, newest first."""
        loaded = load_settings_or_fail(options, "history")
        try:
            now = datetime.now(UTC)
            wanted = HistoryFilter(
                network_id=network.lower() if network else None,
                node_id=node.lower() if node else None,
                action=action,
                outcome=outcome,
                since=parse_moment(since, "--since", now) if since else None,
                until=parse_moment(until, "--until", now) if until else None,
                limit=limit,
            )
            job = open_job(loaded, command="history", mode=Mode.DRY_RUN, needs_controller=False)
            try:
                with job.sessions() as session:
                    entries = query_history(session, wanted)
            finally:
                job.close()
        except ZtctlError as exc:
            fail(options, "history", exc, mode=Mode.DRY_RUN)
        if options.is_json:
            document = jsonout.base_document("history", "dry-run", 0)
            document["entries"] = [entry.to_dict() for entry in entries]
            jsonout.emit(document)
            return
        noun = "entry" if len(entries) == 1 else "entries"
        table = Table(title=f"{len(entries)} audit log {noun}, newest first", title_justify="left")
        for column in ("When (UTC)", "Run", "Who", "Network", "Node", "Action", "Outcome", "Reason / detail"):
            table.add_column(column, no_wrap=column != "Reason / detail", overflow="fold")
        for entry in entries:
            table.add_row(
                f"{entry.recorded_at:%Y-%m-%d %H:%M:%S}",
                f"#{entry.run_id} {entry.command}",
                printable(f"{entry.user or '?'}@{entry.host}"),
                printable(entry.network_id),
                printable(entry.node_id or "-"),
                entry.action,
                entry.outcome,
                printable(entry.detail or entry.reason),
            )
        stdout_console().print(table)

    @command(app, "explain", options=BASIC_OPTIONS)
    def explain_command(options: CliOptions, network: NetworkArgument, node: NodeArgument) -> None:
        """Explain why a member is or is not authorized, who changed it last, and what the next run will do."""
        loaded = load_settings_or_fail(options, "explain")
        try:
            result = explain(loaded, network, node)
        except ZtctlError as exc:
            fail(options, "explain", exc, mode=Mode.DRY_RUN)
        # The explanation is printed even when the controller could not be
        # read; the exit status then says so.
        code = int(ExitCode.CONTROLLER) if result.live_error else int(ExitCode.OK)
        if options.is_json:
            document = jsonout.base_document("explain", "dry-run", code)
            document.update(result.to_dict())
            if result.live_error:
                document["error"] = {"type": "ControllerError", "message": result.live_error, "hint": None}
            jsonout.emit(document)
        else:
            _render_explanation(result)
        raise typer.Exit(code)

    @command(app, "check", options=BASIC_OPTIONS)
    def check(options: CliOptions) -> None:
        """Check the config, the database, the controller, the token, the managed networks and the lock."""
        report = run_checks(options.config)
        code = report.exit_code
        if options.is_json:
            document = jsonout.base_document("check", "dry-run", code)
            failed = next((row for row in report.rows if row.status == "failed"), None)
            if failed is not None:
                document["error"] = {"type": "CheckFailed", "message": f"{failed.name}: {failed.detail}", "hint": None}
            document["checks"] = [row.to_dict() for row in report.rows]
            jsonout.emit(document)
        else:
            table = Table(title="ztctl check", title_justify="left")
            for column in ("Check", "Result", "Detail"):
                table.add_column(column, no_wrap=column != "Detail", overflow="fold")
            styles = {"ok": "green", "failed": "red", "skipped": "dim"}
            for row in report.rows:
                table.add_row(row.name, Text(row.status, style=styles[row.status]), row.detail)
            stdout_console().print(table)
        raise typer.Exit(code)

    @command(app, "adopt", options=("config", "dry_run", "output", "verbose", "quiet", "wait", "log_format"))
    def adopt_command(options: CliOptions, network: NetworkArgument) -> None:
        """Bring an existing network under management: write its members into the portal as they are."""
        loaded = load_settings_or_fail(options, "adopt")
        try:
            job = open_job(loaded, command="adopt", mode=options.mode, wait=options.wait)
            try:
                result = adopt(job, network)
                job.finish(None, 0)
            except ZtctlError as exc:
                job.finish(None, exc.exit_code, error=str(exc))
                raise
            finally:
                job.close()
        except ZtctlError as exc:
            fail(options, "adopt", exc)
        # Like every dry run, one that would change something exits 1.
        code = int(ExitCode.CHANGES_PENDING if not result.applied and result.memberships else ExitCode.OK)
        if options.is_json:
            document = jsonout.base_document("adopt", str(options.mode), code)
            document.update(result.to_dict())
            jsonout.emit(document)
        else:
            _render_adoption(result)
        raise typer.Exit(code)

    @command(app, "ack", options=("config", "dry_run", "output", "verbose", "quiet", "log_format"))
    def ack(
        options: CliOptions,
        network: NetworkArgument,
        node: NodeArgument,
        reason: Annotated[str, typer.Option("--reason", help="Why the difference is accepted, or withdrawn.")],
        until: Annotated[
            str | None, typer.Option("--until", help="Accepted until: 7d, 2026-12-31 or an ISO time; at most 366 days.")
        ] = None,
        withdraw: Annotated[
            bool, typer.Option("--withdraw", help="End the member's acknowledgement now instead.")
        ] = False,
    ) -> None:
        """Accept a known difference for a member until a time: no run repairs it, and it is not counted as pending."""
        loaded = load_settings_or_fail(options, "ack")
        try:
            if withdraw == (until is not None):
                raise UsageError("give either --until or --withdraw", hint="--until 7d accepts for a week")
            moment = None if withdraw else _future_moment(until or "")
            view = acknowledge(
                loaded, network, node, until=moment, reason=reason, mode=options.mode, until_text=until
            )
        except ZtctlError as exc:
            fail(options, "ack", exc)
        code = int(ExitCode.OK if options.mode is Mode.APPLY else ExitCode.CHANGES_PENDING)
        if options.is_json:
            document = jsonout.base_document("ack", str(options.mode), code)
            document["acknowledgement"] = view.to_dict()
            jsonout.emit(document)
        else:
            verb = "acknowledged" if options.mode is Mode.APPLY else "dry run, not recorded:"
            until_text = "withdrawn" if withdraw else f"until {view.until:%Y-%m-%d %H:%M}Z"
            stdout_console().print(f"{verb} {view.network_id}/{view.node_id} {until_text}: {printable(view.reason)}")
        raise typer.Exit(code)


def _future_moment(text: str) -> datetime:
    """Read ``--until``: a duration counts forward from now, unlike ``--since``."""
    now = datetime.now(UTC)
    if re.fullmatch(r"(\d+[smhd])+", text.strip()):
        try:
            return now + parse_duration(text.strip())
        except (ValueError, OverflowError):
            raise UsageError(f"invalid --until {text!r}: expected a duration such as 7d or 12h") from None
    return parse_moment(text, "--until", now)


def _render_explanation(result: Explanation) -> None:
    console = stdout_console()
    # The verdict stays on one line, so that scripts and people can take the first line alone.
    console.print(Text(printable(result.verdict), style="bold"), soft_wrap=True)
    details = result.to_dict()
    membership = details["membership"]
    if membership:
        console.print(
            printable(
                f"portal: {membership['state']} (access: {membership['access']}), owner {membership['owner'] or '-'}, "
                f"name {membership['name'] or '-'}"
            )
        )
        for activation in membership["activations"]:
            ended = f", ended {activation['ended_at']:%Y-%m-%d %H:%M}Z" if activation["ended_at"] else ""
            now_text = " (current)" if activation["current"] else ""
            console.print(
                f"  activation {activation['start']:%Y-%m-%d %H:%M}Z to {activation['expires']:%Y-%m-%d %H:%M}Z"
                f"{ended}{now_text}"
            )
    for label, member in (("cache", result.cached), ("controller", result.live)):
        if member is None:
            if label == "controller" and result.live_error:
                console.print(Text(printable(f"controller: not read: {result.live_error}"), style="red"))
            else:
                console.print(f"{label}: not present")
            continue
        state = "authorized" if member.authorized else "deauthorized"
        bridge = ", active bridge" if member.active_bridge else ""
        seen = f", last seen {member.last_seen_at:%Y-%m-%d %H:%M}Z" if member.last_seen_at else ""
        address = f", physical address {member.physical_address}" if member.physical_address else ""
        console.print(printable(f"{label}: {state}{bridge}, revision {member.revision}{seen}{address}"))
    if result.acknowledgement:
        ack_view = result.acknowledgement
        console.print(
            printable(f"acknowledged until {ack_view.until:%Y-%m-%d %H:%M}Z by {ack_view.created_by}: {ack_view.reason}")
        )
    for entry in result.recent:
        console.print(
            printable(
                f"  {entry.recorded_at:%Y-%m-%d %H:%M:%S}Z run #{entry.run_id} ({entry.command}, "
                f"{entry.user or '?'}@{entry.host}): {entry.action} {entry.outcome}: {entry.detail or entry.reason}"
            )
        )
    if result.live_error:
        console.print("next run: unknown until the controller can be read")
    elif result.network_missing and result.managed:
        console.print("next run: an error for this network, which is managed but not on the controller; nothing changes")
    elif not result.managed:
        console.print("next run: nothing, the network is not managed")
    elif not result.next_run:
        console.print("next run: nothing to do")
    for finding in result.next_run:
        console.print(printable(f"next run: {finding.action or 'no action'} ({finding.kind}): {finding.reason}"))


def _render_adoption(result: AdoptResult) -> None:
    console = stdout_console()
    for node_id, state, name in result.memberships:
        console.print(f"  add membership {result.network_id}/{node_id} ({state}{', ' + name if name else ''})")
    verb = "adopted" if result.applied else "dry run, nothing written:"
    new = "a new network, " if result.adds_network else ""
    console.print(
        f"{verb} {result.network_id} ({result.network_name or '-'}): {new}{len(result.memberships)} membership(s) "
        f"to add, {result.kept} already in the portal"
    )
