"""Create the portal, cache and run tables.

Revision ID: 0001
Revises:
Create Date: 2026-05-01

Written by hand to match ``ztctl.portal.models``. Constraint and index names
follow the models' naming convention, spelled out with ``op.f`` because the
migration does not see that convention.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _timestamp(name: str, *, nullable: bool) -> sa.Column[sa.DateTime]:
    """Return a timezone-aware timestamp column, the type behind the models' UTCDateTime."""
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    _create_portal_tables()
    _create_cache_tables()
    _create_run_tables()


def _create_portal_tables() -> None:
    op.create_table(
        "networks",
        sa.Column("id", sa.String(16), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        _timestamp("created_at", nullable=False),
        _timestamp("updated_at", nullable=False),
        _timestamp("removed_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_networks")),
    )

    op.create_table(
        "memberships",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("network_id", sa.String(16), nullable=False),
        sa.Column("node_id", sa.String(10), nullable=False),
        sa.Column("owner", sa.String(200), nullable=True),
        sa.Column("name", sa.String(200), nullable=True),
        sa.Column("state", sa.String(8), nullable=False),
        _timestamp("state_changed_at", nullable=False),
        _timestamp("removed_at", nullable=True),
        _timestamp("purged_at", nullable=True),
        _timestamp("created_at", nullable=False),
        _timestamp("updated_at", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_memberships")),
        sa.UniqueConstraint("network_id", "node_id", name=op.f("uq_memberships_network_id")),
        sa.CheckConstraint("state IN ('active', 'inactive')", name=op.f("ck_memberships_state")),
        sa.ForeignKeyConstraint(["network_id"], ["networks.id"], name=op.f("fk_memberships_network_id_networks")),
    )
    op.create_index(op.f("ix_memberships_network_id"), "memberships", ["network_id"])

    op.create_table(
        "activations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("membership_id", sa.Integer(), nullable=False),
        _timestamp("starts_at", nullable=False),
        _timestamp("expires_at", nullable=False),
        _timestamp("ended_at", nullable=True),
        sa.Column("end_reason", sa.String(20), nullable=True),
        _timestamp("removed_at", nullable=True),
        _timestamp("created_at", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_activations")),
        sa.CheckConstraint("expires_at > starts_at", name=op.f("ck_activations_expires_after_start")),
        sa.ForeignKeyConstraint(
            ["membership_id"], ["memberships.id"], name=op.f("fk_activations_membership_id_memberships")
        ),
    )
    op.create_index(op.f("ix_activations_membership_id"), "activations", ["membership_id"])
    op.create_index(op.f("ix_activations_expires_at"), "activations", ["expires_at"])


def _create_cache_tables() -> None:
    op.create_table(
        "zerotier_networks",
        sa.Column("id", sa.String(16), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("private", sa.Boolean(), nullable=False),
        sa.Column("member_count", sa.Integer(), nullable=False),
        _timestamp("synced_at", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_zerotier_networks")),
    )

    op.create_table(
        "zerotier_memberships",
        sa.Column("network_id", sa.String(16), nullable=False),
        sa.Column("node_id", sa.String(10), nullable=False),
        sa.Column("authorized", sa.Boolean(), nullable=False),
        sa.Column("active_bridge", sa.Boolean(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=True),
        sa.Column("ip_assignments", sa.JSON(), nullable=False),
        _timestamp("member_created_at", nullable=True),
        _timestamp("last_authorized_at", nullable=True),
        _timestamp("last_deauthorized_at", nullable=True),
        _timestamp("synced_at", nullable=False),
        _timestamp("unknown_since", nullable=True),
        sa.PrimaryKeyConstraint("network_id", "node_id", name=op.f("pk_zerotier_memberships")),
    )


def _create_run_tables() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("command", sa.String(40), nullable=False),
        sa.Column("mode", sa.String(10), nullable=False),
        _timestamp("started_at", nullable=False),
        _timestamp("finished_at", nullable=True),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(40), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
    )

    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        _timestamp("recorded_at", nullable=False),
        sa.Column("stage", sa.String(20), nullable=False),
        sa.Column("network_id", sa.String(16), nullable=False),
        sa.Column("node_id", sa.String(10), nullable=True),
        sa.Column("action", sa.String(30), nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("before", sa.JSON(), nullable=True),
        sa.Column("after", sa.JSON(), nullable=True),
        sa.Column("revision", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_audit_log_run_id_runs")),
    )
    op.create_index(op.f("ix_audit_log_run_id"), "audit_log", ["run_id"])
    op.create_index("ix_audit_log_network_node", "audit_log", ["network_id", "node_id", "recorded_at"])


def downgrade() -> None:
    op.drop_table("audit_log")
    op.drop_table("runs")
    op.drop_table("zerotier_memberships")
    op.drop_table("zerotier_networks")
    op.drop_table("activations")
    op.drop_table("memberships")
    op.drop_table("networks")
