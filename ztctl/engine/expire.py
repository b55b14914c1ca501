"""The expire stage: end activations past their expiry and take access away.

For each membership with an open activation past ``expires_at``, the member
is deauthorized on the controller first and only then is the activation
ended in the portal. If the controller call fails, the activation stays open
and the next run tries again, so an expiry is never lost. Every revocation
still to make is reported with how late it is.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from ztctl.controller.base import ControllerClient, ControllerMember, ControllerNetwork
from ztctl.engine import portal_state
from ztctl.engine.apply import CONTRADICTION, read_back, revoke_with_fresh_revision
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
from ztctl.engine.sync import reusable_cache
from ztctl.errors import (
    ControllerResponseError,
    ControllerUnreachable,
    MemberChanged,
    MemberNotFound,
)

log = logging.getLogger(__name__)

STAGE = "expire"


@dataclass
class _PlannedExpiry:
    network: ControllerNetwork
    finding: Finding
    member: ControllerMember | None
    """The member as read when planning; None when it is not on the controller."""
    late: timedelta
    """How long ago the last of the expired activations ended."""
    deauthorized: bool = False


def run_expire(job: Job) -> StageResult:
    now = job.now()
    result = StageResult(STAGE, job.mode, now)
    with job.sessions() as session:
        due = portal_state.memberships_with_expired_activations(session, now, job.problems)
    by_network: dict[str, list[MembershipView]] = defaultdict(list)
    for membership in due:
        by_network[membership.network_id].append(membership)

    for network_id, memberships in by_network.items():
        report = NetworkReport(network_id)
        result.networks.append(report)
        plans = _plan_network(job, result, report, memberships, now)
        if plans is None:
            _report_unread_overdue(result, memberships, now)
            continue
        report.findings.extend(plan.finding for plan in plans)
        refusal = _review(job, report, plans)
        if refusal is not None:
            _refuse(job, result, report, refusal)
        elif not job.mode.is_read_only:
            _apply_network(job, result, report, plans)
        elif job.recorder.enabled:
            _record_findings(job, report)
        _report_overdue(result, plans)
    return result


def _plan_network(
    job: Job, result: StageResult, report: NetworkReport, memberships: list[MembershipView], now: datetime
) -> list[_PlannedExpiry] | None:
    """Read the network and its members once, and plan each membership's expiry; None if unreadable."""
    client = job.require_controller()
    network_id = report.network_id
    try:
        network = client.get_network(network_id)
        cached = reusable_cache(job, network_id)
        members = {member.node_id: member for member in client.list_members(network_id, cached)}
    except (ControllerResponseError, ControllerUnreachable) as exc:
        report.error = f"activations left open until the network can be read: {exc}"
        result.counts.errors += 1
        log.error("expire on network %s: %s", network_id, report.error)
        return None
    report.name, report.private, report.member_count = network.name, network.private, len(members)
    job.guard.observe(network_id, list(members.values()), sum(1 for m in cached.values() if m.authorized))
    policy = DriftPolicy.for_network(job.settings.policies, network_id)
    return [
        _plan_one(network, membership, members.get(membership.node_id), policy, now) for membership in memberships
    ]


def plan_expiry(
    network: ControllerNetwork,
    membership: MembershipView,
    member: ControllerMember | None,
    policy: DriftPolicy,
    now: datetime,
) -> Finding:
    """Return the expiry a run would plan for a membership with an expired, open activation."""
    return _plan_one(network, membership, member, policy, now).finding


def _plan_one(
    network: ControllerNetwork,
    membership: MembershipView,
    member: ControllerMember | None,
    policy: DriftPolicy,
    now: datetime,
) -> _PlannedExpiry:
    expired = membership.expired_open_activations(now)
    last_expiry = max(activation.expires_at for activation in expired)
    late = now - last_expiry
    keeps_access = membership.grants_access(now)
    revokes = (
        not keeps_access
        and member is not None
        and member.authorized
        and network.private
        and not policy.is_protected(member)
    )
    if keeps_access:
        reason = "activation expired; another activation is still current, so access stays"
    else:
        reason = f"activation expired at {last_expiry:%Y-%m-%d %H:%M:%S}Z ({format_late(late)} ago)"
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
        controller_state=controller_state(member),
        action=ActionKind.EXPIRE,
        reason=reason,
        owner=membership.owner,
        name=membership.name,
        expected_revision=member.revision if member is not None else None,
        activation_ids=tuple(activation.id for activation in expired),
        revokes_access=revokes,
        last_seen_at=member.last_seen_at if member is not None else None,
        physical_address=member.physical_address if member is not None else None,
    )
    return _PlannedExpiry(network, finding, member, late)


