"""Read the portal's intent and read and write the controller cache.

Reads return frozen views, not ORM objects, so that a plan made from them
cannot change the database by accident and can be compared with a fresh read
right before an action.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import String, cast, delete, func, insert, select, update
from sqlalchemy.orm import Session, load_only, selectinload

from ztctl.controller.base import (
    ControllerMember,
    ControllerNetwork,
    is_network_id,
    is_node_id,
)
from ztctl.errors import UnreadableTime
from ztctl.portal.models import (
    Activation,
    ControllerMemberCache,
    ControllerNetworkCache,
    MemberDeletion,
    Membership,
    Network,
)
from ztctl.portal.portal_document import short_repr


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

        A membership with no activations is as its ``state`` sets it. One with
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


# Rows that another program wrote to the portal may not follow ztctl's rules.
# Access states from the most to the least restrictive: when two rows claim
# one member, the more restrictive one wins, so a bad row never opens access.
_RESTRICTIVENESS = {"removed": 0, "inactive": 1}


def managed_networks(session: Session, problems: list[str]) -> list[Network]:
    """Return the networks the portal manages; a row with a malformed ID is skipped and described in ``problems``."""
    # Only the columns used: a broken time in another column of a network row
    # must not stop every network.
    statement = (
        select(Network)
        .where(Network.removed_at.is_(None))
        .options(load_only(Network.id, Network.name, Network.removed_at))
        .order_by(Network.id)
    )
    _report_unreadable_removals(session, problems)
    networks = []
    for network in session.scalars(statement):
        if is_network_id(network.id):
            networks.append(network)
        else:
            problems.append(
                f"portal network {network.id!r} skipped: a network ID must be 16 lower-case hex digits; "
                "fix the row (ztctl portal load stores IDs in lower case)"
            )
    return networks


def _report_unreadable_removals(session: Session, problems: list[str]) -> None:
    """Describe networks whose ``removed_at`` contains text that is not a time.

    Such a row is not NULL, so it reads as removed and would quietly stop
    being managed. It is reported instead, on every run, until it is fixed.
    """
    if session.get_bind().dialect.name != "sqlite":
        return  # PostgreSQL stores only valid times in the column
    removed = select(Network.id, cast(Network.removed_at, String)).where(Network.removed_at.is_not(None))
    for network_id, text in session.execute(removed):
        try:
            datetime.fromisoformat(str(text))
        except ValueError:
            problems.append(
                f"portal network {network_id!r} has removed_at {short_repr(text)}, which is not a time, so it is "
                "neither managed nor known to be removed; set removed_at to NULL to manage it, or to a time"
            )


def memberships_by_node(
    session: Session, network_id: str, problems: list[str], *, skip_unreadable: bool = False
) -> dict[str, MembershipView]:
    """Return every membership of a network, removed ones included, keyed by lower-case node ID.

    Two queries, whatever the number of memberships. A row whose node ID is
    malformed is skipped, and one that repeats a node ID in another case
    yields to the more restrictive of the two; both are described in ``problems``.
    A membership with a time that cannot be read raises ``UnreadableTime``,
    or with ``skip_unreadable`` is left out and described in ``problems``.
    """
    statement = (
        select(Membership)
        .where(Membership.network_id == network_id)
        .options(selectinload(Membership.activations))
    )
    try:
        rows = list(session.scalars(statement))
    except UnreadableTime:
        if not skip_unreadable:
            raise
        session.rollback()
        rows = _readable_memberships(session, statement, problems)
    views: dict[str, MembershipView] = {}
    for row in rows:
        node_id = (row.node_id or "").lower()
        if not is_node_id(node_id):
            problems.append(
                f"membership {row.id} on network {network_id} skipped: node ID {row.node_id!r} "
                "is not 10 hex digits; fix the portal row"
            )
            continue
        view = _view(row, node_id)
        if node_id in views:
            problems.append(
                f"network {network_id} has two memberships for node {node_id} (rows {views[node_id].id} "
                f"and {row.id}); the more restrictive one is used; remove the other"
            )
            view = _more_restrictive(views[node_id], view)
        views[node_id] = view
    return views


def membership_view(session: Session, network_id: str, node_id: str) -> MembershipView | None:
    """Re-read one membership straight from the database, bypassing the session's identity map."""
    statement = (
        select(Membership)
        .where(Membership.network_id == network_id, func.lower(Membership.node_id) == node_id)
        .options(selectinload(Membership.activations))
        .execution_options(populate_existing=True)
    )
    views = [_view(row, node_id) for row in session.scalars(statement)]
    if not views:
        return None
    chosen = views[0]
    for view in views[1:]:
        chosen = _more_restrictive(chosen, view)
    return chosen


