"""Run ids are never reused: SQLite's ``run`` table gets AUTOINCREMENT (a deleted run's id, even
the newest one, is never handed to a new run). PostgreSQL's ``run.id`` already takes its values
from a sequence, which never goes back.

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    # The table is rebuilt (SQLite cannot add AUTOINCREMENT in place); db.session.upgrade runs
    # migrations with foreign keys off, so dropping the old table cascades to nothing.
    with op.batch_alter_table("run", recreate="always", table_kwargs={"sqlite_autoincrement": True}):
        pass


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table("run", recreate="always", table_kwargs={"sqlite_autoincrement": False}):
        pass
