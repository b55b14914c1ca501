"""Apply one planned action, after checking that the plan still holds.

Right before a write, the membership is re-read from the portal, and the
controller client re-reads the member and compares its revision with the
plan's. If either moved, the action is skipped as "changed since plan" and
the next run plans again from fresh state. Each write is recorded as pending
before it is sent, and its outcome replaces that entry together with the
portal change it goes with, so that a run killed midway leaves a trace that
the next run settles.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from sqlalchemy import select

from ztctl.controller.base import ControllerClient, ControllerMember
from ztctl.engine import portal_state
from ztctl.engine.job import PENDING, Job
from ztctl.engine.model import (
    ActionKind,
    DriftKind,
    Finding,
    Mode,
    Outcome,
    OutcomeStatus,
)
from ztctl.engine.portal_state import MembershipView
from ztctl.errors import (
    ControllerError,
    ControllerResponseError,
    MemberChanged,
    MemberNotFound,
)
from ztctl.portal.models import AuditEntry

log = logging.getLogger(__name__)


def apply_finding(job: Job, stage: str, finding: Finding) -> Outcome:
    """Carry out ``finding.action`` and record the outcome; ``ControllerUnreachable`` propagates."""
    client = job.require_controller()
    with job.sessions() as session:
        current = portal_state.membership_view(session, finding.network_id, finding.node_id)
    changed = portal_change(finding, current, job.now())
    if changed is not None:
        outcome = Outcome(finding, OutcomeStatus.SKIPPED, f"changed since plan: {changed}")
        with job.write_sessions() as session:
            job.recorder.record(session, stage, finding, outcome, before=_before(finding))
            session.commit()
        _log_outcome(outcome)
        return outcome

    # No database lock is held while the write is in flight: on SQLite a slow
    # controller would otherwise keep every other network's work waiting.
    entry_id = job.recorder.begin(stage, finding, before=_before(finding))
    member: ControllerMember | None = None
    member_gone = False
    try:
        if finding.action is ActionKind.DEAUTHORIZE:
            member = revoke_with_fresh_revision(
                finding, lambda revision: send_action(client, replace(finding, expected_revision=revision))
            )
        else:
            member = send_action(client, finding)
    except MemberChanged as exc:
        outcome = Outcome(finding, OutcomeStatus.SKIPPED, f"changed since plan: {exc}")
    except MemberNotFound:
        if finding.revokes_access:
            # The member list showed this member authorized a moment ago. A
            # controller that now reports it missing cannot be trusted to have
            # removed its access, so this fails until its responses agree.
            outcome = Outcome(finding, OutcomeStatus.FAILED, CONTRADICTION)
        else:
            outcome = Outcome(
                finding, OutcomeStatus.SKIPPED, "changed since plan: the member is no longer on the controller"
            )
            member_gone = True
    except ControllerResponseError as exc:
        outcome, member = read_back(client, finding, finding.action, exc)
    else:
        outcome = Outcome(finding, OutcomeStatus.APPLIED, revision=member.revision)

    with job.write_sessions() as session, job.recording_after_write(finding):
        now = job.now()
        if member_gone:
            portal_state.forget_cached_member(session, finding.network_id, finding.node_id, now)
        if outcome.status is OutcomeStatus.APPLIED:
            _update_cache(session, finding, member, now, run_id=job.recorder.run_id)
        job.recorder.complete(
            session, entry_id, stage, finding, outcome, before=_before(finding), after=_after(member)
        )
        session.commit()
    _log_outcome(outcome)
    return outcome


CONTRADICTION = (
    "the controller listed the member but returns 404 when it is read: its responses contradict each other, "
    "so the change cannot be confirmed; the next run tries again"
)


def read_back(
    client: ControllerClient, finding: Finding, action: ActionKind | None, error: ControllerResponseError
) -> tuple[Outcome, ControllerMember | None]:
    """Read the member after a write whose response could not be used, to learn whether the write was made.

    An empty or cut-short response to a write that did land would otherwise
    be recorded as a failure, and the audit log would never show the change.
    """
    try:
        member = client.get_member(finding.network_id, finding.node_id)
    except ControllerResponseError:
        return Outcome(finding, OutcomeStatus.FAILED, str(error)), None
    if not write_made(action, member):
        return Outcome(finding, OutcomeStatus.FAILED, str(error)), member
    detail = f"the controller's response could not be used ({error}), but reading the member back shows the change"
    return Outcome(finding, OutcomeStatus.APPLIED, detail, revision=member.revision if member else None), member


def write_made(action: ActionKind | str | None, member: ControllerMember | None) -> bool:
    """Tell whether ``member``, as read now, is in the state that ``action`` leaves it in."""
    match str(action):
        case ActionKind.AUTHORIZE | ActionKind.PREAUTHORIZE:
            return member is not None and member.authorized
        case ActionKind.DEAUTHORIZE | ActionKind.EXPIRE:
            return member is not None and not member.authorized
        case ActionKind.DELETE:
            return member is None
    return False


def settle_interrupted_writes(job: Job) -> None:
    """Find out from the controller what became of writes that an earlier, killed run left pending.

    The run recorded each write as pending before sending it; whether it
    reached the controller is read back now and written into that entry.
    """
    client = job.controller
    if job.mode is not Mode.APPLY or client is None or not job.recorder.enabled:
        return
    with job.sessions() as session:
        pending = session.scalars(
            select(AuditEntry)
            .where(AuditEntry.outcome == PENDING, AuditEntry.run_id != job.recorder.run_id)
            .order_by(AuditEntry.id)
        ).all()
    for entry in pending:
        if entry.node_id is None:
            continue
        try:
            member = client.get_member(entry.network_id, entry.node_id)
        except ControllerError as exc:
            # Left pending for a later run; this one goes on with its own work.
            log.warning("could not yet learn what became of run #%s's %s of member %s on network %s: %s",
                        entry.run_id, entry.action, entry.node_id, entry.network_id, exc)
            continue
        was_made = write_made(entry.action, member)
        if member is None:
            found = "not on the controller"
        elif member.authorized:
            found = "authorized"
        else:
            found = "deauthorized"
        # The read shows the member's state, not who set it: a hand-made change
        # looks the same, and a write still in flight can land after this read.
        if was_made:
            verdict = "the state this write leaves, so it was made, or the same change was made another way"
        else:
            verdict = "so the write was not made by then; the next run plans from the member's state"
        detail = (
            f"run #{entry.run_id} stopped while this write was in flight; run #{job.recorder.run_id} found the "
            f"member {found}: {verdict}"
        )
        with job.write_sessions() as session:
            row = session.get(AuditEntry, entry.id)
            if row is None:
                continue
            row.outcome = str(OutcomeStatus.APPLIED if was_made else OutcomeStatus.FAILED)
            row.detail = detail
            row.after = _after(member)
            session.commit()
        log.warning("%s of member %s on network %s: %s", entry.action, entry.node_id, entry.network_id, detail)


def portal_change(finding: Finding, current: MembershipView | None, now: Any) -> str | None:
    """Say how the portal changed since ``finding`` was planned in a way that cancels it, or None."""
    if finding.kind is DriftKind.UNKNOWN:
        if current is None:
            return None
        return f"the portal now has a membership for the member ({current.access_state(now)})"
    if current is None:
        return "the membership is no longer in the portal"
    wants_access = finding.action in (ActionKind.AUTHORIZE, ActionKind.PREAUTHORIZE)
    if current.grants_access(now) != wants_access:
        return f"the membership is now {current.access_state(now)} in the portal"
    return None


def revoke_with_fresh_revision(
    finding: Finding, deauthorize: Callable[[int | None], ControllerMember]
) -> ControllerMember:
    """Deauthorize, and once more against the member's new revision if it moved but still should go.

    The portal still denies access (it was read again just before). If the
    member is still authorized and has not become an active bridge, the plan
    is still right whatever else changed. Skipping instead would leave the
    member on the network, run after run, on a controller whose revisions keep
    moving.
    A member that is unknown to the portal is planned again by the next run
    instead, because its grace period depends on the member itself.
    """
    try:
        return deauthorize(finding.expected_revision)
    except MemberChanged as exc:
        current = exc.current
        if (
            finding.kind not in (DriftKind.AUTHORIZED_NOT_ACTIVE, DriftKind.EXPIRED)
            or not isinstance(current, ControllerMember)
            or not current.authorized
            or current.active_bridge
        ):
            raise
        try:
            return deauthorize(current.revision)
        except MemberChanged as again:
            raise ControllerResponseError(
                f"the member kept changing while it was being deauthorized ({again}), so its access was not "
                "removed; the next run tries again",
                network_id=finding.network_id,
                node_id=finding.node_id,
            ) from None


def send_action(client: ControllerClient, finding: Finding) -> ControllerMember:
    network_id, node_id = finding.network_id, finding.node_id
    revision = finding.expected_revision
    match finding.action:
        case ActionKind.AUTHORIZE:
            return client.authorize_member(network_id, node_id, expected_revision=revision)
        case ActionKind.PREAUTHORIZE:
            return client.authorize_member(network_id, node_id, create=True, name=finding.name)
        case ActionKind.DEAUTHORIZE:
            return client.deauthorize_member(network_id, node_id, expected_revision=revision)
        case ActionKind.DELETE:
            return client.delete_member(network_id, node_id, expected_revision=revision)
    raise ValueError(f"action {finding.action} is not a controller write")


def _update_cache(
    session: Any, finding: Finding, member: ControllerMember | None, now: Any, *, run_id: int | None
) -> None:
    if finding.action is ActionKind.DELETE:
        portal_state.forget_cached_member(session, finding.network_id, finding.node_id, now)
        portal_state.record_deletion(
            session, finding.network_id, finding.node_id, now, run_id=run_id, reason=finding.reason
        )
    elif member is not None:
        portal_state.update_cached_member(session, member, now)


def _before(finding: Finding) -> dict[str, Any]:
    return {"controller": finding.controller_state, "portal": finding.portal_state, "revision": finding.expected_revision}


def _after(member: ControllerMember | None) -> dict[str, Any] | None:
    if member is None:
        return None
    return {"authorized": member.authorized, "revision": member.revision}


def _log_outcome(outcome: Outcome) -> None:
    finding = outcome.finding
    if outcome.status is OutcomeStatus.FAILED:
        log.error(
            "%s of member %s on network %s failed: %s",
            finding.action, finding.node_id, finding.network_id, outcome.detail,
        )
    elif outcome.status is OutcomeStatus.SKIPPED:
        log.warning(
            "%s of member %s on network %s skipped: %s",
            finding.action, finding.node_id, finding.network_id, outcome.detail,
        )
    else:
        log.info("%s member %s on network %s: %s", finding.action, finding.node_id, finding.network_id, finding.reason)
