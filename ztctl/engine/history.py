"""Read back what earlier runs did, from the ``runs`` table and the audit log."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ztctl.portal.models import AuditEntry, Run


def previous_failures(session: Session, *, exclude_run: int | None) -> list[dict[str, Any]]:
    """Return the failed and refused actions of the last finished apply run, for the next run to show first.

    A failure stays visible until a later run finishes; that run then shows
    its own failures, if any.
    """
    statement = select(Run).where(Run.mode == "apply", Run.finished_at.is_not(None))
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
            "action": entry.action,
            "outcome": entry.outcome,
            "detail": entry.detail,
        }
        for entry in entries
    ]
    if not failures and last.error:
        failures.append(
            {"run_id": last.id, "command": last.command, "at": last.finished_at, "network": None,
             "node": None, "action": None, "outcome": "failed", "detail": last.error}
        )
    return failures
