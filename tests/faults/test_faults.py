"""Faults, as they happen on a shared server: a worker killed at any moment, a worker stopped, a
scheduler killed under running workers, a corrupt database, a full disk. After each, nothing
recorded is lost or repeated, and the user gets one clear line."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from sqlalchemy import text

from conftest import TINY_NET, cli, run_cli, tiny_config, wait_for
from db import Database, Workspace, states
from db.vocabulary import metric
from engine.checkpoint import CheckpointError, CheckpointSaver, load_checkpoint
from engine.config import RunConfig
from engine.synth import make_dataset
from runner import control, daemon
from runner.options import Options

# Epochs long enough that a heartbeat (every 2 s) records a phase inside one, even on a loaded machine.
TRAIN_IMAGES = 192
STEPS_PER_EPOCH = TRAIN_IMAGES // 8
ADOPTED_EPOCHS = 40


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("faults") / "cells", n_train=TRAIN_IMAGES, n_valid=16, n_test=8, size=16, seed=3)


def config(data, **overrides) -> RunConfig:
    return tiny_config(data, fast=True, **{"epochs": 4, "best_metric": "val_loss", **overrides})


def start_worker(workspace: Workspace, run_id: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "engine.worker", str(run_id), "--home", str(workspace.home)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONSAFEPATH": "1"})


def moments(db: Database, workspace: Workspace, run_id: int):
    """Conditions to kill a worker at: within an epoch, as a checkpoint lands (between it and the
    epoch's row, when the kill is quick enough), while validating, and at start-up."""
    last = workspace.checkpoint_path(run_id, "last")

    def mid_epoch(_since):
        phase = db.get_run(run_id).phase or ""
        return " step " in phase and not phase.endswith(f" step 0/{STEPS_PER_EPOCH}")

    def checkpointed(since):
        return last.exists() and last.stat().st_mtime_ns > since

    def validating(_since):
        return "validating" in (db.get_run(run_id).phase or "")

    def starting(_since):
        return db.get_run(run_id).phase in ("importing torch", "building the model")

    return [("at start-up", starting), ("mid-epoch", mid_epoch), ("as a checkpoint lands", checkpointed), ("validating", validating)]


def kill_when(worker: subprocess.Popen, moment, since: int, timeout: float = 120) -> bool:
    """Kill ``worker`` as soon as ``moment`` holds (or when it ended by itself); whether it was."""
    deadline = time.time() + timeout
    while time.time() < deadline and worker.poll() is None and not moment(since):
        time.sleep(0.01)
    worker.kill()
    worker.wait()
    return worker.returncode == -signal.SIGKILL


def test_a_worker_killed_at_any_moment_resumes_with_every_epoch_and_step_once(db, home, cells):
    (run,), _ = control.queue_runs(db, config(cells))
    kills = []
    for name, moment in moments(db, home, run.id):
        assert states.move(db, run.id, "running")
        last = home.checkpoint_path(run.id, "last")
        since = last.stat().st_mtime_ns if last.exists() else 0
        if kill_when(start_worker(home, run.id), moment, since):
            kills.append((name, db.get_run(run.id).epochs_done))
        if db.get_run(run.id).status != "running":
            break  # finished before the moment came
        assert states.finish(db, run.id, "interrupted")  # what the scheduler records for a dead worker
    if db.get_run(run.id).status != "completed":
        if db.get_run(run.id).status != "running":
            assert states.move(db, run.id, "running")
        worker = start_worker(home, run.id)
        assert worker.wait(timeout=300) == 0
    done = db.get_run(run.id)
    assert done.status == "completed", kills
    assert len(kills) >= 3, f"too few kills landed: {kills}"  # bench/faults.py tries many more
    epochs = db.epochs(run.id)
    assert [e.epoch for e in epochs] == [1, 2, 3, 4], kills
    assert [s for s, _ in db.steps(run.id)] == list(range(1, 4 * STEPS_PER_EPOCH + 1)), kills
    assert [e.step for e in epochs] == [STEPS_PER_EPOCH * i for i in range(1, 5)]
    by_loss = metric("val_loss")
    best = epochs[0]
    for epoch in epochs[1:]:
        best = epoch if by_loss.better(epoch.val_loss, best.val_loss) else best
    assert done.best_epoch == best.epoch and load_checkpoint(home.checkpoint_path(run.id, "best"))["epoch"] == best.epoch


def test_a_stopped_worker_is_failed_within_20_seconds_and_reaped(db, home, cells):
    (run,), _ = control.queue_runs(db, config(cells, epochs=500, model=TINY_NET))
    daemon.start_detached(home, Options(idle_timeout=30))
    pid = wait_for(lambda: db.get_run(run.id).epochs_done >= 1 and db.get_run(run.id).pid, 120, "training")
    os.kill(pid, signal.SIGSTOP)
    stopped_at = time.time()
    wait_for(lambda: db.get_run(run.id).status == "failed", 25, "failed for silence")
    assert time.time() - stopped_at < 20 + 1
    assert "no heartbeat" in db.get_run(run.id).error
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), 10, "the worker reaped, not a zombie")


