"""Read the portal's intent and read and write the controller cache.

Reads return frozen views, not ORM objects, so that a plan made from them
cannot change the database by accident and can be compared with a fresh read
right before an action.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, selectinload

from ztctl.controller.base import ControllerMember, ControllerNetwork
from ztctl.portal.models import (
    Activation,
    ControllerMemberCache,
    ControllerNetworkCache,
    Membership,
    Network,
)


@dataclass(frozen=True, slots=True)
class ActivationView:
    id: int
    starts_at: datetime
    expires_at: datetime
    ended_at: datetime | None

    def is_current(self, now: datetime) -> bool:
        return self.ended_at is None and self.starts_at <= now < self.expires_at


@dataclass(frozen=True, slots=True)
class MembershipView:
    id: int
    network_id: str
    node_id: str
    owner: str | None
    name: str | None
    state: str
    removed_at: datetime | None
    state_changed_at: datetime
    purged_at: datetime | None
    activations: tuple[ActivationView, ...]

    def access_state(self, now: datetime) -> str:
        """Return ``active`` when the portal grants access now, otherwise why not.

        A membership with no activations is as its ``state`` says. One with
        activations is active only while one of them is current, and an
        ``inactive`` state always wins, so an operator can switch a device
        off without touching its activations.
        """
        if self.removed_at is not None:
            return "removed"
        if self.state != "active":
            return "inactive"
        if not self.activations:
            return "active"
        if any(activation.is_current(now) for activation in self.activations):
            return "active"
        if any(activation.ended_at is None and activation.starts_at > now for activation in self.activations):
            return "scheduled"
        return "expired"

    def grants_access(self, now: datetime) -> bool:
        return self.access_state(now) == "active"

    def expired_open_activations(self, now: datetime) -> tuple[ActivationView, ...]:
        return tuple(a for a in self.activations if a.ended_at is None and a.expires_at <= now)


def managed_networks(session: Session) -> list[Network]:
    statement = select(Network).where(Network.removed_at.is_(None)).order_by(Network.id)
    return list(session.scalars(statement))


def memberships_by_node(session: Session, network_id: str) -> dict[str, MembershipView]:
    """Return every membership of a network, removed ones included, in two queries."""
    statement = (
        select(Membership)
        .where(Membership.network_id == network_id)
        .options(selectinload(Membership.activations))
    )
    return {row.node_id: _view(row) for row in session.scalars(statement)}


def membership_view(session: Session, network_id: str, node_id: str) -> MembershipView | None:
    """Re-read one membership straight from the database, bypassing the session's identity map."""
    statement = (
        select(Membership)
        .where(Membership.network_id == network_id, Membership.node_id == node_id)
        .options(selectinload(Membership.activations))
        .execution_options(populate_existing=True)
    )
    row = session.scalars(statement).one_or_none()
    return _view(row) if row is not None else None


def memberships_with_expired_activations(session: Session, now: datetime) -> list[MembershipView]:
    """Return the memberships of managed networks that still have an open activation past its expiry."""
    expired = (
        select(Activation.membership_id)
        .where(
            Activation.ended_at.is_(None),
            Activation.removed_at.is_(None),
            Activation.expires_at <= now,
        )
        .distinct()
    )
    statement = (
        select(Membership)
        .join(Network, Network.id == Membership.network_id)
        .where(Membership.id.in_(expired), Network.removed_at.is_(None))
        .options(selectinload(Membership.activations))
        .order_by(Membership.network_id, Membership.node_id)
    )
    return [_view(row) for row in session.scalars(statement)]


def _view(row: Membership) -> MembershipView:
    activations = tuple(
        ActivationView(a.id, a.starts_at, a.expires_at, a.ended_at)
        for a in row.activations
        if a.removed_at is None
    )
    return MembershipView(
        id=row.id,
        network_id=row.network_id,
        node_id=row.node_id,
        owner=row.owner,
        name=row.name,
        state=row.state,
        removed_at=row.removed_at,
        state_changed_at=row.state_changed_at,
        purged_at=row.purged_at,
        activations=activations,
    )


def end_activations(
    session: Session, membership_id: int, activation_ids: tuple[int, ...], now: datetime, *, mark_inactive: bool
) -> int:
    """End the given activations, and mark the membership inactive if asked; return how many were ended."""
    ended = 0
    for activation in session.scalars(select(Activation).where(Activation.id.in_(activation_ids))):
        if activation.ended_at is None:
            activation.ended_at = now
            activation.end_reason = "expired"
            ended += 1
    membership = session.get(Membership, membership_id)
    if mark_inactive and membership is not None and membership.state != "inactive":
        membership.state = "inactive"
        membership.state_changed_at = now
    return ended


def mark_purged(session: Session, network_id: str, node_id: str, now: datetime) -> None:
    membership = session.scalars(
        select(Membership).where(Membership.network_id == network_id, Membership.node_id == node_id)
    ).one_or_none()
    if membership is not None:
        membership.purged_at = now


