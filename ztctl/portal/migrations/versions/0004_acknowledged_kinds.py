"""Tie each acknowledgement to the kinds of difference it accepts, and index pending writes.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05

- ``acknowledgements.kinds``: the drift kinds, comma-separated, that the
  member showed when the acknowledgement was made. A later difference of
  another kind is not covered. Rows made before this revision have none,
  and keep covering every kind until they end.
- ``ix_audit_log_pending``: a partial index on the audit entries whose write
  is still pending. Every apply run looks for them, and the audit log grows
  with every run, so the search must not read the whole log.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("acknowledgements") as table:
        table.add_column(sa.Column("kinds", sa.String(200), nullable=True))
    pending = sa.text("outcome = 'pending'")
    op.create_index("ix_audit_log_pending", "audit_log", ["id"], sqlite_where=pending, postgresql_where=pending)


def downgrade() -> None:
    op.drop_index("ix_audit_log_pending", table_name="audit_log")
    with op.batch_alter_table("acknowledgements") as table:
        table.drop_column("kinds")