def _more_restrictive(first: MembershipView, second: MembershipView) -> MembershipView:
    def rank(view: MembershipView) -> int:
        if view.removed_at is not None:
            return _RESTRICTIVENESS["removed"]
        return _RESTRICTIVENESS.get(view.state, 2)

    return second if rank(second) < rank(first) else first


def memberships_with_expired_activations(
    session: Session, now: datetime, problems: list[str]
) -> list[MembershipView]:
    """Return the memberships of managed networks that still have an open activation past its expiry.

    Rows with a malformed network or node ID are skipped and described in ``problems``.
    """
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
    try:
        rows = list(session.scalars(statement))
    except UnreadableTime:
        # One row with a time that cannot be read must not hold back every
        # other expiry: load the memberships one at a time and skip that one.
        session.rollback()
        rows = _readable_memberships(session, statement, problems)
    views = []
    for row in rows:
        node_id = (row.node_id or "").lower()
        if is_network_id(row.network_id) and is_node_id(node_id):
            views.append(_view(row, node_id))
        else:
            problems.append(
                f"membership {row.id} ({row.network_id!r}, {row.node_id!r}) has an expired activation "
                "but a malformed network or node ID, so it cannot be revoked; fix the portal row"
            )
    return views


def _readable_memberships(session: Session, statement: Any, problems: list[str]) -> list[Membership]:
    ids = session.scalars(statement.with_only_columns(Membership.id)).all()
    rows = []
    for membership_id in ids:
        try:
            rows.extend(session.scalars(statement.where(Membership.id == membership_id)))
        except UnreadableTime as exc:
            session.rollback()
            problems.append(
                f"membership {membership_id} skipped: {exc}, so its expired activations cannot be ended; {exc.hint}"
            )
    return rows


