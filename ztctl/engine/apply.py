"""Apply one planned action, after checking that the plan still holds.

Right before a write, the membership is re-read from the portal, and the
controller client re-reads the member and compares its revision with the
plan's. If either moved, the action is skipped as "changed since plan" and
the next run plans again from fresh state. The portal change and the audit
entry that describes the action commit together.
"""

from __future__ import annotations

import logging
from typing import Any

from ztctl.controller.base import ControllerClient, ControllerMember
from ztctl.engine import portal_state
from ztctl.engine.job import Job
from ztctl.engine.model import ActionKind, DriftKind, Finding, Outcome, OutcomeStatus
from ztctl.engine.portal_state import MembershipView
from ztctl.errors import ControllerResponseError, MemberChanged, MemberNotFound

log = logging.getLogger(__name__)


def apply_finding(job: Job, stage: str, finding: Finding) -> Outcome:
    """Carry out ``finding.action`` and record the outcome; ``ControllerUnreachable`` propagates."""
    client = job.require_controller()
    with job.write_sessions() as session:
        now = job.now()
        current = portal_state.membership_view(session, finding.network_id, finding.node_id)
        changed = portal_change(finding, current, now)
        if changed is not None:
            outcome = Outcome(finding, OutcomeStatus.SKIPPED, f"changed since plan: {changed}")
            job.recorder.record(session, stage, finding, outcome, before=_before(finding))
            session.commit()
            _log_outcome(outcome)
            return outcome

        member: ControllerMember | None = None
        try:
            member = send_action(client, finding)
        except MemberChanged as exc:
            outcome = Outcome(finding, OutcomeStatus.SKIPPED, f"changed since plan: {exc}")
        except MemberNotFound:
            outcome = Outcome(finding, OutcomeStatus.SKIPPED, "changed since plan: the member is no longer on the controller")
            portal_state.forget_cached_member(session, finding.network_id, finding.node_id, now)
        except ControllerResponseError as exc:
            outcome = Outcome(finding, OutcomeStatus.FAILED, str(exc))
        else:
            outcome = Outcome(finding, OutcomeStatus.APPLIED, revision=member.revision)

        with job.recording_after_write(finding):
            if member is not None:
                _update_cache(session, finding, member, now, run_id=job.recorder.run_id)
            job.recorder.record(session, stage, finding, outcome, before=_before(finding), after=_after(member))
            session.commit()
    _log_outcome(outcome)
    return outcome


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


def _update_cache(session: Any, finding: Finding, member: ControllerMember, now: Any, *, run_id: int | None) -> None:
    if finding.action is ActionKind.DELETE:
        portal_state.forget_cached_member(session, finding.network_id, finding.node_id, now)
        portal_state.record_deletion(
            session, finding.network_id, finding.node_id, now, run_id=run_id, reason=finding.reason
        )
    else:
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
