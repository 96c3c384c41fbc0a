"""The database: migrations from the first revision, connection settings, the query API.

Every test that takes ``db`` or ``db_url`` runs on SQLite and on PostgreSQL."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text

from db import Database
from db.models import Base
from db.session import SCHEMA_REVISION, alembic_config, upgrade


@pytest.fixture
def db(db_url):
    database = Database(db_url)
    yield database
    database.close()


def test_schema_revision_is_the_newest_migration():
    scripts = ScriptDirectory.from_config(alembic_config("sqlite://"))
    assert scripts.get_current_head() == SCHEMA_REVISION


def schema_of(engine) -> dict:
    """Each table's columns (type, nullability, server default), indexes and foreign keys."""
    from sqlalchemy import inspect

    inspector = inspect(engine)
    return {
        table: (
            sorted((c["name"], str(c["type"]), c["nullable"], str(c.get("default"))) for c in inspector.get_columns(table)),
            sorted((i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in inspector.get_indexes(table)),
            sorted((tuple(f["constrained_columns"]), f["referred_table"], str(f.get("options"))) for f in inspector.get_foreign_keys(table)),
        )
        for table in sorted(inspector.get_table_names())
    }


def test_migrations_build_exactly_the_models(db_url, tmp_path):
    """A new database gets the models' schema at once (``create_schema``); one made by an older
    version is brought there by the migrations. The two are the same schema."""
    migrated = create_engine(db_url)
    upgrade(migrated, db_url, "head")
    with migrated.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []
    fresh_url = f"sqlite:///{tmp_path / 'fresh.db'}" if db_url.startswith("sqlite") else None
    if fresh_url:
        fresh = Database(fresh_url)  # empty: built from the models and stamped
        assert schema_of(fresh.engine) == schema_of(migrated)
        with fresh.engine.connect() as connection:
            autoincrement = connection.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name = 'run'").scalar()
        assert "AUTOINCREMENT" in autoincrement
        fresh.close()
    migrated.dispose()


def test_a_database_made_by_the_first_migration_opens_in_this_version(db_url):
    url = db_url
    engine = create_engine(url)
    upgrade(engine, url, "0001")
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO run (id, name, status, config, config_hash, model, priority, created_at, notes, tags, epochs_done, last_step, summary)"
            " VALUES (1, 'old run', 'completed', '{\"epochs\": 3}', 'abc', 'resnet18', 0, 1.0, '', '[\"v1\"]', 3, 30, '{}')"
        ))
        connection.execute(text(
            "INSERT INTO epoch (run_id, epoch, step, val_acc, confusion, created_at) VALUES (1, 3, 30, 0.9, '[[1,0],[0,1]]', 2.0)"
        ))
    engine.dispose()

    db = Database(url)
    run = db.get_run(1)
    assert (run.name, run.tags, run.environment, run.epochs_done) == ("old run", ["v1"], {}, 3)
    assert db.epochs(1)[0].val_acc == 0.9
    db.add_evaluation(1, checkpoint="best", epoch=3, split="valid", tta="five", metrics={"acc": 0.91}, n=2,
                      predictions=[("a.bmp", 0.9, 1, 1), ("b.bmp", 0.2, 0, 0)])
    assert [p.path for p in db.predictions(db.evaluations(1)[0].id)] == ["a.bmp", "b.bmp"]
    with db.engine.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == SCHEMA_REVISION
    db.close()


def test_sqlite_settings(workspace):
    db = Database(workspace.db_url)
    with db.engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert connection.execute(text("PRAGMA busy_timeout")).scalar() >= 10_000
    db.close()


def _run(db, **kwargs):
    return db.create_run(config={"epochs": 3}, config_hash="h", model="resnet18", name="r", **kwargs)


def test_epochs_keep_the_summary_current_and_resume_truncates(db):
    run = _run(db)
    db.add_epoch(run.id, 1, 10, {"val_acc": 0.8, "f1": 0.79}, best={"epoch": 1, "val_acc": 0.8, "f1": 0.79})
    db.add_epoch(run.id, 2, 20, {"val_acc": 0.7})
    db.add_steps(run.id, [(s, "train_loss", 1.0 / s) for s in range(1, 21)])
    current = db.get_run(run.id)
    assert (current.best_epoch, current.best_val_acc, current.best_val_f1, current.epochs_done, current.last_step) == (1, 0.8, 0.79, 2, 20)
    db.truncate_after(run.id, epoch=1, step=10)
    assert [e.epoch for e in db.epochs(run.id)] == [1]
    assert [s for s, _ in db.steps(run.id)] == list(range(1, 11))
    assert db.steps(run.id, after=8) == [(9, 1 / 9), (10, 0.1)]
    assert db.get_run(run.id).epochs_done == 1


def test_deleting_a_run_deletes_its_rows(db):
    run = _run(db)
    db.add_epoch(run.id, 1, 1, {"val_acc": 0.5})
    db.add_steps(run.id, [(1, "train_loss", 0.5)])
    with db.engine.begin() as connection:
        connection.execute(text("DELETE FROM run WHERE id = :id"), {"id": run.id})
        assert connection.execute(text("SELECT count(*) FROM epoch")).scalar() == 0
        assert connection.execute(text("SELECT count(*) FROM step_metric")).scalar() == 0


