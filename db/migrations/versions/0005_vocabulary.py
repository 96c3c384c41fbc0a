"""Matthews correlation and balanced accuracy for epochs and evaluations; a run's phase, its
worker's start time, backend and job id; recorded submissions.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

NEW_METRICS = ("mcc", "balanced_acc")


def upgrade() -> None:
    for table in ("epoch", "evaluation"):
        with op.batch_alter_table(table) as batch:
            for name in NEW_METRICS:
                batch.add_column(sa.Column(name, sa.Float, nullable=True))
    with op.batch_alter_table("run") as batch:
        batch.add_column(sa.Column("phase", sa.String(200), nullable=True))
        batch.add_column(sa.Column("pid_started_at", sa.Float, nullable=True))
        batch.add_column(sa.Column("backend", sa.String(16), nullable=True))
        batch.add_column(sa.Column("job_id", sa.String(64), nullable=True))
    op.create_table(
        "submission",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("run_ids", sa.JSON, nullable=False),
        sa.Column("checkpoint", sa.String(16), nullable=False),
        sa.Column("tta", sa.String(16), nullable=False),
        sa.Column("test_csv", sa.Text, nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("score", sa.Float, nullable=True),
        sa.Column("score_source", sa.String(16), nullable=True),
        sa.Column("scored_at", sa.Float, nullable=True),
        sa.Column("notes", sa.Text, nullable=False, server_default=""),
    )


def downgrade() -> None:
    op.drop_table("submission")
    with op.batch_alter_table("run") as batch:
        for name in ("job_id", "backend", "pid_started_at", "phase"):
            batch.drop_column(name)
    for table in ("evaluation", "epoch"):
        with op.batch_alter_table(table) as batch:
            for name in NEW_METRICS:
                batch.drop_column(name)
