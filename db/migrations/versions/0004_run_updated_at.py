"""A run's last change time, so the app polls only runs that changed.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("run") as batch:
        batch.add_column(sa.Column("updated_at", sa.Float, nullable=False, server_default="0"))
    op.execute("UPDATE run SET updated_at = COALESCE(finished_at, started_at, created_at)")
    op.create_index("ix_run_updated_at", "run", ["updated_at"])


def downgrade() -> None:
    op.drop_index("ix_run_updated_at", "run")
    with op.batch_alter_table("run") as batch:
        batch.drop_column("updated_at")
