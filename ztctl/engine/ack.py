"""Acknowledged drift: an operator accepts a known difference until a time.

An accepted difference is left as it is until the acknowledgement ends: no
run repairs it, and ``diff`` and audits do not count it as pending. Holding
back the repair as well as the count keeps the two in step, so that a green
CI check never comes just before a run that changes the member after all.
Activations still end at their expiry: an acknowledgement covers a
difference, never the portal's own clock.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ztctl.config import LoadedSettings
from ztctl.controller.base import is_network_id, is_node_id
from ztctl.engine.job import current_user, open_job
from ztctl.engine.model import DriftKind, Finding, Mode
from ztctl.errors import ControllerUnreachable, UsageError
from ztctl.portal.models import Acknowledgement, Network


@dataclass(frozen=True)
class AcknowledgementView:
    network_id: str
    node_id: str
    until: datetime
    reason: str
    created_by: str
    created_at: datetime
    kinds: frozenset[str] | None = None
    """The drift kinds accepted; None accepts any (acknowledgements made before kinds were kept)."""

    def covers(self, finding: Finding) -> bool:
        return self.kinds is None or str(finding.kind) in self.kinds

    def to_dict(self) -> dict[str, object]:
        return {
            "network": self.network_id,
            "node": self.node_id,
            "until": self.until,
            "reason": self.reason,
            "created_by": self.created_by,
            "created_at": self.created_at,
            "kinds": sorted(self.kinds) if self.kinds is not None else None,
        }


MAX_ACKNOWLEDGEMENT = timedelta(days=366)
"""How far ahead an acknowledgement may end: a longer one is more likely a typo than a decision."""


def acknowledge(
    loaded: LoadedSettings,
    network_id: str,
    node_id: str,
    *,
    until: datetime | None,
    reason: str,
    mode: Mode,
    until_text: str | None = None,
) -> AcknowledgementView:
    """Record that the difference for one member is accepted until ``until``; a dry run only checks it.

    The latest acknowledgement recorded for a member replaces earlier ones,
    so a new one can shorten an earlier one; ``until=None`` withdraws it.
    """
    network_id, node_id = network_id.lower(), node_id.lower()
    if not is_network_id(network_id):
        raise UsageError(f"invalid network ID {network_id!r}: expected 16 hex digits")
    if not is_node_id(node_id):
        raise UsageError(f"invalid node ID {node_id!r}: expected 10 hex digits")
    if not reason.strip():
        raise UsageError("--reason is empty", hint="say why the difference is accepted")
    if any(unicodedata.category(character) in ("Cc", "Cf") for character in reason):
        raise UsageError("--reason contains control characters", hint="write it as plain text on one line")
    kinds = None if until is None else _current_kinds(loaded, network_id, node_id)
    if mode is Mode.AUDIT:
        raise UsageError("ack does not support --audit", hint="use --dry-run to check the arguments")
    job = open_job(loaded, command="ack", mode=mode, needs_controller=False)
    try:
        now = job.now()
        given = f"--until {until_text}" if until_text else f"--until {until.isoformat() if until else ''}"
        if until is None:
            with job.sessions() as session:
                if node_id not in active_acknowledgements(session, network_id, now):
                    raise UsageError(
                        f"{network_id}/{node_id} has no acknowledgement in force, so there is nothing to withdraw",
                        hint="check the IDs with ztctl explain",
                    )
            until = now
        elif until.tzinfo is None:
            raise UsageError(f"{given} has no time zone", hint="add Z for UTC")
        elif until <= now:
            raise UsageError(f"{given} is not in the future", hint="give a later time, or a duration such as 7d")
        elif until > now + MAX_ACKNOWLEDGEMENT:
            raise UsageError(
                f"{given} ends {until:%Y-%m-%d}, more than {MAX_ACKNOWLEDGEMENT.days} days ahead",
                hint="acknowledge again when it ends, if the difference is still accepted",
            )
        with job.sessions() as session:
            managed = session.get(Network, network_id)
        if managed is None or managed.removed_at is not None:
            raise _not_managed(network_id)
        view = AcknowledgementView(network_id, node_id, until, reason.strip(), current_user(), now, kinds)
        if mode is Mode.APPLY:
            with job.write_sessions() as session:
                session.add(
                    Acknowledgement(
                        network_id=network_id, node_id=node_id, until=until, reason=view.reason,
                        created_at=now, created_by=view.created_by,
                        kinds=",".join(sorted(kinds)) if kinds is not None else None,
                    )
                )
                session.commit()
        job.recorder.finish(0, {})
        return view
    finally:
        job.close()


def _not_managed(network_id: str) -> UsageError:
    return UsageError(
        f"network {network_id} is not managed in the portal, so no run would report a difference on it",
        hint="check the network ID, or bring the network under management with ztctl adopt",
    )


def _current_kinds(loaded: LoadedSettings, network_id: str, node_id: str) -> frozenset[str]:
    """Return the kinds of difference the member shows now, read as ``explain`` reads them.

    An acknowledgement covers these and no other: a member accepted as an
    unknown printer is not thereby accepted once the portal revokes it.
    """
    # Imported here because explain reads acknowledgements from this module.
    from ztctl.engine.explain import explain

    explanation = explain(loaded, network_id, node_id)
    if not explanation.managed:
        raise _not_managed(network_id)
    if explanation.live_error is not None:
        raise ControllerUnreachable(
            f"cannot read the member from the controller, so the difference to accept is unknown: "
            f"{explanation.live_error}",
            hint="acknowledge once the controller answers; ztctl explain shows what it reads",
        )
    kinds = {str(f.kind) for f in explanation.differences if f.pending and f.kind is not DriftKind.EXPIRED}
    if not kinds:
        raise UsageError(
            f"{network_id}/{node_id} shows no difference that an acknowledgement can cover "
            "(activations still end at their expiry)",
            hint="ztctl explain shows what the next run will do",
        )
    return frozenset(kinds)


def active_acknowledgements(session: Session, network_id: str, now: datetime) -> dict[str, AcknowledgementView]:
    """Return the acknowledgements of a network still in force: per member, the latest recorded, if not ended."""
    latest = (
        select(Acknowledgement.node_id, func.max(Acknowledgement.id).label("id"))
        .where(Acknowledgement.network_id == network_id)
        .group_by(Acknowledgement.node_id)
        .subquery()
    )
    statement = select(Acknowledgement).join(latest, Acknowledgement.id == latest.c.id).where(
        Acknowledgement.until > now
    )
    return {
        row.node_id: AcknowledgementView(
            row.network_id, row.node_id, row.until, row.reason, row.created_by, row.created_at,
            frozenset(row.kinds.split(",")) if row.kinds else None,
        )
        for row in session.scalars(statement)
    }


def apply_acknowledgements(findings: list[Finding], acknowledgements: dict[str, AcknowledgementView]) -> list[Finding]:
    """Hold back the actions of acknowledged findings and mark them as not pending."""
    marked = []
    for finding in findings:
        acknowledgement = acknowledgements.get(finding.node_id)
        if acknowledgement is None or not finding.pending or not acknowledgement.covers(finding):
            marked.append(finding)
            continue
        held = f"; {finding.action} held back" if finding.action is not None else ""
        marked.append(
            replace(
                finding,
                action=None,
                pending=False,
                revokes_access=False,
                acknowledged_until=acknowledgement.until,
                reason=f"{finding.reason} (acknowledged until {acknowledgement.until:%Y-%m-%d %H:%M}Z "
                f"by {acknowledgement.created_by}: {acknowledgement.reason}{held})",
            )
        )
    return marked