# The controller cache ------------------------------------------------------


def cached_members(session: Session, network_id: str) -> dict[str, ControllerMember]:
    rows = session.scalars(select(ControllerMemberCache).where(ControllerMemberCache.network_id == network_id))
    return {row.node_id: _member_from_cache(row) for row in rows}


def _member_from_cache(row: ControllerMemberCache) -> ControllerMember:
    return ControllerMember(
        network_id=row.network_id,
        node_id=row.node_id,
        authorized=row.authorized,
        active_bridge=row.active_bridge,
        revision=row.revision,
        created_at=row.member_created_at,
        last_authorized_at=row.last_authorized_at,
        last_deauthorized_at=row.last_deauthorized_at,
        name=row.name,
        ip_assignments=tuple(row.ip_assignments or ()),
    )


def _cache_fields(member: ControllerMember) -> dict[str, object]:
    return {
        "authorized": member.authorized,
        "active_bridge": member.active_bridge,
        "revision": member.revision,
        "name": member.name,
        "ip_assignments": list(member.ip_assignments),
        "member_created_at": member.created_at,
        "last_authorized_at": member.last_authorized_at,
        "last_deauthorized_at": member.last_deauthorized_at,
    }


@dataclass
class CacheChanges:
    inserted: int = 0
    updated: int = 0
    deleted: int = 0

    @property
    def total(self) -> int:
        return self.inserted + self.updated + self.deleted


def write_network_cache(
    session: Session,
    network: ControllerNetwork,
    members: list[ControllerMember],
    now: datetime,
    *,
    dry_run: bool = False,
) -> CacheChanges:
    """Make the cache hold exactly ``members`` for the network, rewriting only rows that changed.

    With ``dry_run`` the changes are counted and nothing is touched.
    """
    changes = CacheChanges()
    existing = {
        row.node_id: row
        for row in session.scalars(
            select(ControllerMemberCache).where(ControllerMemberCache.network_id == network.id)
        )
    }
    for member in members:
        row = existing.get(member.node_id)
        fields = _cache_fields(member)
        if row is None:
            changes.inserted += 1
            if not dry_run:
                session.add(
                    ControllerMemberCache(network_id=network.id, node_id=member.node_id, synced_at=now, **fields)
                )
        elif any(getattr(row, name) != value for name, value in fields.items()):
            changes.updated += 1
            if not dry_run:
                for name, value in fields.items():
                    setattr(row, name, value)
                row.synced_at = now
    seen = {member.node_id for member in members}
    vanished = [node for node in existing if node not in seen]
    changes.deleted = len(vanished)
    if dry_run:
        return changes
    if vanished:
        session.execute(
            delete(ControllerMemberCache).where(
                ControllerMemberCache.network_id == network.id,
                ControllerMemberCache.node_id.in_(vanished),
            )
        )
    _write_network_row(session, network, len(members), now)
    return changes


def _write_network_row(session: Session, network: ControllerNetwork, member_count: int, now: datetime) -> None:
    row = session.get(ControllerNetworkCache, network.id)
    if row is None:
        session.add(
            ControllerNetworkCache(
                id=network.id, name=network.name, private=network.private, member_count=member_count, synced_at=now
            )
        )
        return
    if (row.name, row.private, row.member_count) != (network.name, network.private, member_count):
        row.name = network.name
        row.private = network.private
        row.member_count = member_count
    row.synced_at = now


def update_cached_member(session: Session, member: ControllerMember, now: datetime) -> None:
    """Record a member's state as returned by a write, so the cache stays true between syncs."""
    row = session.get(ControllerMemberCache, (member.network_id, member.node_id))
    if row is None:
        session.add(
            ControllerMemberCache(
                network_id=member.network_id, node_id=member.node_id, synced_at=now, **_cache_fields(member)
            )
        )
        return
    for name, value in _cache_fields(member).items():
        setattr(row, name, value)
    row.synced_at = now


def forget_cached_member(session: Session, network_id: str, node_id: str) -> None:
    session.execute(
        delete(ControllerMemberCache).where(
            ControllerMemberCache.network_id == network_id, ControllerMemberCache.node_id == node_id
        )
    )


def flag_unknown_members(session: Session, network_id: str, unknown_nodes: set[str], now: datetime) -> set[str]:
    """Set ``unknown_since`` on newly unknown members and clear it on ones the portal now knows.

    Returns the node IDs flagged by this call, so a caller can warn once per member, not once per run.
    """
    newly_flagged = set()
    rows = session.scalars(select(ControllerMemberCache).where(ControllerMemberCache.network_id == network_id))
    for row in rows:
        is_unknown = row.node_id in unknown_nodes
        if is_unknown and row.unknown_since is None:
            row.unknown_since = now
            newly_flagged.add(row.node_id)
        elif not is_unknown and row.unknown_since is not None:
            row.unknown_since = None
    return newly_flagged
