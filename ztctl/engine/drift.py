"""Compare one network's portal memberships with its controller members.

These functions are pure: they read views and records and return findings,
so every drift rule can be tested without a database or a controller.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from ztctl.config import PolicySettings, UnknownMemberPolicy
from ztctl.controller.base import ControllerMember, ControllerNetwork
from ztctl.engine.model import ActionKind, DriftKind, Finding
from ztctl.engine.portal_state import MembershipView


@dataclass(frozen=True)
class DriftPolicy:
    """The settings that drift rules depend on, for one network."""

    purge_after: timedelta | None
    unknown: UnknownMemberPolicy
    protected_nodes: frozenset[str]

    @classmethod
    def for_network(cls, policies: PolicySettings, network_id: str) -> DriftPolicy:
        return cls(
            purge_after=policies.purge_after,
            unknown=policies.unknown_policy_for(network_id),
            protected_nodes=frozenset(policies.protected_nodes),
        )

    def is_protected(self, member: ControllerMember) -> bool:
        return member.active_bridge or member.node_id in self.protected_nodes


def controller_state(member: ControllerMember | None) -> str:
    if member is None:
        return "missing"
    state = "authorized" if member.authorized else "deauthorized"
    return f"{state}, bridge" if member.active_bridge else state


def protection_reason(member: ControllerMember, policy: DriftPolicy) -> str:
    if member.active_bridge:
        return "active bridge: never deauthorized or deleted"
    return "listed in policies.protected_nodes: never deauthorized or deleted"


def find_drift(
    network: ControllerNetwork,
    members: list[ControllerMember],
    memberships: dict[str, MembershipView],
    policy: DriftPolicy,
    now: datetime,
) -> list[Finding]:
    """Return the drift between the portal's memberships and the controller's members.

    Members without a membership are left to ``find_unknown``. A public
    network has no authorization drift, because its members are authorized
    by the controller itself on every join.
    """
    if not network.private:
        return []
    findings = []
    on_controller = {member.node_id: member for member in members}
    for member in sorted(members, key=lambda m: m.node_id):
        membership = memberships.get(member.node_id)
        if membership is not None:
            finding = _member_drift(member, membership, policy, now)
            if finding is not None:
                findings.append(finding)
    for node_id in sorted(memberships):
        membership = memberships[node_id]
        if node_id not in on_controller and membership.grants_access(now):
            findings.append(
                _finding(
                    membership, None, DriftKind.ACTIVE_MISSING, ActionKind.PREAUTHORIZE, now,
                    "active in the portal but not on the controller",
                )
            )
    return findings


def _member_drift(
    member: ControllerMember, membership: MembershipView, policy: DriftPolicy, now: datetime
) -> Finding | None:
    state = membership.access_state(now)
    if state == "active":
        if member.authorized:
            return None
        return _finding(
            membership, member, DriftKind.ACTIVE_NOT_AUTHORIZED, ActionKind.AUTHORIZE, now,
            "active in the portal but not authorized on the controller",
        )
    if member.authorized:
        if policy.is_protected(member):
            return _finding(
                membership, member, DriftKind.PROTECTED, None, now,
                f"{state} in the portal, but {protection_reason(member, policy)}", pending=False,
            )
        return _finding(
            membership, member, DriftKind.AUTHORIZED_NOT_ACTIVE, ActionKind.DEAUTHORIZE, now,
            _inactive_reason(membership, state), revokes_access=True,
        )
    return _retention_drift(member, membership, policy, now)


def _retention_drift(
    member: ControllerMember, membership: MembershipView, policy: DriftPolicy, now: datetime
) -> Finding | None:
    if policy.purge_after is None or policy.is_protected(member):
        return None
    # Only a membership the portal has switched off or removed is purged: one
    # that is expired or scheduled may be about to get an activation.
    if membership.access_state(now) not in ("inactive", "removed"):
        return None
    # A device that keeps trying to join comes back as a new, unauthorized
    # member after a delete. Deleting it again would only repeat forever.
    if membership.purged_at is not None and (member.created_at is None or member.created_at >= membership.purged_at):
        return None
    times = [membership.state_changed_at, member.last_deauthorized_at, member.created_at]
    since = max(time for time in times if time is not None)
    if now - since < policy.purge_after:
        return None
    return _finding(
        membership, member, DriftKind.RETENTION_PASSED, ActionKind.DELETE, now,
        f"{membership.access_state(now)} in the portal and deauthorized since {since:%Y-%m-%d %H:%M}Z, "
        f"past the retention of {_format_duration(policy.purge_after)}",
    )


def find_unknown(
    network: ControllerNetwork,
    members: list[ControllerMember],
    memberships: dict[str, MembershipView],
    policy: DriftPolicy,
    now: datetime,
    deletions: dict[str, datetime] | None = None,
) -> list[Finding]:
    """Return a finding for every member that has no membership in the portal, with the policy's action.

    ``deletions`` maps node IDs to when ztctl last deleted them: a member
    created since is a device that came back on its own, and is not deleted
    again.
    """
    findings = []
    deletions = deletions or {}
    for member in sorted(members, key=lambda m: m.node_id):
        if member.node_id in memberships:
            continue
        action, reason = _unknown_action(network, member, policy, now, deletions.get(member.node_id))
        findings.append(
            Finding(
                network_id=member.network_id,
                node_id=member.node_id,
                kind=DriftKind.UNKNOWN,
                portal_state="none",
                controller_state=controller_state(member),
                action=action,
                reason=reason,
                name=member.name,
                expected_revision=member.revision,
                pending=action is not None or (member.authorized and network.private),
                revokes_access=action is not None and member.authorized,
                last_seen_at=member.last_seen_at,
                physical_address=member.physical_address,
            )
        )
    return findings


def _unknown_action(
    network: ControllerNetwork,
    member: ControllerMember,
    policy: DriftPolicy,
    now: datetime,
    deleted_at: datetime | None,
) -> tuple[ActionKind | None, str]:
    unknown = "no membership in the portal"
    if not network.private:
        return None, f"{unknown}; public network, so authorization is not enforced"
    if policy.is_protected(member):
        return None, f"{unknown}; {protection_reason(member, policy)}"
    rule = policy.unknown
    if rule.action == "report":
        return None, f"{unknown}; policy is report"
    if deleted_at is not None and (member.created_at is None or member.created_at >= deleted_at):
        returned = f"{unknown}; came back after ztctl deleted it at {deleted_at:%Y-%m-%d %H:%M}Z"
        if member.authorized:
            return ActionKind.DEAUTHORIZE, f"{returned}, and is authorized again"
        return None, f"{returned}, so it is not deleted again"
    if rule.action == "deauthorize" and not member.authorized:
        return None, f"{unknown}; already deauthorized"
    if member.created_at is None:
        return None, f"{unknown}; creation time unknown, so the grace period cannot be checked"
    grace_ends = member.created_at + rule.grace
    if now < grace_ends:
        return None, f"{unknown}; policy {rule.action} applies after {grace_ends:%Y-%m-%d %H:%M}Z"
    action = ActionKind.DEAUTHORIZE if rule.action == "deauthorize" else ActionKind.DELETE
    return action, f"{unknown}; policy {rule.action}, grace of {_format_duration(rule.grace)} passed"


def _finding(
    membership: MembershipView,
    member: ControllerMember | None,
    kind: DriftKind,
    action: ActionKind | None,
    now: datetime,
    reason: str,
    *,
    pending: bool = True,
    revokes_access: bool = False,
) -> Finding:
    return Finding(
        network_id=membership.network_id,
        node_id=membership.node_id,
        kind=kind,
        portal_state=membership.access_state(now),
        controller_state=controller_state(member),
        action=action,
        reason=reason,
        owner=membership.owner,
        name=membership.name,
        expected_revision=member.revision if member is not None else None,
        pending=pending,
        revokes_access=revokes_access,
        last_seen_at=member.last_seen_at if member is not None else None,
        physical_address=member.physical_address if member is not None else None,
    )


def _inactive_reason(membership: MembershipView, state: str) -> str:
    if state == "expired":
        last = max(activation.expires_at for activation in membership.activations)
        return f"activation expired at {last:%Y-%m-%d %H:%M}Z but the member is still authorized"
    if state == "scheduled":
        return "activation has not started yet but the member is already authorized"
    return f"{state} in the portal but authorized on the controller"


def _format_duration(duration: timedelta) -> str:
    seconds = int(duration.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
