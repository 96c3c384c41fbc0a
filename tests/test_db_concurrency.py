"""Several processes on one database, on SQLite and on PostgreSQL: migrations, batched writers,
racing status changes; and the one line a user gets for a database that cannot be reached."""

from __future__ import annotations

import multiprocessing as mp

import pytest
from sqlalchemy import text

from conftest import cli
from db import Database, DatabaseError, states
from db.session import SCHEMA_REVISION

WRITERS = 4


def _open(url: str, results) -> None:
    try:
        database = Database(url)
        results.put(("ok", database.get_run(1).name if database.run_ids() else None))
        database.close()
    except Exception as exc:  # reported to the test, which fails on it
        results.put(("error", repr(exc)))


def _write_steps(url: str, run_id: int, rows: int, results) -> None:
    database = Database(url, migrate=False)
    for first in range(1, rows + 1, 25):
        database.add_steps(run_id, [(s, "train_loss", float(s)) for s in range(first, min(first + 25, rows + 1))])
        database.heartbeat(run_id)
    database.close()
    results.put(run_id)


def _start(url: str, run_id: int, results) -> None:
    database = Database(url, migrate=False)
    results.put(states.move(database, run_id, "running", only_from=("queued",)))
    database.close()


def _in_processes(target, argument_lists) -> list:
    context = mp.get_context("spawn")
    results = context.Queue()
    processes = [context.Process(target=target, args=(*arguments, results)) for arguments in argument_lists]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    return outcomes


def test_processes_opening_a_new_database_at_once_migrate_it_once(db_url):
    outcomes = _in_processes(_open, [(db_url,)] * WRITERS)
    assert outcomes == [("ok", None)] * WRITERS
    database = Database(db_url)
    with database.engine.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [SCHEMA_REVISION]
    database.close()


def test_concurrent_writers_lose_no_rows(db_url):
    database = Database(db_url)
    run_ids = [database.create_run(config={}, config_hash="h", model="resnet18", name=f"w{i}").id for i in range(WRITERS)]
    rows = 500
    done = _in_processes(_write_steps, [(db_url, run_id, rows) for run_id in run_ids])
    assert sorted(done) == run_ids
    for run_id in run_ids:
        assert database.count_steps(run_id) == rows
        assert [step for step, _ in database.steps(run_id)] == list(range(1, rows + 1))
    database.close()


def test_only_one_of_racing_processes_starts_a_queued_run(db_url):
    database = Database(db_url)
    run = database.create_run(config={}, config_hash="h", model="resnet18", name="contested")
    outcomes = _in_processes(_start, [(db_url, run.id)] * WRITERS)
    assert sorted(outcomes) == [False] * (WRITERS - 1) + [True]
    assert database.get_run(run.id).status == "running"
    database.close()


def test_an_unreachable_server_is_one_line_naming_host_and_port_without_the_password():
    url = "postgresql+psycopg://lab:s3cret-word@127.0.0.1:1/experiments"
    with pytest.raises(DatabaseError) as caught:
        Database(url)
    message = str(caught.value)
    assert "127.0.0.1:1" in message and "s3cret-word" not in message and "\n" not in message
    assert "postgresql+psycopg://lab:***@127.0.0.1:1/experiments" in message


def test_the_command_line_reports_an_unreachable_database_in_one_line(tmp_path):
    url = "postgresql+psycopg://lab:s3cret-word@127.0.0.1:1/experiments"
    (tmp_path / "home").mkdir()
    result = cli("ls", home=tmp_path / "home", check=False, env={"LEUKTUI_DB": url})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "127.0.0.1:1" in lines[0] and "s3cret-word" not in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_every_command_that_reads_works_on_postgresql(pg_url, tmp_path, tiny_data):
    """A run trained in the foreground into PostgreSQL, then listed, shown and re-evaluated."""
    home = tmp_path / "home"
    env = {"LEUKTUI_DB": pg_url}
    cli("run", "--data-dir", str(tiny_data), "--image-size", "16", "--batch-size", "16", "--epochs", "1",
            "--amp", "off", "--workers", "0", "--name", "on-pg", home=home, env=env)
    listing = cli("ls", "--json", home=home, env=env).stdout
    assert '"name": "on-pg"' in listing and '"status": "completed"' in listing
    shown = cli("show", "1", "--json", home=home, env=env).stdout
    assert '"epochs_done": 1' in shown
    database = Database(pg_url)
    assert database.steps_overview(1), "the run's loss curve reads back from PostgreSQL"
    database.close()
    assert not (home / "leuktui.db").exists(), "nothing went to the workspace's SQLite file"


def test_writes_go_on_after_the_server_dropped_the_connections(pg_url):
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    database = Database(pg_url)
    run = database.create_run(config={}, config_hash="h", model="resnet18", name="dropped")
    database.add_steps(run.id, [(1, "train_loss", 1.0)])
    admin = create_engine(make_url(pg_url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        dropped = connection.execute(text(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = :name AND pid <> pg_backend_pid()"
        ), {"name": make_url(pg_url).database}).scalar()
    admin.dispose()
    assert dropped >= 1
    database.add_steps(run.id, [(2, "train_loss", 0.5)])
    database.add_epoch(run.id, 1, 2, {"val_acc": 0.5})
    assert database.steps(run.id) == [(1, 1.0), (2, 0.5)] and database.get_run(run.id).epochs_done == 1
    database.close()