def test_a_deleted_runs_id_is_never_given_to_a_new_run(db):
    first, newest = _run(db), _run(db)
    db.delete_run(newest.id)
    assert _run(db).id == newest.id + 1, "the newest run's id was deleted, and not reused"
    db.delete_run(first.id)
    assert _run(db).id == newest.id + 2


def test_a_database_whose_runs_were_deleted_keeps_its_epochs_through_the_id_migration(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    upgrade(engine, url, "0005")
    with engine.begin() as connection:
        for run_id in (1, 2):
            connection.execute(text(
                "INSERT INTO run (id, name, status, config, config_hash, model, priority, created_at, updated_at, notes, tags,"
                " epochs_done, last_step, summary, environment) VALUES (:id, 'r', 'completed', '{}', 'abc', 'resnet18', 0, 1.0,"
                " 1.0, '', '[]', 1, 1, '{}', '{}')"), {"id": run_id})
            connection.execute(text("INSERT INTO epoch (run_id, epoch, step, val_acc, confusion, created_at)"
                                    " VALUES (:id, 1, 1, 0.5, '[[1,0],[0,1]]', 2.0)"), {"id": run_id})
    engine.dispose()
    db = Database(url)  # upgrades to the newest revision: the run table is rebuilt
    assert [len(db.epochs(run_id)) for run_id in (1, 2)] == [1, 1], "the rebuild cascaded to the epochs"
    with db.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert "AUTOINCREMENT" in connection.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name = 'run'").scalar()
    db.delete_run(2)
    assert _run(db).id == 3
    db.close()


def test_unknown_run_is_not_found(db):
    from db import NotFound

    with pytest.raises(NotFound, match="run 42"):
        db.get_run(42)
    with pytest.raises(NotFound):
        db.update_run(42, error="x")


def test_steps_overview_buckets_means_in_sql_and_ends_on_the_newest_step(db):
    run = _run(db)
    assert db.steps_overview(run.id) == []
    db.add_steps(run.id, [(s, "train_loss", float(s)) for s in range(1, 1001)])
    db.add_steps(run.id, [(s, "val_loss", -1.0) for s in range(1, 1001)])  # another key stays out
    short = db.steps_overview(run.id)
    assert short == db.steps(run.id), "a run shorter than max_points comes back whole"
    # 1,000 steps into at most 300 points: buckets of 4 steps, each the mean, the last ending on step 1,000.
    overview = db.steps_overview(run.id, max_points=300)
    assert len(overview) == 250
    assert overview[0] == (4, 2.5) and overview[1] == (8, 6.5) and overview[-1] == (1000, 998.5)
    assert [step for step, _ in overview] == sorted(step for step, _ in overview)
    # An uneven split: 1,001 steps into at most 500 points: buckets of 3, the last one short.
    db.add_steps(run.id, [(1001, "train_loss", 5.0)])
    overview = db.steps_overview(run.id, max_points=500)
    assert len(overview) == 334 and overview[-2] == (999, 998.0) and overview[-1] == (1001, (1000 + 5.0) / 2)


def test_step_values_come_back_exactly_infinities_included(db):
    run = _run(db)
    values = [0.1, 1e-300, 123456.789012345, float("inf"), -float("inf")]
    db.add_steps(run.id, [(i + 1, "train_loss", v) for i, v in enumerate(values)])
    assert db.steps(run.id) == [(i + 1, v) for i, v in enumerate(values)]


def test_a_batch_of_steps_inside_an_epoch_skips_only_its_own_wait_for_the_disk(db):
    """On PostgreSQL a non-durable batch turns synchronous_commit off for its own transaction,
    never for later writes on the same pooled connection; its rows are stored like any others."""
    from sqlalchemy import Table

    from db import dialect
    from db.models import StepMetric

    run = _run(db)
    db.add_steps(run.id, [(1, "train_loss", 0.5), (2, "train_loss", 0.4)], durable=False)
    db.add_steps(run.id, [(3, "train_loss", 0.3)], durable=True)
    assert db.steps(run.id) == [(1, 0.5), (2, 0.4), (3, 0.3)]
    if db.engine.dialect.name != "postgresql":
        return
    table: Table = StepMetric.__table__
    with db.engine.begin() as connection:
        dialect.insert_rows(connection, table, [{"run_id": run.id, "step": 4, "key": "train_loss", "value": 0.2}], durable=False)
        assert connection.exec_driver_sql("SHOW synchronous_commit").scalar() == "off"
    for _ in range(8):  # every connection of the pool, none of them left with it off
        with db.engine.connect() as connection:
            assert connection.exec_driver_sql("SHOW synchronous_commit").scalar() == "on"
    assert db.count_steps(run.id) == 4


def test_a_batch_of_steps_written_twice_is_stored_once(db):
    """A write retried after its commit's answer was lost (a dropped connection) finds its rows
    already there: the retry is a no-op, not an error that fails the run."""
    run = _run(db)
    batch = [(1, "train_loss", 0.5), (2, "train_loss", 0.4)]
    db.add_steps(run.id, batch)
    db.add_steps(run.id, batch)
    db.add_steps(run.id, [(2, "train_loss", 0.4), (3, "train_loss", 0.3)], durable=False)
    assert db.steps(run.id) == [(1, 0.5), (2, 0.4), (3, 0.3)]
    assert db.count_steps(run.id) == 3
