"""The queue, the detached scheduler and its workers as real processes on a real SQLite file."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time

import pytest
from sqlalchemy import text

from conftest import TINY_NET, cli, tiny_config, wait_for
from db import Database, Workspace, states
from db.errors import UserError
from engine.config import RunConfig
from engine.synth import make_dataset
from runner import control, daemon
from runner.options import Options


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """Enough images for several steps per epoch at a very small size."""
    return make_dataset(tmp_path_factory.mktemp("e2e") / "cells", n_train=96, n_valid=16, n_test=8, size=16, seed=5)


def config(data, **overrides) -> RunConfig:
    """What the scheduler's tests queue: the tests' own small network (what they check is the
    processes, not what a ResNet learns)."""
    return tiny_config(data, fast=True, **{"model": TINY_NET, **overrides})


def start(workspace: Workspace, **options) -> int:
    return daemon.start_detached(workspace, Options(**{"idle_timeout": 30, **options}))


def test_queue_sweeps_and_queue_operations(home, small_data):
    args = ["--data-dir", str(small_data), "--image-size", "16", "--epochs", "1", "--no-start"]
    out = json.loads(cli("queue", *args, "--grid", "model=resnet18,resnet50", "--grid", "hist_eq=false,true", "--json", home=home.home).stdout)
    assert len(out["run_ids"]) == 4 and out["sweep_id"] == 1
    db = Database(home.db_url)
    sweep = db.get_sweep(1)
    assert sweep.factors == {"model": ["resnet18", "resnet50"], "hist_eq": [False, True]}
    combos = {(r.config["model"], r.config["hist_eq"]) for r in db.sweep_runs(1)}
    assert combos == {("resnet18", False), ("resnet18", True), ("resnet50", False), ("resnet50", True)}
    assert all(r.config["epochs"] == 1 and r.status == "queued" for r in db.sweep_runs(1))

    first, second, third, fourth = out["run_ids"]
    cli("prioritize", str(fourth), home=home.home)
    cli("hold", str(second), home=home.home)
    order = json.loads(cli("queue", "ls", "--json", home=home.home).stdout)["runs"]
    assert [(r["id"], r["status"]) for r in order] == [(fourth, "queued"), (first, "queued"), (second, "held"), (third, "queued")]
    cli("release", str(second), home=home.home)
    assert "cancelled" in cli("cancel", str(third), home=home.home).stdout
    cli("retry", str(third), "--no-start", home=home.home)
    retried = db.list_runs()[0]
    assert retried.parent_id == third and retried.config == db.get_run(third).config and retried.status == "queued"
    assert daemon.running_pid(home) is None

    bad = cli("queue", *args, "--grid", "colour=red,blue", home=home.home, check=False)
    assert bad.returncode == 2 and "--grid: 'colour' is not a config field" in bad.stderr
    bad = cli("queue", *args, "--grid", "optimizer=adam,rmsprop", home=home.home, check=False)
    assert bad.returncode == 2 and "rmsprop" in bad.stderr
    nothing = cli("hold", str(third), home=home.home, check=False)
    assert nothing.returncode == 1 and f"run {third} is cancelled" in nothing.stderr

    # The first run (cancelled while queued) is taken to have completed this config.
    with db.engine.begin() as connection:
        connection.execute(text("UPDATE run SET status = 'completed' WHERE id = :id"), {"id": first})
    again = cli("queue", *args, home=home.home, check=False)
    assert again.returncode == 1 and "already completed this exact config; add --force" in again.stderr
    assert cli("queue", *args, "--force", home=home.home).returncode == 0


def test_two_gpus_two_runs_and_the_third_waits(home, small_data, monkeypatch):
    monkeypatch.setenv("LEUKTUI_GPUS", "0,1")
    db = Database(home.db_url)
    runs, _ = control.queue_runs(db, config(small_data, epochs=500))
    runs += control.queue_runs(db, config(small_data, epochs=500, seed=1))[0]
    runs += control.queue_runs(db, config(small_data, epochs=500, seed=2))[0]
    start(home)
    running = wait_for(lambda: [r for r in db.list_runs(statuses=["running"])] if len(db.list_runs(statuses=["running"])) == 2 else None,
                       60, "two runs running")
    assert sorted(r.device for r in running) == ["cuda:0", "cuda:1"]
    time.sleep(1.5)  # a scheduler pass or three: the third must still wait
    assert db.get_run(runs[2].id).status == "queued"
    visible = wait_for(lambda: all("cuda_visible_devices" in db.get_run(r.id).environment for r in running) and
                       {r.device: db.get_run(r.id).environment["cuda_visible_devices"] for r in running}, 60, "workers started")
    assert visible == {"cuda:0": "0", "cuda:1": "1"}
    for run in runs:
        control.cancel(db, run.id)
    wait_for(lambda: all(db.get_run(r.id).status == "cancelled" for r in runs), 40, "all cancelled")


def test_cancel_mid_run_then_resume_continues_the_same_record(home, small_data):
    EPOCHS = 40
    db = Database(home.db_url)
    (run,), _ = control.queue_runs(db, config(small_data, epochs=EPOCHS))  # the small network's epochs: the cancel lands mid-run
    start(home)
    wait_for(lambda: db.get_run(run.id).epochs_done >= 1, 90, "first epoch")
    assert control.cancel(db, run.id) == "cancelling"
    wait_for(lambda: db.get_run(run.id).status == "cancelled", 30, "cancelled")
    done_before = db.get_run(run.id).epochs_done
    assert done_before < EPOCHS, "the cancel arrived after the run ended"
    assert "stopped on request" in home.log_path(run.id).read_text()

    control.resume(db, run.id)
    wait_for(lambda: db.get_run(run.id).status == "completed", 240, "resumed run completes")
    steps_per_epoch = 96 // 8
    assert [e.epoch for e in db.epochs(run.id)] == list(range(1, EPOCHS + 1))
    assert [s for s, _ in db.steps(run.id)] == list(range(1, EPOCHS * steps_per_epoch + 1))
    assert [e.step for e in db.epochs(run.id)] == [steps_per_epoch * i for i in range(1, EPOCHS + 1)]
    assert "resume=True" in home.log_path(run.id).read_text()


def test_a_killed_worker_is_failed_within_15_seconds(home, small_data):
    db = Database(home.db_url)
    (run,), _ = control.queue_runs(db, config(small_data, epochs=500))
    start(home)
    pid = wait_for(lambda: db.get_run(run.id).epochs_done >= 1 and db.get_run(run.id).pid, 90, "worker training")
    os.kill(pid, signal.SIGKILL)
    killed_at = time.time()
    wait_for(lambda: db.get_run(run.id).status == "failed", 15, "run failed")
    assert time.time() - killed_at < 15
    assert "SIGKILL" in db.get_run(run.id).error


def test_a_killed_scheduler_is_reconciled_on_restart(home, small_data):
    db = Database(home.db_url)
    (run,), _ = control.queue_runs(db, config(small_data, epochs=500))
    first = start(home)
    worker = wait_for(lambda: db.get_run(run.id).pid, 60, "worker started")
    os.kill(first, signal.SIGKILL)
    os.kill(worker, signal.SIGKILL)  # as if the machine had gone down
    wait_for(lambda: daemon.running_pid(home) is None, 10, "scheduler gone")
    assert db.get_run(run.id).status == "running"
    # A second run died the same way after its cancel was asked for: it ends cancelled, not interrupted.
    (asked,), _ = control.queue_runs(db, config(small_data, epochs=500, seed=1))
    assert states.move(db, asked.id, "running", pid=worker, host=socket.gethostname(), cancel_requested_at=time.time())
    second = start(home)
    assert second != first
    wait_for(lambda: db.get_run(run.id).status == "interrupted", 10, "reconciled to interrupted")
    assert "resume" in db.get_run(run.id).error
    wait_for(lambda: db.get_run(asked.id).status == "cancelled", 10, "the cancelling run reconciled to cancelled")
    assert db.get_run(asked.id).error is None


def test_the_scheduler_outlives_the_command_that_started_it(home, small_data):
    result = cli("queue", "--data-dir", str(small_data), "--image-size", "16", "--epochs", "1", "--model", TINY_NET, home=home.home)
    assert "queued run 1" in result.stdout
    pid = daemon.running_pid(home)
    assert pid and pid > 0
    assert os.getsid(pid) != os.getsid(0), "detached into its own session"
    db = Database(home.db_url)
    wait_for(lambda: db.get_run(1).status == "completed", 120, "the run completes with the CLI long gone")
    status = json.loads(cli("scheduler", "status", "--json", home=home.home).stdout)
    assert status["running"] and status["pid"] == pid
    # A scheduler that cannot act on the request (its process stopped) is not reported stopped.
    os.kill(pid, signal.SIGSTOP)
    try:
        with pytest.raises(UserError, match=rf"scheduler {pid} was asked to exit but is still running after 1 s "
                                            rf"\(its process is stopped: `kill -CONT {pid}` lets it exit\)"):
            daemon.stop(home, wait=1)
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_for(lambda: daemon.running_pid(home) is None, 10, "the scheduler exits once it runs again (the request was kept)")
    assert "scheduler was not running" in cli("scheduler", "stop", home=home.home).stdout


def test_idle_scheduler_exits_by_itself(home):
    pid = start(home, idle_timeout=1)
    assert pid > 0
    wait_for(lambda: daemon.running_pid(home) is None, 15, "idle exit")


def test_four_concurrent_runs_and_a_reader_lose_no_rows(home, small_data):
    db = Database(home.db_url)
    runs = [control.queue_runs(db, config(small_data, epochs=3, seed=seed))[0][0] for seed in range(4)]
    start(home, max_parallel=4)
    reader_errors: list[Exception] = []
    polls = 0
    stop = threading.Event()

    def reader() -> None:
        nonlocal polls
        reader_db = Database(home.db_url)
        while not stop.is_set():
            try:
                for run in reader_db.list_runs():
                    reader_db.epochs(run.id)
                    reader_db.steps(run.id, after=max(0, run.last_step - 50))
                polls += 1
            except Exception as exc:  # any error here would reach a user of the app
                reader_errors.append(exc)
            time.sleep(0.02)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        seen_parallel = wait_for(lambda: len(db.list_runs(statuses=["running"])) == 4, 60, "four runs at once")
        assert seen_parallel
        wait_for(lambda: all(db.get_run(r.id).status in ("completed", "failed") for r in runs), 240, "all four finish")
    finally:
        stop.set()
        thread.join()
    assert not reader_errors, reader_errors[:3]
    assert polls > 10
    steps_per_epoch = 96 // 8
    for run in runs:
        record = db.get_run(run.id)
        assert record.status == "completed", record.error
        assert [e.epoch for e in db.epochs(run.id)] == [1, 2, 3]
        assert [s for s, _ in db.steps(run.id)] == list(range(1, 3 * steps_per_epoch + 1))
        assert db.count_steps(run.id) == 3 * steps_per_epoch


def test_a_foreground_run_is_left_alone_by_the_scheduler_and_can_be_cancelled(home, small_data):
    import subprocess
    import sys

    command = [sys.executable, "-m", "leuktui", "--home", str(home.home), "run", "--data-dir", str(small_data), "--image-size", "16",
               "--batch-size", "8", "--epochs", "500", "--rotation", "0", "--amp", "off", "--workers", "1", "--model", TINY_NET]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        db = Database(home.db_url)
        run = wait_for(lambda: next((r for r in db.list_runs() if r.epochs_done >= 1), None), 90, "training in the foreground")
        start(home)  # reconciles: the run's process is alive but no worker of the scheduler's
        time.sleep(2)
        assert db.get_run(run.id).status == "running"
        assert control.cancel(db, run.id) == "cancelling"
        assert process.wait(timeout=30) == 1
        assert db.get_run(run.id).status == "cancelled"
    finally:
        if process.poll() is None:
            process.kill()


def test_a_db_or_engine_folder_where_the_user_stands_shadows_nothing(home, small_data, tmp_path):
    """Workers and the scheduler start in a folder of the workspace with PYTHONSAFEPATH: a
    package of the same name in the user's folder is never imported instead of ours."""
    import subprocess
    import sys
    from pathlib import Path

    here = tmp_path / "where-the-user-stands"
    for name in ("db", "engine", "leuktui"):
        (here / name).mkdir(parents=True)
        (here / name / "__init__.py").write_text(f"raise SystemExit('the {name}/ folder of the user was imported')\n")
    leuktui = Path(sys.executable).with_name("leuktui")
    result = subprocess.run([str(leuktui), "--home", str(home.home), "queue", "--data-dir", str(small_data), "--image-size", "16",
                             "--epochs", "1", "--batch-size", "8", "--amp", "off", "--model", TINY_NET], cwd=here, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    db = Database(home.db_url)
    wait_for(lambda: db.get_run(1).status in ("completed", "failed"), 180, "the run ends")
    assert db.get_run(1).status == "completed", db.get_run(1).error
    assert "was imported" not in (home.home / "scheduler.log").read_text()


def test_scheduler_stop_signals_only_the_process_that_holds_the_lock(home, tmp_path):
    """A forged pid file names an unrelated process of ours: nothing is signalled."""
    cli("scheduler", "start", "--idle-timeout", "60", home=home.home)
    real = wait_for(lambda: (pid := daemon.running_pid(home)) and pid > 0 and pid, 10, "the scheduler's pid")
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        daemon.pid_path(home).write_text(str(bystander.pid))
        refused = cli("scheduler", "stop", home=home.home, check=False)
        assert refused.returncode == 1
        assert refused.stderr.strip() == (f"leuktui: error: {daemon.pid_path(home)}: pid {bystander.pid} is not this "
                                          "workspace's scheduler; nothing was signalled")
        assert bystander.poll() is None, "the bystander was not signalled"
        daemon.pid_path(home).write_text(str(real))
        assert f"scheduler {real} stopped" in cli("scheduler", "stop", home=home.home).stdout
    finally:
        bystander.kill()
        bystander.wait()


def test_a_damaged_scheduler_json_is_one_line_naming_the_key(home, small_data):
    (home.home / "scheduler.json").write_text('{"max_parallel": "2"}')
    for args in (("queue", "--data-dir", str(small_data), "--image-size", "16", "--epochs", "1"), ("scheduler", "status")):
        result = cli(*args, home=home.home, check=False)
        assert result.returncode == 1, args
        assert result.stderr.strip() == (f"leuktui: error: {home.home / 'scheduler.json'}: 'max_parallel' must be a whole "
                                         "number of at least 1, not '2'"), args
    assert daemon.running_pid(home) is None, "no scheduler was started to die on it"
    (home.home / "scheduler.json").write_text('{"backend": "kubernetes"}')
    result = cli("scheduler", "status", home=home.home, check=False)
    assert result.returncode == 1 and "'backend': no backend named 'kubernetes' (installed: local, slurm" in result.stderr


def test_a_start_while_another_scheduler_starts_waits_for_its_pid(home):
    """The lock is held but the pid not written yet (a scheduler starting): the caller gets the
    pid once it is there, never a placeholder."""
    from filelock import FileLock

    starting = FileLock(daemon.lock_path(home))
    starting.acquire()
    try:
        writer = threading.Timer(0.5, lambda: daemon.pid_path(home).write_text(str(os.getpid())))
        writer.start()
        assert daemon.start_detached(home, wait=5) == os.getpid()
        writer.join()
    finally:
        starting.release()
        daemon.pid_path(home).unlink(missing_ok=True)
