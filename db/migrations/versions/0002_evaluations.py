"""Evaluations of checkpoints (test-time augmentation, exports), their predictions, and where
each run ran.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("run") as batch:
        batch.add_column(sa.Column("environment", sa.JSON, nullable=False, server_default="{}"))
    op.create_table(
        "evaluation",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("run.id", ondelete="CASCADE"), nullable=False),
        sa.Column("checkpoint", sa.String(16), nullable=False),
        sa.Column("epoch", sa.Integer),
        sa.Column("split", sa.String(255), nullable=False),
        sa.Column("tta", sa.String(16), nullable=False),
        sa.Column("n", sa.Integer, nullable=False),
        sa.Column("loss", sa.Float),
        sa.Column("acc", sa.Float),
        sa.Column("sensitivity", sa.Float),
        sa.Column("specificity", sa.Float),
        sa.Column("f1", sa.Float),
        sa.Column("auc", sa.Float),
        sa.Column("confusion", sa.JSON),
        sa.Column("output_path", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_evaluation_run", "evaluation", ["run_id"])
    op.create_table(
        "prediction",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("evaluation_id", sa.Integer, sa.ForeignKey("evaluation.id", ondelete="CASCADE"), nullable=False),
        sa.Column("row", sa.Integer, nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("probability", sa.Float, nullable=False),
        sa.Column("predicted", sa.Integer, nullable=False),
        sa.Column("label", sa.Integer),
    )
    op.create_index("ix_prediction_evaluation", "prediction", ["evaluation_id", "row"])


def downgrade() -> None:
    op.drop_table("prediction")
    op.drop_table("evaluation")
    with op.batch_alter_table("run") as batch:
        batch.drop_column("environment")