def test_a_killed_scheduler_leaves_its_workers_training_and_the_next_one_adopts_them(db, home, cells):
    # The tests' small network, with epochs enough to train on through the second scheduler's start.
    (run,), _ = control.queue_runs(db, config(cells, epochs=ADOPTED_EPOCHS, model=TINY_NET))
    first = daemon.start_detached(home, Options(idle_timeout=30))
    worker = wait_for(lambda: db.get_run(run.id).epochs_done >= 1 and db.get_run(run.id).pid, 120, "training")
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: daemon.running_pid(home) is None, 10, "scheduler gone")
    second = daemon.start_detached(home, Options(idle_timeout=30))
    assert second != first
    wait_for(lambda: "adopted run" in (home.home / "scheduler.log").read_text(), 15, "adopted")
    assert db.get_run(run.id).pid == worker, "the same worker trains on"
    wait_for(lambda: db.get_run(run.id).status == "completed", 240, "the adopted run completes")
    assert [e.epoch for e in db.epochs(run.id)] == list(range(1, ADOPTED_EPOCHS + 1))


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_database_is_one_clear_line(tmp_path, damage):
    home = tmp_path / "home"
    Database(Workspace(home).ensure().db_url).close()  # a workspace, its database made
    path = home / "leuktui.db"
    if damage == "garbage":
        path.write_bytes(b"this is not a database file at all" * 100)
    else:
        with path.open("r+b") as handle:
            handle.truncate(1000)
    for args in (("ls",), ("show", "1"), ("queue", "ls")):
        result = run_cli(*args, home=home, check=False)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1, (args, result.stderr)
        assert str(path) in lines[0] and "cannot open the database" in lines[0], lines[0]


