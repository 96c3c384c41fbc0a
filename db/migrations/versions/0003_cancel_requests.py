"""Cancel requests travel through the database from the CLI or app to the scheduler.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("run") as batch:
        batch.add_column(sa.Column("cancel_requested_at", sa.Float))
    op.create_index("ix_run_queue_order", "run", ["status", "priority", "id"])


def downgrade() -> None:
    op.drop_index("ix_run_queue_order", "run")
    with op.batch_alter_table("run") as batch:
        batch.drop_column("cancel_requested_at")
