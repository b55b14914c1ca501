"""SQLAlchemy models of the portal database.

The portal tables (``networks``, ``memberships``, ``activations``) say who
should have access. ``zerotier_networks`` and ``zerotier_memberships`` cache
what the controller was last seen to hold. ``runs`` and ``audit_log`` record
what ztctl did. Rows are never deleted by ztctl: a network or membership that
leaves the portal gets ``removed_at`` instead, so its history stays readable.

Every time column is timezone-aware UTC on both SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from ztctl.errors import UnreadableTime
from ztctl.portal.portal_document import short_repr

# Stable constraint names, so that Alembic migrations can refer to them on
# both SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utc_now() -> datetime:
    return datetime.now(UTC)


class _CheckedSQLiteDateTime(sqlite.DATETIME):
    """SQLite's datetime type, raising ``UnreadableTime`` for a value it cannot parse.

    SQLite stores whatever text a portal writes into the column, and the
    engine isolates ``UnreadableTime`` to the rows it belongs to.
    """

    def result_processor(self, dialect: Dialect, coltype: object) -> Any:
        parse = super().result_processor(dialect, coltype)
        if parse is None:
            return None

        def process(value: object) -> datetime | None:
            try:
                return parse(value)
            except (ValueError, TypeError):
                raise UnreadableTime(short_repr(value)) from None

        return process


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always returned timezone-aware.

    SQLite has no time zone type, so there the value is stored as naive UTC.
    A naive value is rejected on the way in: guessing its zone is how expiry
    times end up hours off.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(_CheckedSQLiteDateTime())
        return dialect.type_descriptor(self.impl)

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()} cannot be stored: give it a time zone")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON()}


class Network(Base):
    """A ZeroTier network that the portal manages."""

    __tablename__ = "networks"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(default=utc_now, onupdate=utc_now)
    removed_at: Mapped[datetime | None] = mapped_column(default=None)
    """Set when the network left the portal; ztctl no longer touches it."""

    memberships: Mapped[list[Membership]] = relationship(back_populates="network")


class Membership(Base):
    """The portal's record that a device belongs on a network."""

    __tablename__ = "memberships"
    __table_args__ = (
        UniqueConstraint("network_id", "node_id"),
        CheckConstraint("state IN ('active', 'inactive')", name="state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    network_id: Mapped[str] = mapped_column(ForeignKey("networks.id"), index=True)
    node_id: Mapped[str] = mapped_column(String(10))
    owner: Mapped[str | None] = mapped_column(String(200), default=None)
    name: Mapped[str | None] = mapped_column(String(200), default=None)
    state: Mapped[str] = mapped_column(String(8))
    state_changed_at: Mapped[datetime] = mapped_column(default=utc_now)
    """When ``state`` or ``removed_at`` last changed; the purge retention counts from here."""
    removed_at: Mapped[datetime | None] = mapped_column(default=None)
    """Set when the membership left the portal: the member must lose access."""
    purged_at: Mapped[datetime | None] = mapped_column(default=None)
    """When ztctl last deleted this member from the controller."""
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(default=utc_now, onupdate=utc_now)

    network: Mapped[Network] = relationship(back_populates="memberships")
    activations: Mapped[list[Activation]] = relationship(
        back_populates="membership", order_by="Activation.starts_at"
    )


class Activation(Base):
    """A time-limited session that keeps a membership active until ``expires_at``."""

    __tablename__ = "activations"
    __table_args__ = (CheckConstraint("expires_at > starts_at", name="expires_after_start"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    membership_id: Mapped[int] = mapped_column(ForeignKey("memberships.id"), index=True)
    starts_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)
    ended_at: Mapped[datetime | None] = mapped_column(default=None)
    """Set by ``expire`` once the member lost access, or by a portal load that dropped it."""
    end_reason: Mapped[str | None] = mapped_column(String(20), default=None)
    removed_at: Mapped[datetime | None] = mapped_column(default=None)
    """Set when a portal load dropped the activation. One that only expired keeps None here."""
    created_at: Mapped[datetime] = mapped_column(default=utc_now)

    membership: Mapped[Membership] = relationship(back_populates="activations")


class ControllerNetworkCache(Base):
    """What the controller last said about a managed network."""

    __tablename__ = "zerotier_networks"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    private: Mapped[bool] = mapped_column(Boolean)
    member_count: Mapped[int] = mapped_column(Integer, default=0)
    synced_at: Mapped[datetime] = mapped_column(default=utc_now)
    members_read_at: Mapped[datetime | None] = mapped_column(default=None)
    """When every member of the network was last read in full, not reused from the cache by revision."""


class ControllerMemberCache(Base):
    """What the controller last held for one member, written by ``sync``."""

    __tablename__ = "zerotier_memberships"

    network_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    node_id: Mapped[str] = mapped_column(String(10), primary_key=True)
    authorized: Mapped[bool] = mapped_column(Boolean)
    active_bridge: Mapped[bool] = mapped_column(Boolean, default=False)
    revision: Mapped[int] = mapped_column(BigInteger)
    name: Mapped[str | None] = mapped_column(String(200), default=None)
    ip_assignments: Mapped[list[str]] = mapped_column(JSON, default=list)
    member_created_at: Mapped[datetime | None] = mapped_column(default=None)
    last_authorized_at: Mapped[datetime | None] = mapped_column(default=None)
    last_deauthorized_at: Mapped[datetime | None] = mapped_column(default=None)
    synced_at: Mapped[datetime] = mapped_column(default=utc_now)
    unknown_since: Mapped[datetime | None] = mapped_column(default=None)
    """When ``unknown`` first flagged this member as having no membership; None once known."""


class Run(Base):
    """One invocation of ztctl that wrote to the portal or the controller."""

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    command: Mapped[str] = mapped_column(String(40))
    mode: Mapped[str] = mapped_column(String(10))
    started_at: Mapped[datetime] = mapped_column(default=utc_now)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    exit_code: Mapped[int | None] = mapped_column(Integer, default=None)
    counts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    host: Mapped[str] = mapped_column(String(255), default="")
    user: Mapped[str] = mapped_column(String(255), default="", server_default="")
    """The operating-system user that started the run."""
    pid: Mapped[int] = mapped_column(Integer, default=0)
    version: Mapped[str] = mapped_column(String(40), default="")


class AuditEntry(Base):
    """One planned, applied, skipped, refused or failed action, or one audit finding."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_network_node", "network_id", "node_id", "recorded_at"),
        # Every apply run looks for pending writes in a log that only grows.
        Index(
            "ix_audit_log_pending", "id",
            sqlite_where=text("outcome = 'pending'"), postgresql_where=text("outcome = 'pending'"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    recorded_at: Mapped[datetime] = mapped_column(default=utc_now)
    stage: Mapped[str] = mapped_column(String(20))
    network_id: Mapped[str] = mapped_column(String(16))
    node_id: Mapped[str | None] = mapped_column(String(10), default=None)
    action: Mapped[str] = mapped_column(String(30))
    outcome: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(Text, default="")
    detail: Mapped[str | None] = mapped_column(Text, default=None)
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    revision: Mapped[int | None] = mapped_column(BigInteger, default=None)


class MemberDeletion(Base):
    """A member that ztctl deleted from a controller: the tombstone that recognises it if it comes back."""

    __tablename__ = "member_deletions"
    __table_args__ = (Index("ix_member_deletions_network_node", "network_id", "node_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    network_id: Mapped[str] = mapped_column(String(16))
    node_id: Mapped[str] = mapped_column(String(10))
    deleted_at: Mapped[datetime] = mapped_column(default=utc_now)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"), default=None)
    reason: Mapped[str] = mapped_column(Text, default="")


class Acknowledgement(Base):
    """An operator's acceptance of a known difference for one member, until a time.

    Until then no run repairs a difference of the kinds it names, and ``diff``
    and audits do not count it as pending.
    """

    __tablename__ = "acknowledgements"
    __table_args__ = (Index("ix_acknowledgements_network_node", "network_id", "node_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    network_id: Mapped[str] = mapped_column(String(16))
    node_id: Mapped[str] = mapped_column(String(10))
    until: Mapped[datetime]
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    created_by: Mapped[str] = mapped_column(String(255), default="")
    kinds: Mapped[str | None] = mapped_column(String(200), default=None)
    """The drift kinds accepted, comma-separated; None (rows from before kinds were kept) accepts any."""
