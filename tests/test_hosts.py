"""Several hosts, one database: a run whose host died does not stay running forever, and only
runs of other hosts are ended that way (each host supervises its own). SQLite and PostgreSQL."""

from __future__ import annotations

import time

from db import Database, Workspace, states
from db.errors import UserError
from engine.config import RunConfig
from runner import control
from runner.backends.base import Backend, Handle
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


class Batch(Backend):
    """A batch system of a third party's: places jobs itself, knows nothing of who submitted them
    unless told (``known``), and can be unreachable (``reachable``)."""

    name = "batch"
    assigns_devices = False
    known: dict[str, str | None] = {}
    reachable = True

    def start(self, run_id, device, env):
        return Handle(run_id, 0, device, time.time(), job_id=f"job-{run_id}", backend=self.name, waiting=True)

    def poll(self, handle):
        return None

    def cancel(self, handle, *, force=False):
        pass

    def supervisor(self, job_id):
        if not self.reachable:
            raise UserError("batch: no answer")
        return self.known.get(job_id, "")


def test_a_batch_backend_that_places_its_own_jobs_gets_every_run_and_is_adopted_after_a_restart(tmp_path):
    workspace = Workspace(tmp_path / "home").ensure()
    db = Database(workspace.db_url)
    for seed in range(3):
        control.create_run(db, RunConfig.from_dict({"seed": seed, "data_dir": str(tmp_path)}))
    scheduler = Scheduler(workspace, db, backend=Batch(workspace, host="login-a"), gpus=[], host="login-a")
    scheduler.dispatch()  # a device the backend hands back ("auto") is not one of ours to count
    assert sorted(scheduler.handles) == [1, 2, 3]
    assert [db.get_run(i).job_id for i in (1, 2, 3)] == ["job-1", "job-2", "job-3"]

    Batch.known = {"job-2": None}  # gone for certain
    restarted = Scheduler(workspace, db, backend=Batch(workspace, host="login-a"), gpus=[], host="login-a")
    restarted.reconcile()
    assert sorted(restarted.handles) == [1, 3], "jobs the backend cannot place by submitter: this host's, adopted"
    assert db.get_run(2).status == "interrupted"

    Batch.reachable = False
    again = Scheduler(workspace, db, backend=Batch(workspace, host="login-a"), gpus=[], host="login-a")
    again.reconcile()
    assert again.handles == {} and [db.get_run(i).status for i in (1, 3)] == ["running", "running"], \
        "a backend that cannot be asked now changes no run"
    Batch.reachable, Batch.known = True, {}
    db.close()
