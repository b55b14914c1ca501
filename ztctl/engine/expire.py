"""The expire stage: end activations past their expiry and take access away.

For each membership with an open activation past ``expires_at``, the member
is deauthorized on the controller first and only then is the activation
ended in the portal. If the controller call fails, the activation stays open
and the next run tries again, so an expiry is never lost.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from ztctl.controller.base import ControllerClient, ControllerMember, ControllerNetwork
from ztctl.engine import portal_state
from ztctl.engine.drift import DriftPolicy, controller_state, protection_reason
from ztctl.engine.job import Job
from ztctl.engine.model import (
    ActionKind,
    DriftKind,
    Finding,
    NetworkReport,
    Outcome,
    OutcomeStatus,
    StageResult,
)
from ztctl.engine.portal_state import MembershipView
from ztctl.errors import ControllerResponseError, MemberChanged, MemberNotFound

log = logging.getLogger(__name__)

STAGE = "expire"


@dataclass
class _PlannedExpiry:
    network: ControllerNetwork
    finding: Finding
    member: ControllerMember | None
    """The member as read when planning; None when it was not read or is not on the controller."""
    deauthorized: bool = False


def run_expire(job: Job) -> StageResult:
    client = job.require_controller()
    now = job.now()
    result = StageResult(STAGE, job.mode, now)
    with job.sessions() as session:
        due = portal_state.memberships_with_expired_activations(session, now)
    by_network: dict[str, list[MembershipView]] = defaultdict(list)
    for membership in due:
        by_network[membership.network_id].append(membership)

    for network_id, memberships in by_network.items():
        report = NetworkReport(network_id)
        result.networks.append(report)
        try:
            network = client.get_network(network_id)
        except ControllerResponseError as exc:
            report.error = f"activations left open until the network can be read: {exc}"
            result.counts.errors += 1
            log.error("expire on network %s: %s", network_id, report.error)
            continue
        report.name, report.private = network.name, network.private
        policy = DriftPolicy.for_network(job.settings.policies, network_id)
        plans = [_PlannedExpiry(network, *_plan_one(client, network, m, policy, now)) for m in memberships]
        report.findings.extend(plan.finding for plan in plans)
        if not job.mode.is_read_only:
            for plan in plans:
                outcome = _apply_one(job, client, plan, policy)
                report.outcomes.append(outcome)
                _count(result, plan, outcome)
        elif job.recorder.enabled:
            _record_findings(job, report)
    return result


def _plan_one(
    client: ControllerClient,
    network: ControllerNetwork,
    membership: MembershipView,
    policy: DriftPolicy,
    now: datetime,
) -> tuple[Finding, ControllerMember | None]:
    expired = membership.expired_open_activations(now)
    last_expiry = max(activation.expires_at for activation in expired)
    still_active = membership.grants_access(now)
    member = None if still_active else client.get_member(network.id, membership.node_id)
    if still_active:
        reason = "activation expired; another activation is still current, so access stays"
    else:
        reason = f"activation expired at {last_expiry:%Y-%m-%d %H:%M:%S}Z ({_format_late(now - last_expiry)} ago)"
        if member is not None and member.authorized:
            if not network.private:
                reason += "; public network, so the member is not deauthorized"
            elif policy.is_protected(member):
                reason += f"; {protection_reason(member, policy)}"
    finding = Finding(
        network_id=network.id,
        node_id=membership.node_id,
        kind=DriftKind.EXPIRED,
        portal_state=membership.access_state(now),
        controller_state="not read" if still_active else controller_state(member),
        action=ActionKind.EXPIRE,
        reason=reason,
        owner=membership.owner,
        name=membership.name,
        expected_revision=member.revision if member is not None else None,
        activation_ids=tuple(activation.id for activation in expired),
    )
    return finding, member


def _apply_one(job: Job, client: ControllerClient, plan: _PlannedExpiry, policy: DriftPolicy) -> Outcome:
    finding = plan.finding
    with job.sessions() as session:
        now = job.now()
        current = portal_state.membership_view(session, finding.network_id, finding.node_id)
        still_open: set[int] = set()
        if current is not None and current.removed_at is None:
            still_open = {a.id for a in current.expired_open_activations(now)} & set(finding.activation_ids)
        if current is None or not still_open:
            outcome = Outcome(finding, OutcomeStatus.SKIPPED, "changed since plan: the activations were already ended")
            job.recorder.record(session, STAGE, finding, outcome)
            session.commit()
            return outcome

        keeps_access = current.grants_access(now)
        member: ControllerMember | None = None
        note = "another activation is still current"
        if not keeps_access:
            try:
                member, note = _revoke(client, plan, policy)
            except ControllerResponseError as exc:
                # The activation stays open, so the next run tries again.
                outcome = _not_revoked(finding, exc)
                job.recorder.record(session, STAGE, finding, outcome)
                session.commit()
                return outcome
            if member is not None:
                portal_state.update_cached_member(session, member, now)

        ended = portal_state.end_activations(
            session, current.id, tuple(sorted(still_open)), now, mark_inactive=not keeps_access
        )
        outcome = Outcome(
            finding, OutcomeStatus.APPLIED, f"ended {ended} activation(s); {note}",
            revision=member.revision if member is not None else None,
        )
        after = {"authorized": member.authorized, "revision": member.revision} if member else None
        job.recorder.record(session, STAGE, finding, outcome, after=after)
        session.commit()
    log.info("expired member %s on network %s: %s", finding.node_id, finding.network_id, outcome.detail)
    return outcome


def _revoke(
    client: ControllerClient, plan: _PlannedExpiry, policy: DriftPolicy
) -> tuple[ControllerMember | None, str]:
    """Deauthorize the member if it should be; return it as stored and a note for the outcome.

    The decision uses the member as planned; the client's conditional write
    re-reads it and raises ``MemberChanged`` if it moved since.
    """
    finding, member = plan.finding, plan.member
    if not plan.network.private:
        return None, "public network, so the member was not deauthorized"
    if member is None:
        return None, "the member is not on the controller"
    if not member.authorized:
        return member, "the member was already deauthorized"
    if policy.is_protected(member):
        return member, protection_reason(member, policy)
    try:
        member = client.deauthorize_member(plan.network.id, finding.node_id, expected_revision=finding.expected_revision)
    except MemberNotFound:
        return None, "the member is not on the controller"
    plan.deauthorized = True
    return member, "deauthorized"


def _not_revoked(finding: Finding, exc: ControllerResponseError) -> Outcome:
    if isinstance(exc, MemberChanged):
        outcome = Outcome(finding, OutcomeStatus.SKIPPED, f"changed since plan: {exc}; the activation stays open")
        log.warning("expire of member %s on network %s: %s", finding.node_id, finding.network_id, outcome.detail)
    else:
        outcome = Outcome(finding, OutcomeStatus.FAILED, f"{exc}; the activation stays open until the next run")
        log.error("expire of member %s on network %s failed: %s", finding.node_id, finding.network_id, outcome.detail)
    return outcome


def _count(result: StageResult, plan: _PlannedExpiry, outcome: Outcome) -> None:
    if outcome.status is OutcomeStatus.APPLIED:
        result.counts.expired_activations += len(plan.finding.activation_ids)
        if plan.deauthorized:
            result.counts.deauthorized += 1
    elif outcome.status is OutcomeStatus.FAILED:
        result.counts.errors += 1
    elif outcome.status is OutcomeStatus.SKIPPED:
        result.counts.skipped += 1


def _record_findings(job: Job, report: NetworkReport) -> None:
    with job.sessions() as session:
        for finding in report.findings:
            job.recorder.record(session, STAGE, finding, None)
        session.commit()


def _format_late(late: timedelta) -> str:
    seconds = int(late.total_seconds())
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"
