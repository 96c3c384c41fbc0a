"""Several hosts, one database: a run whose host died does not stay running forever, and only
runs of other hosts are ended that way (each host supervises its own). SQLite and PostgreSQL."""

from __future__ import annotations

import time

from db import Database, Workspace, states
from runner import control
from runner.backends.local import LocalBackend
from runner.scheduler import HOST_DEAD_SECONDS, Scheduler


def _running(db: Database, host: str, heartbeat_age: float) -> int:
    run = db.create_run(config={"epochs": 3}, config_hash="h", model="resnet18", name=f"on {host}")
    beat = time.time() - heartbeat_age
    assert states.move(db, run.id, "running", only_from=("queued",), host=host, started_at=beat, heartbeat_at=beat)
    return run.id


def test_runs_of_a_dead_host_are_interrupted_and_resumable_from_another(db_url, tmp_path):
    db = Database(db_url)
    workspace = Workspace(tmp_path / "home").ensure()
    dead = _running(db, "login-a", 2 * HOST_DEAD_SECONDS)
    alive = _running(db, "login-c", 1.0)
    own = _running(db, "login-b", 2 * HOST_DEAD_SECONDS)  # this host's: its scheduler reconciles it
    scheduler = Scheduler(workspace, db, backend=LocalBackend(workspace), gpus=[], host="login-b")
    scheduler.enforce()

    run = db.get_run(dead)
    assert run.status == "interrupted" and "login-a" in run.error and run.pid is None
    assert db.get_run(alive).status == "running"
    assert db.get_run(own).status == "running"
    control.resume(db, dead)
    assert db.get_run(dead).status == "queued"
    db.close()


def test_a_run_is_ended_once_when_two_hosts_see_it_expire(db_url, tmp_path):
    db = Database(db_url)
    workspace = Workspace(tmp_path / "home").ensure()
    dead = _running(db, "login-a", 2 * HOST_DEAD_SECONDS)
    first = Scheduler(workspace, db, backend=LocalBackend(workspace), gpus=[], host="login-b")
    second = Scheduler(workspace, db, backend=LocalBackend(workspace), gpus=[], host="login-c")
    first.enforce()
    error = db.get_run(dead).error
    second.enforce()
    assert db.get_run(dead).status == "interrupted" and db.get_run(dead).error == error
    db.close()
