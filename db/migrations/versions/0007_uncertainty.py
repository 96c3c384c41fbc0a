"""The uncertainty of an evaluation: its bootstrap intervals (with the seed, resamples and level
that made them), and its origin (``training``: the validation predictions the worker recorded at
the run's best epoch; ``evaluate``: a re-evaluation of a checkpoint, or a prediction).

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("evaluation") as batch:
        batch.add_column(sa.Column("intervals", sa.JSON, nullable=True))
        batch.add_column(sa.Column("origin", sa.String(16), nullable=False, server_default="evaluate"))


def downgrade() -> None:
    with op.batch_alter_table("evaluation") as batch:
        batch.drop_column("origin")
        batch.drop_column("intervals")
