"""Record accepted differences, and who ran each run.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04

- ``acknowledgements``: an operator accepts a known difference between the
  portal and the controller until a time, with a reason.
- ``runs.user``: the operating-system user that started the run, so the
  history can say who acted.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "acknowledgements",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("network_id", sa.String(16), nullable=False),
        sa.Column("node_id", sa.String(10), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_acknowledgements")),
    )
    op.create_index("ix_acknowledgements_network_node", "acknowledgements", ["network_id", "node_id"])
    with op.batch_alter_table("runs") as table:
        table.add_column(sa.Column("user", sa.String(255), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("runs") as table:
        table.drop_column("user")
    op.drop_table("acknowledgements")
