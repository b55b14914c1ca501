"""Read back what earlier runs did, from the ``runs`` table and the audit log."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ztctl.controller.base import is_network_id, is_node_id
from ztctl.engine.model import ActionKind, OutcomeStatus
from ztctl.errors import UsageError
from ztctl.portal.models import AuditEntry, Run

ACTIONS = (*(str(kind) for kind in ActionKind), "none")
"""Actions an audit entry records. ``none`` marks a finding with no action, or a network that failed."""
JOB_COMMANDS = ("reconcile", "expire", "sync", "diff", "repair", "unknown")
"""The commands that run the job's stages against the controller."""
OUTCOMES = (*(str(status) for status in OutcomeStatus), "found", "pending")
"""Outcomes an audit entry records. ``found`` marks a finding that a read-only run recorded instead of
applying it. ``pending`` marks a write in flight, or one that a killed run left for the next run to settle."""


@dataclass(frozen=True)
class HistoryFilter:
    network_id: str | None = None
    node_id: str | None = None
    action: str | None = None
    outcome: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 200

    def __post_init__(self) -> None:
        # A filter that can match nothing would report "nothing happened", which is worse than an error.
        if self.network_id is not None and not is_network_id(self.network_id):
            raise UsageError(f"invalid --network {self.network_id!r}: expected 16 hex digits")
        if self.node_id is not None and not is_node_id(self.node_id):
            raise UsageError(f"invalid --node {self.node_id!r}: expected 10 hex digits")
        if self.action is not None and self.action not in ACTIONS:
            raise UsageError(f"invalid --action {self.action!r}: expected one of {', '.join(ACTIONS)}")
        if self.outcome is not None and self.outcome not in OUTCOMES:
            raise UsageError(f"invalid --outcome {self.outcome!r}: expected one of {', '.join(OUTCOMES)}")
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise UsageError("--since is not before --until, so no entry can match")


@dataclass(frozen=True)
class HistoryEntry:
    """One audit-log entry with the run it belongs to."""

    id: int
    recorded_at: datetime
    run_id: int
    command: str
    mode: str
    host: str
    user: str
    stage: str
    network_id: str
    node_id: str | None
    action: str
    outcome: str
    reason: str
    detail: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    revision: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.recorded_at,
            "run_id": self.run_id,
            "command": self.command,
            "mode": self.mode,
            "host": self.host,
            "user": self.user,
            "stage": self.stage,
            "network": self.network_id,
            "node": self.node_id,
            "action": self.action,
            "outcome": self.outcome,
            "reason": self.reason,
            "detail": self.detail,
            "before": self.before,
            "after": self.after,
            "revision": self.revision,
        }


def query_history(session: Session, wanted: HistoryFilter) -> list[HistoryEntry]:
    """Return matching audit entries, newest first, at most ``wanted.limit`` of them."""
    statement = select(AuditEntry, Run).join(Run, Run.id == AuditEntry.run_id)
    if wanted.network_id:
        statement = statement.where(AuditEntry.network_id == wanted.network_id)
    if wanted.node_id:
        statement = statement.where(AuditEntry.node_id == wanted.node_id)
    if wanted.action:
        statement = statement.where(AuditEntry.action == wanted.action)
    if wanted.outcome:
        statement = statement.where(AuditEntry.outcome == wanted.outcome)
    if wanted.since:
        statement = statement.where(AuditEntry.recorded_at >= wanted.since)
    if wanted.until:
        statement = statement.where(AuditEntry.recorded_at < wanted.until)
    statement = statement.order_by(AuditEntry.id.desc()).limit(wanted.limit)
    return [_entry(entry, run) for entry, run in session.execute(statement)]


def _entry(entry: AuditEntry, run: Run) -> HistoryEntry:
    return HistoryEntry(
        id=entry.id,
        recorded_at=entry.recorded_at,
        run_id=run.id,
        command=run.command,
        mode=run.mode,
        host=run.host,
        user=run.user,
        stage=entry.stage,
        network_id=entry.network_id,
        node_id=entry.node_id,
        action=entry.action,
        outcome=entry.outcome,
        reason=entry.reason,
        detail=entry.detail,
        before=entry.before,
        after=entry.after,
        revision=entry.revision,
    )


def previous_failures(session: Session, *, exclude_run: int | None) -> list[dict[str, Any]]:
    """Return the failed and refused actions of the last finished apply run, for the next run to show first.

    A failure stays visible until a later run finishes; that run then shows
    its own failures, if any.
    """
    # Only the job's own commands: a refused `adopt` or a `portal load` tells
    # nothing about the controller, and must neither show up nor hide a failure.
    statement = select(Run).where(
        Run.mode == "apply", Run.finished_at.is_not(None), Run.command.in_(JOB_COMMANDS)
    )
    if exclude_run is not None:
        statement = statement.where(Run.id != exclude_run)
    last = session.scalars(statement.order_by(Run.id.desc()).limit(1)).one_or_none()
    if last is None:
        return []
    entries = session.scalars(
        select(AuditEntry)
        .where(AuditEntry.run_id == last.id, AuditEntry.outcome.in_(("failed", "refused")))
        .order_by(AuditEntry.id)
    )
    failures = [
        {
            "run_id": last.id,
            "command": last.command,
            "at": entry.recorded_at,
            "network": entry.network_id,
            "node": entry.node_id,
            "action": None if entry.action == "none" else entry.action,
            "outcome": entry.outcome,
            # A network that failed as a whole has its error as the reason and no detail.
            "detail": entry.detail or entry.reason,
        }
        for entry in entries
    ]
    if not failures and last.error:
        failures.append(
            {"run_id": last.id, "command": last.command, "at": last.finished_at, "network": None,
             "node": None, "action": None, "outcome": "failed", "detail": last.error}
        )
    return failures


def last_runs(session: Session, command: str) -> tuple[Run | None, Run | None]:
    """Return the last finished run of ``command`` and the last one that finished with exit status 0."""
    finished = select(Run).where(Run.command == command, Run.finished_at.is_not(None)).order_by(Run.id.desc())
    last = session.scalars(finished.limit(1)).one_or_none()
    success = session.scalars(finished.where(Run.exit_code == 0).limit(1)).one_or_none()
    return last, success