def _report_overdue(result: StageResult, plans: list[_PlannedExpiry]) -> None:
    """Count the revocations past their time that this run did not make, and how late the worst is."""
    for plan in plans:
        if not plan.finding.revokes_access or plan.deauthorized:
            continue
        result.counts.overdue_revocations += 1
        late_seconds = int(plan.late.total_seconds())
        result.counts.max_overdue_seconds = max(result.counts.max_overdue_seconds, late_seconds)


def _report_unread_overdue(result: StageResult, memberships: list[MembershipView], now: datetime) -> None:
    """Count as overdue every revocation on a network that could not be read: none of them was confirmed."""
    for membership in memberships:
        if membership.grants_access(now):
            continue
        late = now - max(activation.expires_at for activation in membership.expired_open_activations(now))
        result.counts.overdue_revocations += 1
        result.counts.max_overdue_seconds = max(result.counts.max_overdue_seconds, int(late.total_seconds()))


def _review(job: Job, report: NetworkReport, plans: list[_PlannedExpiry]) -> str | None:
    with job.sessions() as session:
        # Leaving out an unreadable membership only lowers the active count,
        # which makes the guard more careful, not less.
        memberships = portal_state.memberships_by_node(session, report.network_id, [], skip_unreadable=True)
    now = job.now()
    active = sum(1 for membership in memberships.values() if membership.grants_access(now))
    return job.guard.review(report.network_id, [plan.finding for plan in plans], active_memberships=active)


def _refuse(job: Job, result: StageResult, report: NetworkReport, refusal: str) -> None:
    """Change nothing on the network: every planned expiry is refused, and the activations stay open."""
    report.refusal = refusal
    log.error("network %s: refused: %s; nothing was changed on it", report.network_id, refusal)
    outcomes = [Outcome(f, OutcomeStatus.REFUSED, f"refused: {refusal}") for f in report.findings]
    result.counts.refused += len(outcomes)
    if job.mode.is_read_only:
        return
    report.outcomes.extend(outcomes)
    with job.write_sessions() as session:
        for outcome in outcomes:
            job.recorder.record(session, STAGE, outcome.finding, outcome)
        session.commit()


