"""Runs through a real single-node Slurm cluster into a real PostgreSQL database: queued runs and a
sweep train to completion as batch jobs and the app shows them; ``leuktui cancel``, an outside
``scancel`` and a killed worker each end their run as they should; Slurm's refusals are one line.

Both services come from tests/services/up.sh (``make test`` starts them).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from conftest import TINY_NET, cli, service_missing
from conftest import wait_for as shared_wait_for
from db import Database, Workspace
from runner import daemon, scheduler
from runner.backends.slurm import job_detail
from runner.options import Options

# One cluster of two CPUs for every test here: they run one after another, on one xdist worker.
pytestmark = pytest.mark.xdist_group("slurm")
POLL = 0.25
# Two waves of two parallel trials: the study's ask/tell across Slurm jobs, its storage on PostgreSQL
# (the pruning itself is asserted on the local backend, tests/e2e/test_studies.py).
SLURM_TRIALS = 4


def wait_for(predicate, timeout: float, message: str):
    return shared_wait_for(predicate, timeout, message, interval=POLL)


def slurm_up() -> None:
    if not os.environ.get("SLURM_CONF") or shutil.which("sinfo") is None:
        service_missing("Slurm test cluster not available: run tests/services/up.sh as root and set SLURM_CONF")
    result = subprocess.run(["sinfo", "--noheader", "--format=%T"], capture_output=True, text=True, timeout=30)
    if result.returncode != 0 or not result.stdout.strip():
        service_missing(f"Slurm test cluster at SLURM_CONF={os.environ['SLURM_CONF']} not answering: {result.stderr.strip()}")


class Cluster:
    """A workspace whose database is a fresh PostgreSQL database and whose runs go to Slurm."""

    def __init__(self, home: Path, db_url: str, data: Path):
        self.home = home
        self.env = {"LEUKTUI_DB": db_url}
        self.db = Database(db_url)
        self.data = data

    def cli(self, *args: str, check: bool = True, env: dict | None = None):
        """The command in this process: the scheduler it starts, sbatch and the workers are the real ones."""
        return cli(*args, home=self.home, check=check, env={**self.env, **(env or {})})

    def queue(self, *args: str, epochs: int = 2, model: str = TINY_NET) -> list[int]:
        """Queue runs of the tests' small network (these tests check Slurm's jobs, not learning)."""
        output = self.cli("queue", "--data-dir", str(self.data), "--image-size", "16", "--batch-size", "8",
                          "--epochs", str(epochs), "--amp", "off", "--workers", "0", "--rotation", "0",
                          "--model", model, "--json", "--no-start", *args).stdout
        return json.loads(output[: output.rindex("}") + 1])["run_ids"]

    def run(self, run_id: int):
        return self.db.get_run(run_id)

    def show(self, run_id: int) -> dict:
        return json.loads(self.cli("show", str(run_id), "--json").stdout)

    def wait_status(self, run_id: int, statuses: tuple[str, ...], timeout: float = 180):
        return wait_for(lambda: (run := self.run(run_id)).status in statuses and run, timeout,
                        f"run {run_id} to be {' or '.join(statuses)} (it is {self.run(run_id).status})")

    def wait_training(self, run_id: int, epochs: int = 1):
        return wait_for(lambda: (run := self.run(run_id)).status == "running" and run.epochs_done >= epochs and run, 180,
                        f"run {run_id} to train {epochs} epoch(s)")


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    from engine.synth import make_dataset

    return make_dataset(tmp_path_factory.mktemp("slurm") / "cells", n_train=48, n_valid=16, n_test=8, size=16, seed=3)


@pytest.fixture
def cluster(pg_url, tmp_path, cells, monkeypatch):
    slurm_up()
    monkeypatch.setenv("LEUKTUI_DB", pg_url)  # this process's Workspace finds the scheduler's lock by it
    # Slurm keeps a finished job for minutes, its working folder this home: a pytest session after a
    # green one makes the same tmp_path again, so the home's name is new each time too.
    cluster = Cluster(tmp_path / f"home-{uuid.uuid4().hex[:8]}", pg_url, cells)
    cluster.cli("scheduler", "start", "--backend", "slurm", "--idle-timeout", "60")
    yield cluster
    workspace = Workspace(cluster.home)
    pid = daemon.running_pid(workspace)
    if pid and pid > 0:
        os.kill(pid, signal.SIGKILL)
    jobs = [run.job_id for run in cluster.db.list_runs() if run.job_id]
    if jobs:
        subprocess.run(["scancel", "--signal=KILL", "--full", *jobs], capture_output=True)
        subprocess.run(["scancel", *jobs], capture_output=True)
    cluster.db.close()


def test_runs_and_a_sweep_train_to_completion_as_slurm_jobs_on_postgresql(cluster):
    single = cluster.queue("--name", "on-slurm")
    swept = cluster.queue("--grid", "lr=0.01,0.001", "--name", "lr sweep")
    cluster.cli("scheduler", "start")
    runs = [cluster.wait_status(run_id, ("completed",), timeout=300) for run_id in single + swept]

    job_ids = [run.job_id for run in runs]
    assert all(run.backend == "slurm" for run in runs) and len(set(job_ids)) == len(runs), job_ids
    for run in runs:
        # The worker records the run completed a moment before its process, and so the job, ends.
        # Ended as Slurm counts it (COMPLETING, its tidying up after the processes, is not yet the end).
        job = wait_for(lambda run=run: (j := job_detail(run.job_id)) is not None and j.ended and j, 60, f"Slurm job {run.job_id} to end")
        assert job.state == "COMPLETED", job
        shown = cluster.show(run.id)
        assert (shown["backend"], shown["job_id"], shown["epochs_done"]) == ("slurm", run.job_id, 2)
        assert len(shown["epochs"]) == 2 and shown["epochs"][-1]["confusion"]
        assert cluster.db.steps_overview(run.id), "per-step loss in PostgreSQL"
        log = (cluster.home / "runs" / str(run.id) / "train.log").read_text()
        assert f"run {run.id} completed" in log, "the job's output went to the run's log"
        script = (cluster.home / "runs" / str(run.id) / "job.sh").read_text()
        assert f"--job-name=leuktui-run-{run.id}" in script and "--gres" not in script, "a CPU run asks for no GPU"
    assert {run.sweep_id for run in runs[1:]} == {runs[1].sweep_id} and runs[1].sweep_id is not None
    assert not (cluster.home / "leuktui.db").exists()


def test_the_app_shows_slurm_runs_from_postgresql_with_charts_confusion_matrix_and_job_state(cluster):
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    from e2e.test_terminal import Terminal

    (run_id,) = cluster.queue("--name", "seen-in-the-app")
    # A ResNet18's epochs: the run is still training, at an epoch every second or two, while the app looks.
    (long_id,) = cluster.queue("--name", "still-training", epochs=500, model="resnet18")
    cluster.cli("scheduler", "start")
    cluster.wait_status(run_id, ("completed",))
    job_id = cluster.wait_training(long_id).job_id
    command = (f"env LEUKTUI_DB={shlex.quote(cluster.env['LEUKTUI_DB'])} {shlex.quote(sys.executable)} -m leuktui "
               f"--home {shlex.quote(str(cluster.home))} --no-scheduler")
    terminal = Terminal(f"leuktui-slurm-{os.getpid()}-{int(time.time())}", command, cwd=cluster.home, width=160)
    try:
        terminal.wait_for("seen-in-the-app", 30)
        terminal.keys("w")
        terminal.wait_for(f"slurm {job_id} RUNNING", 20)
        terminal.keys("Escape")
        terminal.wait_for("seen-in-the-app", 10)
        terminal.keys("Down")  # the newest run is first: the completed one is second
        terminal.keys("Enter")
        terminal.wait_for("loss per epoch", 20)
        terminal.keys("2")
        screen = terminal.wait_for("true \\ predicted", 20)
        assert "sensitivity" in screen and "seen-in-the-app" in screen
        terminal.keys("q")
    finally:
        terminal.close()
    cluster.cli("cancel", str(long_id))


def test_leuktui_cancel_scancels_the_job_and_resume_submits_a_new_one(cluster):
    (run_id,) = cluster.queue("--name", "to-cancel", epochs=500)
    cluster.cli("scheduler", "start")
    running = cluster.wait_training(run_id)
    listing = json.loads(cluster.cli("queue", "ls", "--json").stdout)
    (entry,) = [run for run in listing["runs"] if run["id"] == run_id]
    # The backend's word on the job (Backend.describe): id, state and node.
    job_id, state, node = entry["job"].split()
    assert entry["job_id"] == job_id == running.job_id and state == "RUNNING" and node, entry
    assert f"slurm {running.job_id} RUNNING" in cluster.cli("queue", "ls").stdout

    cluster.cli("cancel", str(run_id))
    cancelled = cluster.wait_status(run_id, ("cancelled",), timeout=90)
    assert cancelled.error is None
    job = wait_for(lambda: (job := job_detail(running.job_id)) and job.ended and job, 60, "the job to end")
    # The scheduler scancels the job (SIGTERM to its steps) unless the worker, which sees the
    # request in its heartbeat too, finished its step and exited first: then the job COMPLETED.
    scancelled = f"run {run_id}: cancel requested, SIGTERM sent" in (cluster.home / "scheduler.log").read_text()
    assert job.state in ("CANCELLED", "COMPLETED"), job.state
    if job.state == "CANCELLED":
        assert scancelled, "only the scheduler's scancel cancels the job"
    assert (cluster.home / "runs" / str(run_id) / "checkpoints" / "last.pt").is_file()

    cluster.cli("resume", str(run_id))
    resumed = cluster.wait_training(run_id, cancelled.epochs_done + 1)
    assert resumed.backend == "slurm" and resumed.job_id != running.job_id
    cluster.cli("cancel", str(run_id))
    cluster.wait_status(run_id, ("cancelled",), timeout=90)


def test_a_median_study_runs_its_trials_as_slurm_jobs_with_optunas_storage_on_the_same_postgresql(cluster):
    import optuna

    from db.dialect import optuna_url

    created = cluster.cli("study", "create", "slurm-search", "--space", "lr=log:1e-5:1e-1; batch_size=8,16", "--trials", str(SLURM_TRIALS),
                          "--parallel", "2", "--startup-trials", "2", "--warmup-epochs", "0", "--data-dir", str(cluster.data), "--image-size", "16",
                          "--epochs", "3", "--rotation", "0", "--amp", "off", "--workers", "0", "--seed", "3", "--model", TINY_NET,
                          "--json")
    study_id = json.loads(created.stdout[: created.stdout.rindex("}") + 1])["study_id"]
    # Waits on the study's row (a cheap read that leaves the CPU to the trials), then asks as a user would.
    wait_for(lambda: any(s.id == study_id and s.study.get("finished_at") for s in cluster.db.studies()), 420, "the study to finish on Slurm")
    shown = json.loads(cluster.cli("study", "show", "slurm-search", "--json").stdout)
    assert shown["state"] == "finished"
    runs = [run for run in cluster.db.sweep_runs(study_id) if run.trial is not None]
    assert len(runs) == SLURM_TRIALS and len({run.trial for run in runs}) == SLURM_TRIALS
    assert all(run.backend == "slurm" and run.job_id for run in runs)
    # Whether the pruner stops one here depends on the training (tests/e2e/test_studies.py asserts it does);
    # every trial ended as its run did, and a pruned one stopped early.
    assert {run.status for run in runs} <= {"completed", "pruned"}
    assert all(run.epochs_done < 3 for run in runs if run.status == "pruned")
    # Optuna's RDB storage lives in the same database (schema optuna), and a plain load_study reads it.
    assert shown["storage"].endswith("options=-csearch_path%3Doptuna") and "***" in shown["storage"]
    study = optuna.load_study(study_name="slurm-search", storage=optuna_url(cluster.env["LEUKTUI_DB"]))
    by_number = {t.number: t for t in study.trials}
    assert len(by_number) == SLURM_TRIALS
    for run in runs:
        assert by_number[run.trial].state.name == {"completed": "COMPLETE", "pruned": "PRUNED"}[run.status]
        assert by_number[run.trial].params["lr"] == pytest.approx(run.config["lr"])
    assert shown["best"]["trial"] == study.best_trial.number


def test_a_run_of_two_processes_is_one_slurm_job_of_two_tasks_under_torchrun(cluster):
    (run_id,) = cluster.queue("--name", "ddp-on-slurm", "--nproc", "2", epochs=2)
    cluster.cli("scheduler", "start")
    run = cluster.wait_status(run_id, ("completed",), timeout=240)
    assert run.backend == "slurm" and run.environment["processes"] == 2
    epochs = cluster.db.epochs(run_id)
    assert [e.epoch for e in epochs] == [1, 2] and all(sum(map(sum, e.confusion)) == 16 for e in epochs)
    script = (cluster.home / "runs" / str(run_id) / "job.sh").read_text()
    assert "--ntasks-per-node=1" in script and "--cpus-per-task=2" in script
    assert "srun" in script and "torch.distributed.run --nnodes=1 --nproc-per-node=2 --rdzv-backend=c10d" in script
    log = (cluster.home / "runs" / str(run_id) / "train.log").read_text()
    assert "rank 0/2" in log and "rank 1/2" in log
    # torchrun's folders on the node are the run's (in the shared workspace), not the node's /tmp's.
    assert sorted(p.name for p in (cluster.home / "runs" / str(run_id) / "torchrun").glob("*/attempt_0/*")) == ["0", "1"]


def test_an_outside_scancel_ends_the_run_cancelled_with_slurms_reason(cluster):
    (run_id,) = cluster.queue("--name", "scancelled", epochs=500)
    cluster.cli("scheduler", "start")
    running = cluster.wait_training(run_id)
    subprocess.run(["scancel", running.job_id], check=True)
    cancelled = cluster.wait_status(run_id, ("cancelled",), timeout=60)
    reason = wait_for(lambda: cluster.run(run_id).error, 30, "Slurm's reason on the run")
    assert f"Slurm job {running.job_id}" in reason and "cancelled in Slurm" in reason, reason
    assert cancelled.cancel_requested_at is None


def test_a_job_whose_worker_is_killed_fails_its_run_with_the_reason(cluster):
    (run_id,) = cluster.queue("--name", "killed", epochs=500)
    cluster.cli("scheduler", "start")
    running = cluster.wait_training(run_id)
    os.kill(running.pid, signal.SIGKILL)  # the node is this machine
    failed = cluster.wait_status(run_id, ("failed",), timeout=60)
    assert f"Slurm job {running.job_id}" in failed.error and "FAILED" in failed.error, failed.error
    assert "SIGKILL" in failed.error and re.search(r"epoch \d+/500", failed.error), "the reason, then the log's tail"


def test_a_partition_that_does_not_exist_is_one_line(cluster):
    result = cluster.cli("scheduler", "start", "--backend", "slurm", "--partition", "no-such-partition", check=False)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert "no-such-partition" in line and "does not exist" in line and "Traceback" not in result.stderr


def test_sbatch_refusing_a_job_fails_its_run_with_slurms_message(cluster):
    daemon.stop(Workspace(cluster.home))
    cluster.cli("scheduler", "start", "--sbatch-arg=--time=not-a-time")
    (run_id,) = cluster.queue("--name", "refused")
    cluster.cli("scheduler", "start")
    failed = cluster.wait_status(run_id, ("failed",), timeout=60)
    assert "sbatch refused to submit run" in failed.error and "--time" in failed.error, failed.error


def test_without_sbatch_the_slurm_backend_is_one_line(cluster):
    result = cluster.cli("scheduler", "start", "--backend", "slurm", check=False, env={"PATH": "/nonexistent"})
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("leuktui: error: sbatch: not found on PATH"), line
    # Slurm's commands, but no configuration to find the controller by: said at start, not by the first run's failure.
    nowhere = cluster.cli("scheduler", "start", "--backend", "slurm", check=False, env={"SLURM_CONF": "/nonexistent/slurm.conf"})
    assert nowhere.returncode == 1
    (line,) = nowhere.stderr.strip().splitlines()
    assert line.startswith("leuktui: error: Slurm's controller cannot be reached from here (scontrol refused to reach the "
                           "controller: ") and line.endswith("; run where it can, e.g. a login node, or set SLURM_CONF"), line


def test_two_login_hosts_on_one_database_submit_each_run_once_and_each_adopts_its_own(cluster):
    import threading

    from runner.backends.slurm import SlurmBackend

    workspace = Workspace(cluster.home)
    daemon.stop(workspace)
    run_ids = cluster.queue("--grid", "lr=0.01,0.005,0.002,0.001", "--name", "two hosts", epochs=1)
    hosts = ("login-a", "login-b")

    def make(host: str) -> scheduler.Scheduler:
        return scheduler.Scheduler(workspace, Database(cluster.env["LEUKTUI_DB"]), Options(backend="slurm"),
                                   backend=SlurmBackend(workspace, host=host), gpus=[], host=host)

    schedulers = [make(host) for host in hosts]
    barrier = threading.Barrier(len(schedulers))

    def dispatch(s: scheduler.Scheduler) -> None:
        barrier.wait()
        for _ in range(3):
            s.dispatch()

    threads = [threading.Thread(target=dispatch, args=(s,)) for s in schedulers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    supervised = [set(s.handles) for s in schedulers]
    assert supervised[0].isdisjoint(supervised[1]) and supervised[0] | supervised[1] == set(run_ids), supervised
    for run_id in run_ids:
        jobs = subprocess.run(["squeue", "--noheader", "--states=all", f"--name=leuktui-run-{run_id}", "--format=%i|%Z"],
                              capture_output=True, text=True, check=True).stdout.split()
        # Jobs of this workspace: other tests' runs have the same ids in their own databases.
        listing = [job.split("|")[0] for job in jobs if job.split("|")[1] == str(cluster.home)]
        assert listing == [cluster.run(run_id).job_id], f"run {run_id} was submitted once: {listing}"
        owner = hosts[0] if run_id in supervised[0] else hosts[1]
        assert job_detail(listing[0]).comment.endswith(owner)

    # A restarted scheduler of login-a adopts exactly login-a's jobs that still run.
    restarted = make("login-a")
    restarted.reconcile()
    assert set(restarted.handles) <= supervised[0]
    schedulers[0] = restarted

    def all_done() -> bool:
        for s in schedulers:
            s.reap()
        return all(cluster.run(run_id).status == "completed" for run_id in run_ids)

    wait_for(all_done, 300, "every run of the two hosts to complete")
    for s in schedulers:
        s.db.close()