@pytest.fixture
def full_disk(tmp_path):
    """A 1 MiB file system, as a full disk behaves."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        if os.environ.get("CI"):
            pytest.fail("a tmpfs could not be mounted (needs root)")
        pytest.skip("mounting a tmpfs needs root: the full-disk faults are not tried")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_leaves_the_previous_checkpoint_and_the_cache_intact(full_disk):
    saver = CheckpointSaver(full_disk / "checkpoints", "val_acc")
    small = {"model": {"w": torch.zeros(10)}, "epoch": 1, "step": 1, "config": {}}
    assert saver.save(small, {"epoch": 1, "val_acc": 0.5})
    big = {"model": {"w": torch.zeros(1_000_000)}, "epoch": 2, "step": 2, "config": {}}
    with pytest.raises(CheckpointError, match="last.pt: cannot be written \\(No space left on device\\); the previous checkpoint is kept"):
        saver.save(big, {"epoch": 2, "val_acc": 0.9})
    assert load_checkpoint(saver.path("last"))["epoch"] == 1 and load_checkpoint(saver.path("best"))["epoch"] == 1
    assert sorted(p.name for p in (full_disk / "checkpoints").iterdir()) == ["best.pt", "last.pt"], "no half-written file"

    import numpy as np

    from engine.pipeline import _save_cache

    _save_cache(full_disk / "cache" / "x.npy", np.zeros((4, 400, 400, 3), dtype=np.uint8))  # does not fit: skipped
    assert not (full_disk / "cache" / "x.npy").exists() and list((full_disk / "cache").iterdir()) == []


def test_an_export_to_a_full_disk_is_one_line_and_leaves_no_file(tmp_path, full_disk, cells):
    home = tmp_path / "home"
    cli("run", "--data-dir", str(cells), "--image-size", "16", "--epochs", "1", "--batch-size", "8", "--amp", "off", home=home)
    filler = full_disk / "filler"
    with filler.open("wb") as out, contextlib.suppress(OSError):
        out.write(b"\0" * (1 << 20))
    result = run_cli("export", "1", "-o", str(full_disk / "submission.csv"), home=home, check=False)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert lines[0] == f"leuktui: error: {full_disk / 'submission.csv'}: No space left on device", "the line names the file"
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler"]
    shutil.rmtree(home, ignore_errors=True)


def test_a_workspace_on_a_full_disk_says_the_disk_is_full(full_disk, cells):
    home = full_disk / "home"
    run_cli("queue", "--data-dir", str(cells), "--no-start", home=home)  # a process of its own: its database closed after
    with (full_disk / "filler").open("wb") as out, contextlib.suppress(OSError):
        out.write(b"\0" * (1 << 20))
    for args in (("ls",), ("show", "1")):
        result = run_cli(*args, home=home, check=False)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1, result.stderr
        assert str(home / "leuktui.db") in lines[0] and lines[0].endswith(
            "; its file system is full (no space left on device): free some there and try again"), lines[0]



def test_data_synth_on_a_full_disk_is_one_line_naming_the_folder_and_leaves_nothing(full_disk):
    root = full_disk / "cells"
    result = cli("data", "synth", str(root), "--n-train", "200", "--size", "128", check=False)  # 10 MB of images into 1 MiB
    assert result.returncode == 1 and result.stderr.strip().splitlines() == [
        f"leuktui: error: {root}: the dataset could not be written (No space left on device); nothing written"], result.stderr
    assert list(full_disk.iterdir()) == [], "no dataset and no half-written staging folder"


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGHUP])
def test_data_synth_ended_by_a_signal_leaves_no_half_written_folder(tmp_path, signal_number):
    root = tmp_path / "cells"
    process = subprocess.Popen([sys.executable, "-m", "leuktui", "data", "synth", str(root), "--n-train", "5000", "--size", "128"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal_number, signal.SIG_DFL))  # as a terminal's job has it

    wait_for(lambda: len(list(tmp_path.glob(".cells-*/new_dataset/train/*.bmp"))) >= 20, 60,
             "the synthetic images being drawn in the staging folder")
    process.send_signal(signal_number)
    _out, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal_number, err
    assert list(tmp_path.iterdir()) == [], "neither the dataset nor its staging folder is left"



def test_a_second_signal_while_a_command_cleans_up_ends_it_at_once():
    """The first TERM ends a command as an exception (its clean-up runs); a second one, while that
    runs, ends the process there and then, as the user asked twice."""
    script = ("import sys, time\n"
              "from engine.files import ended_by_signals\n"
              "with ended_by_signals():\n"
              "    try:\n"
              "        print('ready', flush=True); time.sleep(60)\n"
              "    except SystemExit:\n"
              "        print('cleaning', flush=True); time.sleep(60); raise\n")
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL))
    assert process.stdout.readline().strip() == "ready"
    process.send_signal(signal.SIGTERM)
    assert process.stdout.readline().strip() == "cleaning"
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == -signal.SIGTERM and time.monotonic() - started < 20



def test_a_signal_that_lands_where_python_ignores_exceptions_still_ends_the_command():
    """A TERM handled inside a __del__ or a weakref callback (Python's collector runs them at any
    moment) raised its SystemExit where Python ignores exceptions: the command ran on to the end
    and exited 0. The signal is delivered again, and ends the command."""
    script = ("import os, signal, time\n"
              "from engine.files import ended_by_signals\n"
              "class Collected:\n"
              "    def __del__(self):\n"
              "        os.kill(os.getpid(), signal.SIGTERM)\n"
              "        for _ in range(100000):\n"
              "            pass\n"
              "with ended_by_signals():\n"
              "    try:\n"
              "        item = Collected(); del item\n"
              "        time.sleep(20); print('ran on', flush=True)\n"
              "    except SystemExit:\n"
              "        print('ended', flush=True); raise\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                            preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL))
    assert (result.returncode, result.stdout.strip()) == (128 + signal.SIGTERM, "ended"), result.stderr


@pytest.fixture
def db(home):
    database = Database(home.db_url)
    yield database
    database.close()


def test_the_database_file_of_another_process_in_an_exclusive_lock_is_one_line(tmp_path):
    home = tmp_path / "home"
    Database(Workspace(home).ensure().db_url).close()  # a workspace, its database made
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sqlite3, sys, time\n"
        f"c = sqlite3.connect({str(home / 'leuktui.db')!r}, isolation_level=None)\n"
        "c.execute('PRAGMA locking_mode=EXCLUSIVE'); c.execute('BEGIN EXCLUSIVE')\n"
        "print('held', flush=True); time.sleep(120)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        result = run_cli("ls", home=home, check=False, env={"LEUKTUI_BUSY_TIMEOUT_MS": "500"})
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1 and "database is locked" in lines[0], result.stderr
    finally:
        holder.kill()
        holder.wait()
    with Database(f"sqlite:///{home / 'leuktui.db'}").engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM run")).scalar() == 0
