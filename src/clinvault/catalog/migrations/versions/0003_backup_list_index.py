"""An index for the backup list's default page: live backups, newest first.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Without it, the list read every live backup and sorted them for each page (the index
    # on deleted_at alone matches them all): 0.7 ms for 500 backups, growing with each one.
    op.create_index("ix_backups_live_created_at", "backups", ["deleted_at", "created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_backups_live_created_at", table_name="backups")