def _view(row: Membership, node_id: str | None = None) -> MembershipView:
    activations = tuple(
        ActivationView(a.id, a.starts_at, a.expires_at, a.ended_at)
        for a in row.activations
        if a.removed_at is None
    )
    return MembershipView(
        id=row.id,
        network_id=row.network_id,
        node_id=node_id or row.node_id,
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


def record_deletion(
    session: Session, network_id: str, node_id: str, now: datetime, *, run_id: int | None, reason: str
) -> None:
    """Leave a tombstone for a member deleted from the controller, and mark its membership purged."""
    session.add(MemberDeletion(network_id=network_id, node_id=node_id, deleted_at=now, run_id=run_id, reason=reason))
    membership = session.scalars(
        select(Membership).where(Membership.network_id == network_id, Membership.node_id == node_id)
    ).one_or_none()
    if membership is not None:
        membership.purged_at = now


def deletions_by_node(session: Session, network_id: str, node_id: str | None = None) -> dict[str, datetime]:
    """Return when ztctl last deleted each member of a network that it ever deleted, or only ``node_id``."""
    statement = (
        select(MemberDeletion.node_id, func.max(MemberDeletion.deleted_at))
        .where(MemberDeletion.network_id == network_id)
        .group_by(MemberDeletion.node_id)
    )
    if node_id is not None:
        statement = statement.where(MemberDeletion.node_id == node_id)
    return {node_id: _aware(deleted_at) for node_id, deleted_at in session.execute(statement)}


def _aware(value: datetime) -> datetime:
    # An aggregate bypasses the column type, so SQLite hands back a naive UTC time.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


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


# The cache's name columns hold 200 characters; a controller stores longer
# names, and a name is only shown to people, so the cache keeps its start.
_NAME_LENGTH = 200


def _cache_fields(member: ControllerMember) -> dict[str, object]:
    return {
        "authorized": member.authorized,
        "active_bridge": member.active_bridge,
        "revision": member.revision,
        "name": member.name[:_NAME_LENGTH] if member.name else member.name,
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
    read_in_full: bool = True,
    refresh_after: timedelta | None = None,
) -> CacheChanges:
    """Make the cache hold exactly ``members`` for the network, writing only rows that changed.

    One query reads the network's rows; inserts and updates go out as bulk
    statements, so the cost does not grow with one round trip per member.
    ``read_in_full`` says no member was reused from the cache, which restarts
    the cache's age (at most once per ``refresh_after``, so that an unchanged
    network rewrites nothing). With ``dry_run`` the changes are only counted.
    """
    existing = {
        row.node_id: row
        for row in session.scalars(
            select(ControllerMemberCache).where(ControllerMemberCache.network_id == network.id)
        )
    }
    inserts: list[dict[str, object]] = []
    updates: list[dict[str, object]] = []
    for member in members:
        fields = _cache_fields(member)
        row = existing.get(member.node_id)
        if row is None:
            inserts.append({"network_id": network.id, "node_id": member.node_id, "synced_at": now, **fields})
        elif any(getattr(row, name) != value for name, value in fields.items()):
            updates.append({"network_id": network.id, "node_id": member.node_id, "synced_at": now, **fields})
    seen = {member.node_id for member in members}
    vanished = [node for node in existing if node not in seen]
    changes = CacheChanges(len(inserts), len(updates), len(vanished))
    if dry_run:
        return changes

    # The rows read above would be stale after the bulk statements.
    session.expunge_all()
    if inserts:
        session.execute(insert(ControllerMemberCache), inserts)
    if updates:
        session.execute(update(ControllerMemberCache), updates)
    if vanished:
        session.execute(
            delete(ControllerMemberCache).where(
                ControllerMemberCache.network_id == network.id,
                ControllerMemberCache.node_id.in_(vanished),
            )
        )
    _write_network_row(
        session, network, len(members), now, changed=changes.total > 0,
        read_in_full=read_in_full, refresh_after=refresh_after,
    )
    return changes


def _write_network_row(
    session: Session,
    network: ControllerNetwork,
    member_count: int,
    now: datetime,
    *,
    changed: bool,
    read_in_full: bool,
    refresh_after: timedelta | None,
) -> None:
    name = network.name[:_NAME_LENGTH]
    row = session.get(ControllerNetworkCache, network.id)
    if row is None:
        session.add(
            ControllerNetworkCache(
                id=network.id, name=name, private=network.private, member_count=member_count,
                synced_at=now, members_read_at=now if read_in_full else None,
            )
        )
        return
    if changed or (row.name, row.private, row.member_count) != (name, network.private, member_count):
        row.name = name
        row.private = network.private
        row.member_count = member_count
        row.synced_at = now
    stale = row.members_read_at is None or refresh_after is None or now - row.members_read_at >= refresh_after
    if read_in_full and stale:
        row.members_read_at = now


def network_row_is_stale(session: Session, network_id: str, now: datetime, refresh_after: timedelta) -> bool:
    """Tell whether the network's cache row is missing or its full-read time is due to be renewed."""
    read_at = members_read_at(session, network_id)
    return read_at is None or now - read_at >= refresh_after


def members_read_at(session: Session, network_id: str) -> datetime | None:
    """Return when the network's members were last read in full, or None if never."""
    row = session.get(ControllerNetworkCache, network_id)
    return row.members_read_at if row is not None else None


def update_cached_member(session: Session, member: ControllerMember, now: datetime) -> None:
    """Record a member's state as returned by a write, so the cache stays true between syncs."""
    row = session.get(ControllerMemberCache, (member.network_id, member.node_id))
    if row is None:
        session.add(
            ControllerMemberCache(
                network_id=member.network_id, node_id=member.node_id, synced_at=now, **_cache_fields(member)
            )
        )
        _count_members(session, member.network_id, 1, now)
        return
    for name, value in _cache_fields(member).items():
        setattr(row, name, value)
    row.synced_at = now


def forget_cached_member(session: Session, network_id: str, node_id: str, now: datetime) -> None:
    deleted = session.execute(
        delete(ControllerMemberCache).where(
            ControllerMemberCache.network_id == network_id, ControllerMemberCache.node_id == node_id
        )
    ).rowcount
    if deleted:
        _count_members(session, network_id, -deleted, now)


def _count_members(session: Session, network_id: str, change: int, now: datetime) -> None:
    """Keep the network's member count true after this run's own create or delete, so the next sync finds nothing to rewrite."""
    row = session.get(ControllerNetworkCache, network_id)
    if row is not None:
        row.member_count += change
        row.synced_at = now


def unknown_flags(session: Session, network_id: str) -> set[str]:
    """Return the cached members of a network that are flagged as unknown."""
    statement = select(ControllerMemberCache.node_id).where(
        ControllerMemberCache.network_id == network_id, ControllerMemberCache.unknown_since.is_not(None)
    )
    return set(session.scalars(statement))


def flag_unknown_members(session: Session, network_id: str, unknown_nodes: set[str], now: datetime) -> set[str]:
    """Set ``unknown_since`` on newly unknown members and clear it on ones that now have a membership.

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
