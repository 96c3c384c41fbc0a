"""Studies: a sweep's kind (``grid``, or ``study``, an Optuna search) with the study's settings,
and a run's trial number in its study (one run per trial of a study).

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sweep") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="grid"))
        batch.add_column(sa.Column("study", sa.JSON, nullable=True))
        batch.add_column(sa.Column("study_turn_at", sa.Float, nullable=True))
    with op.batch_alter_table("run") as batch:
        batch.add_column(sa.Column("trial", sa.Integer, nullable=True))
    op.create_index("uq_run_sweep_trial", "run", ["sweep_id", "trial"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_run_sweep_trial", table_name="run")
    with op.batch_alter_table("run") as batch:
        batch.drop_column("trial")
    with op.batch_alter_table("sweep") as batch:
        batch.drop_column("study_turn_at")
        batch.drop_column("study")
        batch.drop_column("kind")
