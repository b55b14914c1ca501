"""Record deleted members, widen revisions, and note full member reads.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04

- ``member_deletions``: a device that keeps trying to join comes back as a
  new, unauthorized member after a delete. These rows let a later run
  recognise it instead of deleting it again on every run.
- ``revision`` columns become 64-bit: the controller's revision is a 64-bit
  counter, and PostgreSQL's INTEGER holds only 32 bits.
- ``zerotier_networks.members_read_at``: when the members of a network were
  last read in full, so that reuse of cached members by revision is bounded.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "member_deletions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("network_id", sa.String(16), nullable=False),
        sa.Column("node_id", sa.String(10), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_member_deletions")),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_member_deletions_run_id_runs")),
    )
    op.create_index("ix_member_deletions_network_node", "member_deletions", ["network_id", "node_id"])
    with op.batch_alter_table("zerotier_memberships") as table:
        table.alter_column("revision", type_=sa.BigInteger(), existing_type=sa.Integer(), existing_nullable=False)
    with op.batch_alter_table("audit_log") as table:
        table.alter_column("revision", type_=sa.BigInteger(), existing_type=sa.Integer(), existing_nullable=True)
    with op.batch_alter_table("zerotier_networks") as table:
        table.add_column(sa.Column("members_read_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("zerotier_networks") as table:
        table.drop_column("members_read_at")
    with op.batch_alter_table("audit_log") as table:
        table.alter_column("revision", type_=sa.Integer(), existing_type=sa.BigInteger(), existing_nullable=True)
    with op.batch_alter_table("zerotier_memberships") as table:
        table.alter_column("revision", type_=sa.Integer(), existing_type=sa.BigInteger(), existing_nullable=False)
    op.drop_table("member_deletions")
