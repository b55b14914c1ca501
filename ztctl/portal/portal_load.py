"""Load a portal document into the portal database: plan every change, then apply the plan.

The document is the complete desired state:

- Networks in the document are added or updated, and restored if they had
  been removed. Managed networks missing from it get ``removed_at``, so ztctl
  stops managing them. Their memberships are left as they are.
- Memberships of a network in the document are added or updated, and
  restored if removed. Those missing from it get ``removed_at``: the member
  must lose access. ``state_changed_at`` moves when the state or the removal
  changes.
- Activations match on (start, expires). New ones are added. One missing from
  the document, or belonging to a removed membership, gets ``removed_at``, and
  if it was still open it is ended with ``end_reason = "removed"``.

Rows are never deleted. ``plan_load`` only reads, so a dry run can show the
plan, and ``apply_load`` writes it in the caller's transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from ztctl.portal.models import Activation, Membership, Network
from ztctl.portal.portal_document import (
    MembershipEntry,
    NetworkEntry,
    PortalDocument,
    format_time,
)

END_REASON_REMOVED = "removed"


@dataclass(frozen=True)
class NetworkChange:
    action: Literal["add", "update", "remove"]
    network_id: str
    name: str
    """The name after the change."""
    description: str


@dataclass(frozen=True)
class MembershipChange:
    action: Literal["add", "update", "remove"]
    network_id: str
    node_id: str
    owner: str | None
    name: str | None
    state: str
    is_state_changed: bool
    """True when ``state`` or the removal changes, which moves ``state_changed_at``."""
    description: str


@dataclass(frozen=True)
class ActivationChange:
    action: Literal["add", "remove"]
    network_id: str
    node_id: str
    starts_at: datetime
    expires_at: datetime
    activation_id: int | None
    """The row to remove; None for an activation to add."""
    description: str


LoadAction = NetworkChange | MembershipChange | ActivationChange


@dataclass(frozen=True)
class LoadSummary:
    """Counts of planned changes by kind."""

    networks_added: int = 0
    networks_updated: int = 0
    networks_removed: int = 0
    memberships_added: int = 0
    memberships_updated: int = 0
    memberships_removed: int = 0
    activations_added: int = 0
    activations_removed: int = 0

    @property
    def total(self) -> int:
        return sum(getattr(self, field.name) for field in fields(self))


@dataclass(frozen=True)
class LoadPlan:
    """Every change that loading a document makes, in the order ``apply_load`` makes them."""

    actions: tuple[LoadAction, ...]

    @property
    def changes(self) -> list[str]:
        """One human-readable line per change."""
        return [action.description for action in self.actions]

    @property
    def has_changes(self) -> bool:
        return bool(self.actions)

    @property
    def summary(self) -> LoadSummary:
        counts: dict[str, int] = {}
        for action in self.actions:
            key = f"{_SUMMARY_KINDS[type(action)]}_{_SUMMARY_ACTIONS[action.action]}"
            counts[key] = counts.get(key, 0) + 1
        return LoadSummary(**counts)


_SUMMARY_KINDS = {NetworkChange: "networks", MembershipChange: "memberships", ActivationChange: "activations"}
_SUMMARY_ACTIONS = {"add": "added", "update": "updated", "remove": "removed"}


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be timezone-aware, got {now.isoformat()}")


def _text(value: str | None) -> str:
    return repr(value) if value is not None else "(none)"


def plan_load(session: Session, document: PortalDocument, *, now: datetime) -> LoadPlan:
    """Compare the document with the portal database and return every change; nothing is written."""
    _require_aware(now)
    networks = {network.id: network for network in session.scalars(select(Network))}
    memberships: dict[str, dict[str, Membership]] = {}
    for row in session.scalars(select(Membership).order_by(Membership.network_id, Membership.node_id)):
        memberships.setdefault(row.network_id, {})[row.node_id] = row
    activations: dict[int, list[Activation]] = {}
    for activation in session.scalars(select(Activation).where(Activation.removed_at.is_(None))):
        activations.setdefault(activation.membership_id, []).append(activation)

    actions: list[LoadAction] = []
    for entry in document.networks:
        actions.extend(_plan_network(entry, networks.get(entry.id)))
        existing_memberships = memberships.get(entry.id, {})
        for membership_entry in entry.memberships:
            existing = existing_memberships.get(membership_entry.node)
            current = activations.get(existing.id, []) if existing else []
            actions.extend(_plan_membership(entry.id, membership_entry, existing, current))

        in_file = {membership.node for membership in entry.memberships}
        for node_id, existing in existing_memberships.items():
            if node_id not in in_file and existing.removed_at is None:
                actions.extend(_plan_membership_removal(existing, activations.get(existing.id, [])))

    in_document = {entry.id for entry in document.networks}
    for network_id, network in sorted(networks.items()):
        if network_id not in in_document and network.removed_at is None:
            actions.append(NetworkChange("remove", network_id, network.name,
                                         f"remove network {network_id}: ztctl stops managing it, "
                                         "and its memberships stay as they are"))
    return LoadPlan(tuple(actions))


def _plan_network(entry: NetworkEntry, existing: Network | None) -> list[NetworkChange]:
    if existing is None:
        return [NetworkChange("add", entry.id, entry.name, f"add network {entry.id} ({entry.name!r})")]
    details = []
    if existing.name != entry.name:
        details.append(f"name {existing.name!r} -> {entry.name!r}")
    if existing.removed_at is not None:
        details.append(f"restored to the portal (removed at {format_time(existing.removed_at)})")
    if not details:
        return []
    return [NetworkChange("update", entry.id, entry.name, f"update network {entry.id}: {'; '.join(details)}")]


def _plan_membership(
    network_id: str, entry: MembershipEntry, existing: Membership | None, current: list[Activation]
) -> list[LoadAction]:
    label = f"{network_id}/{entry.node}"
    actions: list[LoadAction] = []
    if existing is None:
        actions.append(MembershipChange("add", network_id, entry.node, entry.owner, entry.name, entry.state, True,
                                        f"add membership {label} ({entry.state})"))
    else:
        details = [
            f"{field} {_text(old)} -> {_text(new)}"
            for field, old, new in (("state", existing.state, entry.state), ("owner", existing.owner, entry.owner),
                                    ("name", existing.name, entry.name))
            if old != new
        ]
        if existing.removed_at is not None:
            details.append(f"restored to the portal (removed at {format_time(existing.removed_at)})")
        if details:
            is_state_changed = existing.state != entry.state or existing.removed_at is not None
            actions.append(MembershipChange("update", network_id, entry.node, entry.owner, entry.name, entry.state,
                                            is_state_changed, f"update membership {label}: {'; '.join(details)}"))

    wanted = {(activation.start, activation.expires) for activation in entry.activations}
    have = {(activation.starts_at, activation.expires_at): activation for activation in current}
    for starts_at, expires_at in sorted(wanted - have.keys()):
        actions.append(ActivationChange("add", network_id, entry.node, starts_at, expires_at, None,
                                        f"add activation {label} {format_time(starts_at)} to {format_time(expires_at)}"))
    for key in sorted(have.keys() - wanted):
        actions.append(_activation_removal(network_id, entry.node, have[key], "not in the file"))
    return actions


def _plan_membership_removal(existing: Membership, current: list[Activation]) -> list[LoadAction]:
    label = f"{existing.network_id}/{existing.node_id}"
    actions: list[LoadAction] = [
        MembershipChange("remove", existing.network_id, existing.node_id, existing.owner, existing.name,
                         existing.state, True, f"remove membership {label}: the member must lose access")
    ]
    for activation in sorted(current, key=lambda row: (row.starts_at, row.expires_at)):
        actions.append(_activation_removal(existing.network_id, existing.node_id, activation, "membership removed"))
    return actions


def _activation_removal(network_id: str, node_id: str, activation: Activation, reason: str) -> ActivationChange:
    return ActivationChange(
        "remove", network_id, node_id, activation.starts_at, activation.expires_at, activation.id,
        f"remove activation {network_id}/{node_id} {format_time(activation.starts_at)} "
        f"to {format_time(activation.expires_at)} ({reason})",
    )


def apply_load(session: Session, plan: LoadPlan, *, now: datetime) -> None:
    """Make the planned changes in ``session`` and flush them; the caller commits or rolls back.

    The plan must come from ``plan_load`` on the same database, made while
    holding the lock that keeps other ztctl runs out.
    """
    _require_aware(now)
    if not plan.has_changes:
        return
    memberships = {(row.network_id, row.node_id): row for row in session.scalars(select(Membership))}
    for action in plan.actions:
        if isinstance(action, NetworkChange):
            _apply_network_change(session, action, now)
        elif isinstance(action, MembershipChange):
            _apply_membership_change(session, action, memberships, now)
        else:
            _apply_activation_change(session, action, memberships, now)
    session.flush()


def _apply_network_change(session: Session, action: NetworkChange, now: datetime) -> None:
    if action.action == "add":
        session.add(Network(id=action.network_id, name=action.name, created_at=now, updated_at=now))
        return
    network = session.get_one(Network, action.network_id)
    network.name = action.name
    network.removed_at = now if action.action == "remove" else None
    network.updated_at = now


def _apply_membership_change(
    session: Session, action: MembershipChange, memberships: dict[tuple[str, str], Membership], now: datetime
) -> None:
    key = (action.network_id, action.node_id)
    if action.action == "add":
        membership = Membership(network_id=action.network_id, node_id=action.node_id, state_changed_at=now,
                                created_at=now)
        session.add(membership)
        memberships[key] = membership
    else:
        membership = memberships[key]
    membership.owner = action.owner
    membership.name = action.name
    membership.state = action.state
    membership.removed_at = now if action.action == "remove" else None
    if action.is_state_changed:
        membership.state_changed_at = now
    membership.updated_at = now


def _apply_activation_change(
    session: Session, action: ActivationChange, memberships: dict[tuple[str, str], Membership], now: datetime
) -> None:
    if action.action == "add":
        membership = memberships[(action.network_id, action.node_id)]
        session.add(Activation(membership=membership, starts_at=action.starts_at, expires_at=action.expires_at,
                               created_at=now))
        return
    assert action.activation_id is not None
    activation = session.get_one(Activation, action.activation_id)
    activation.removed_at = now
    if activation.ended_at is None:
        activation.ended_at = now
        activation.end_reason = END_REASON_REMOVED