def _apply_network(job: Job, result: StageResult, report: NetworkReport, plans: list[_PlannedExpiry]) -> None:
    client = job.require_controller()
    policy = DriftPolicy.for_network(job.settings.policies, report.network_id)
    job.check_lock()
    for plan in plans:
        if job.past_deadline():
            job.note_deadline(report)
            result.counts.errors += 1
            return
        outcome = _apply_one(job, client, plan, policy)
        report.outcomes.append(outcome)
        _count(job, result, plan, outcome)


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
        with job.write_sessions() as session:
            job.recorder.record(session, STAGE, finding, outcome)
            session.commit()
        return outcome

    keeps_access = current.grants_access(now)
    member: ControllerMember | None = None
    note = "another activation is still current"
    # As in repair, the write is recorded as pending first and sent with no
    # database lock held.
    entry_id = job.recorder.begin(STAGE, finding) if not keeps_access and finding.revokes_access else None
    if not keeps_access:
        try:
            member, note = _revoke(client, plan, policy)
        except ControllerResponseError as exc:
            confirmed = False
            if not isinstance(exc, MemberChanged):
                outcome, member = read_back(client, finding, ActionKind.EXPIRE, exc)
                confirmed = outcome.status is OutcomeStatus.APPLIED
            if confirmed:
                plan.deauthorized = True
                note = "deauthorized (confirmed by reading the member back)"
            else:
                # The activation stays open, so the next run tries again.
                outcome = _not_revoked(plan, exc)
                with job.write_sessions() as session, job.recording_after_write(finding):
                    job.recorder.complete(session, entry_id, STAGE, finding, outcome)
                    session.commit()
                return outcome

    with job.write_sessions() as session, job.recording_after_write(finding):
        now = job.now()
        if member is not None:
            portal_state.update_cached_member(session, member, now)
        # Read again, in the transaction that ends the activations: the portal
        # may have extended one or granted a new one while the write was in
        # flight, and that grant must survive.
        latest = portal_state.membership_view(session, finding.network_id, finding.node_id) or current
        ending = {a.id for a in latest.expired_open_activations(now)} & still_open
        granted_again = latest.grants_access(now) and not keeps_access
        # A membership with an activation still to come stays active, or that
        # activation would never grant access: an inactive state always wins.
        scheduled = any(a.ended_at is None and a.starts_at > now for a in latest.activations)
        ended = portal_state.end_activations(
            session, latest.id, tuple(sorted(ending)), now,
            mark_inactive=not latest.grants_access(now) and not scheduled,
        )
        if granted_again:
            note += "; the portal granted access again meanwhile, so the next repair authorizes the member"
            log.warning(
                "member %s on network %s: the portal granted access again while its expiry was applied",
                finding.node_id, finding.network_id,
            )
        outcome = Outcome(
            finding, OutcomeStatus.APPLIED, f"ended {ended} activation(s); {note}",
            revision=member.revision if member is not None else None,
        )
        after = {"authorized": member.authorized, "revision": member.revision} if member else None
        job.recorder.complete(session, entry_id, STAGE, finding, outcome, after=after)
        session.commit()
    _log_applied(job, plan, outcome)
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
        member = revoke_with_fresh_revision(
            finding,
            lambda revision: client.deauthorize_member(plan.network.id, finding.node_id, expected_revision=revision),
        )
    except MemberNotFound:
        # Listed as authorized a moment ago, so ending the activation on the
        # strength of this 404 could leave the member on the network.
        raise ControllerResponseError(
            CONTRADICTION, network_id=plan.network.id, node_id=finding.node_id
        ) from None
    plan.deauthorized = True
    return member, "deauthorized"


def _not_revoked(plan: _PlannedExpiry, exc: ControllerResponseError) -> Outcome:
    finding = plan.finding
    late = format_late(plan.late)
    if isinstance(exc, MemberChanged):
        outcome = Outcome(finding, OutcomeStatus.SKIPPED, f"changed since plan: {exc}; the activation stays open")
        log.warning("expire of member %s on network %s: %s", finding.node_id, finding.network_id, outcome.detail)
    else:
        outcome = Outcome(finding, OutcomeStatus.FAILED, f"{exc}; the activation stays open until the next run")
        log.error(
            "revocation of member %s on network %s failed, %s overdue: %s",
            finding.node_id, finding.network_id, late, outcome.detail,
        )
    return outcome


def _log_applied(job: Job, plan: _PlannedExpiry, outcome: Outcome) -> None:
    finding = plan.finding
    if plan.deauthorized and plan.late > job.settings.policies.overdue_after:
        log.warning(
            "member %s on network %s deauthorized %s after its activation expired",
            finding.node_id, finding.network_id, format_late(plan.late),
        )
    else:
        log.info("expired member %s on network %s: %s", finding.node_id, finding.network_id, outcome.detail)


def _count(job: Job, result: StageResult, plan: _PlannedExpiry, outcome: Outcome) -> None:
    if outcome.status is OutcomeStatus.APPLIED:
        result.counts.expired_activations += len(plan.finding.activation_ids)
        if plan.deauthorized:
            result.counts.deauthorized += 1
            job.guard.record(plan.finding.network_id, plan.finding)
    elif outcome.status is OutcomeStatus.FAILED:
        result.counts.errors += 1
    elif outcome.status is OutcomeStatus.SKIPPED:
        result.counts.skipped += 1


def _record_findings(job: Job, report: NetworkReport) -> None:
    with job.write_sessions() as session:
        for finding in report.findings:
            job.recorder.record(session, STAGE, finding, None)
        session.commit()


def format_late(late: timedelta) -> str:
    seconds = int(late.total_seconds())
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"
