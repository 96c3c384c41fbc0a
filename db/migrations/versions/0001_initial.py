"""Runs, sweeps, per-epoch rows and per-step metrics.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sweep",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("base_config", sa.JSON, nullable=False),
        sa.Column("factors", sa.JSON, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "run",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("config_hash", sa.String(32), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("sweep_id", sa.Integer, sa.ForeignKey("sweep.id", ondelete="SET NULL")),
        sa.Column("parent_id", sa.Integer, sa.ForeignKey("run.id", ondelete="SET NULL")),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("device", sa.String(64)),
        sa.Column("pid", sa.Integer),
        sa.Column("host", sa.String(255)),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float),
        sa.Column("finished_at", sa.Float),
        sa.Column("heartbeat_at", sa.Float),
        sa.Column("error", sa.Text),
        sa.Column("notes", sa.Text, nullable=False),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("epochs_done", sa.Integer, nullable=False),
        sa.Column("best_epoch", sa.Integer),
        sa.Column("best_val_acc", sa.Float),
        sa.Column("best_val_f1", sa.Float),
        sa.Column("best_val_auc", sa.Float),
        sa.Column("last_step", sa.Integer, nullable=False),
        sa.Column("summary", sa.JSON, nullable=False),
    )
    op.create_index("ix_run_status", "run", ["status"])
    op.create_index("ix_run_config_hash", "run", ["config_hash"])
    op.create_index("ix_run_sweep_id", "run", ["sweep_id"])
    op.create_table(
        "epoch",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("run.id", ondelete="CASCADE"), nullable=False),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("train_loss", sa.Float),
        sa.Column("train_acc", sa.Float),
        sa.Column("val_loss", sa.Float),
        sa.Column("val_acc", sa.Float),
        sa.Column("sensitivity", sa.Float),
        sa.Column("specificity", sa.Float),
        sa.Column("f1", sa.Float),
        sa.Column("auc", sa.Float),
        sa.Column("confusion", sa.JSON, nullable=False),
        sa.Column("lr", sa.Float),
        sa.Column("seconds", sa.Float),
        sa.Column("images_per_s", sa.Float),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.UniqueConstraint("run_id", "epoch", name="uq_epoch_run_epoch"),
    )
    op.create_table(
        "step_metric",
        sa.Column("run_id", sa.Integer, sa.ForeignKey("run.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("step", sa.Integer, primary_key=True),
        sa.Column("value", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("step_metric")
    op.drop_table("epoch")
    op.drop_table("run")
    op.drop_table("sweep")
