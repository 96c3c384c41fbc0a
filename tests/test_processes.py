"""Processes and shared resources: a worker is known by pid and start time, threads of one
process take turns on the writer lock, and a run's phase reaches the database and the CLI."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import cli, wait_for
from db import Database, states
from engine import worker
from runner import scheduler
from runner.processes import is_alive, is_worker, process_start_time


@pytest.fixture
def fake_worker():
    """A live process whose command line looks like run 5's worker."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "engine.worker", "5"])
    yield process
    process.kill()
    process.wait()


def test_a_worker_is_known_by_its_pid_and_start_time(fake_worker):
    started = process_start_time(fake_worker.pid)
    assert started is not None and is_worker(fake_worker.pid, 5, started)
    assert not is_worker(fake_worker.pid, 6, started), "another run's worker"
    assert not is_worker(fake_worker.pid, 5, started - 100), "the pid was reused by a newer process"
    fake_worker.kill()
    fake_worker.wait()
    assert not is_alive(fake_worker.pid, started)


def test_the_scheduler_never_adopts_a_reused_pid(db, workspace, fake_worker):
    run = db.create_run(config={"epochs": 1}, config_hash="x", model="resnet18", name="r")
    assert states.move(db, run.id, "running", host=scheduler.socket.gethostname(), pid=fake_worker.pid,
                       pid_started_at=process_start_time(fake_worker.pid) - 50)
    sched = scheduler.Scheduler(workspace, db, gpus=[])
    sched.reconcile()
    assert run.id not in sched.handles
    assert db.get_run(run.id).status == "interrupted"
    assert fake_worker.poll() is None, "and never signalled"


def test_threads_of_one_process_take_turns_on_the_writer_lock(db):
    inside, most, errors = [0], [0], []
    lock = threading.Lock()

    def write() -> None:
        try:
            for _ in range(20):
                with db._writer_turn():
                    with lock:
                        inside[0] += 1
                        most[0] = max(most[0], inside[0])
                    time.sleep(0.001)
                    with lock:
                        inside[0] -= 1
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=write) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and most[0] == 1


def test_the_heartbeat_carries_the_phase_to_the_database_and_ls(db, workspace, monkeypatch):
    monkeypatch.setattr(worker, "HEARTBEAT_SECONDS", 0.05)
    run = db.create_run(config={"epochs": 6}, config_hash="x", model="resnet18", name="phased")
    assert states.move(db, run.id, "running")
    pulse, done, stop = worker.Pulse(), threading.Event(), threading.Event()
    thread = threading.Thread(target=worker.heartbeat, args=(db, run.id, pulse, done, stop))
    thread.start()
    try:
        pulse.set("decoding train images 340/600")
        deadline = time.time() + 5
        while db.get_run(run.id).phase != "decoding train images 340/600" and time.time() < deadline:
            time.sleep(0.02)
        changed = db.get_run(run.id)
        assert changed.phase == "decoding train images 340/600"
        assert [r.id for r in Database(db.url).runs_changed_since(changed.updated_at - 0.001)] == [run.id], "the app's poll sees it"
    finally:
        done.set()
        thread.join()
    listed = json.loads(cli("ls", "--json", home=workspace.home).stdout)
    assert listed[0]["phase"] == "decoding train images 340/600" and listed[0]["status"] == "running"
    assert "decoding train images 340/600" in cli("ls", home=workspace.home).stdout
    states.finish(db, run.id, "completed")
    assert db.get_run(run.id).phase is None


def test_a_change_is_stamped_after_the_writer_turn_is_taken(db):
    """A change poll reads runs with ``updated_at`` after its last look: a stamp taken before
    waiting for the lock could land behind one that committed first, and be missed."""
    run = db.create_run(config={}, config_hash="x", model="resnet18", name="r")
    held = threading.Event()

    def hold_the_turn() -> None:
        with db._writer_turn():
            held.set()
            time.sleep(0.3)

    holder = threading.Thread(target=hold_the_turn)
    holder.start()
    held.wait()
    asked = time.time()
    db.update_run(run.id, notes="changed")
    holder.join()
    assert db.get_run(run.id).updated_at >= asked + 0.25


def test_delete_refuses_a_run_that_is_running_now(db):
    from db.api import RunBusy

    run = db.create_run(config={}, config_hash="x", model="resnet18", name="r")
    assert states.move(db, run.id, "running")  # after a caller read it as queued
    with pytest.raises(RunBusy, match=f"run {run.id} is running; cancel it first"):
        db.delete_run(run.id)
    assert db.get_run(run.id).status == "running"
    assert states.finish(db, run.id, "cancelled")
    db.delete_run(run.id)
    assert run.id not in db.run_ids()


def test_a_worker_whose_run_is_not_running_trains_nothing(db, workspace):
    run = db.create_run(config={"epochs": 1}, config_hash="x", model="resnet18", name="r")
    states.move(db, run.id, "running")
    states.finish(db, run.id, "interrupted")  # the scheduler gave it up before the worker began
    result = subprocess.run([sys.executable, "-m", "engine.worker", str(run.id), "--home", str(workspace.home)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and f"run {run.id} is interrupted, not running; nothing to train" in result.stderr
    assert db.get_run(run.id).status == "interrupted" and db.get_run(run.id).pid is None


def test_files_are_private_by_default_and_group_shared_on_request(tmp_path, tiny_data):
    import stat

    for share, forbidden in (("private", 0o077), ("group", 0o007)):
        home = tmp_path / share
        cli("queue", "--data-dir", str(tiny_data), "--no-start", home=home, env={"LEUKTUI_SHARE": share})
        written = [home, *home.rglob("*")]
        assert written and all(stat.S_IMODE(p.stat().st_mode) & forbidden == 0 for p in written), share
        if share == "group":
            assert stat.S_IMODE((home / "leuktui.db").stat().st_mode) & 0o060 == 0o060
    bad = cli("ls", home=tmp_path / "x", check=False, env={"LEUKTUI_SHARE": "world"})
    assert bad.returncode == 1 and bad.stderr.strip() == "leuktui: error: LEUKTUI_SHARE='world': expected one of private, group"


def test_a_write_behind_a_stopped_holder_of_the_lock_waits_a_bounded_time(db, monkeypatch):
    from db import DatabaseError

    run = db.create_run(config={}, config_hash="x", model="resnet18", name="r")
    lock = str(db._write_lock_path)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({lock!r}, os.O_RDWR)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('held', flush=True)\n"
        "time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        holder.send_signal(signal.SIGSTOP)  # a stopped process holding the turn
        db.write_wait = 0.5  # a bounded wait, as the scheduler's, the app's and the command line's are
        asked = time.time()
        with pytest.raises(DatabaseError, match="write.lock: another process has held the database's write lock for 0.5 s"):
            db.update_run(run.id, notes="blocked")
        assert time.time() - asked < 5
        holder.kill()
        holder.wait()
        db.update_run(run.id, notes="after")  # the abandoned wait released what it got
        db.update_run(run.id, notes="again")
        assert db.get_run(run.id).notes == "again"
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this platform")
def test_a_process_counts_the_cpus_it_may_use_not_the_machines():
    """What the scheduler and a DDP worker divide into threads: under `taskset` (or a pinned test
    worker, or a Slurm CPU binding) the affinity's CPUs, never every core of the machine."""
    probe = "import os, sys; from db.settings import usable_cpus; os.sched_setaffinity(0, {int(sys.argv[1])}); print(usable_cpus())"
    first = min(os.sched_getaffinity(0))
    pinned = subprocess.run([sys.executable, "-c", probe, str(first)], capture_output=True, text=True, check=True)
    assert pinned.stdout.strip() == "1"
    from db.settings import usable_cpus

    assert usable_cpus() == len(os.sched_getaffinity(0)) >= 1


def _stand_in_torchrun(tmp_path):
    """A process whose command line is torchrun's, with two ranks (each in a session of its own, as
    torchrun starts them) and a data-loading child of the first rank in that rank's group."""
    script = (
        "import subprocess, sys, time\n"
        "rank = [sys.executable, '-c', 'import subprocess, sys, time; subprocess.Popen([sys.executable, \"-c\", \"import time; time.sleep(60)\"]);"
        " time.sleep(60)', 'engine.worker', '5']\n"
        "ranks = [subprocess.Popen(rank, start_new_session=True) for _ in range(2)]\n"
        "print(' '.join(str(r.pid) for r in ranks), flush=True)\n"
        "time.sleep(60)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script, "torch.distributed.run", "engine.worker", "5"], stdout=subprocess.PIPE,
                               text=True, start_new_session=True)
    ranks = [int(pid) for pid in process.stdout.readline().split()]
    return process, ranks


@pytest.mark.parametrize("force", [False, True], ids=["cancel", "kill"])
def test_a_cancel_asks_torchruns_ranks_and_a_kill_leaves_none_of_its_processes(tmp_path, force):
    import psutil

    from db import Workspace
    from runner.backends.base import Handle
    from runner.backends.local import LocalBackend
    from runner.processes import torchrun_ranks

    process, ranks = _stand_in_torchrun(tmp_path)
    try:
        assert sorted(torchrun_ranks(process.pid)) == sorted(ranks)
        (loader,) = wait_for(lambda: psutil.Process(ranks[0]).children(), 20, "the first rank's data loader")
        handle = Handle(5, process.pid, "cpu", time.time(), process, pid_started_at=process_start_time(process.pid))
        LocalBackend(Workspace(tmp_path)).cancel(handle, force=force)
        wait_for(lambda: not any(is_alive(pid) for pid in ranks), 10, "each rank ended by the signal")  # a zombie is not alive
        if force:  # torchrun and a rank's data loader (its group) are killed too
            assert process.wait(timeout=10) == -signal.SIGKILL
            wait_for(lambda: not is_alive(loader.pid), 10, "the rank's data loader killed")
        else:  # torchrun itself is left to see its ranks end
            time.sleep(0.5)
            assert process.poll() is None and is_alive(loader.pid)
    finally:
        for pid in [process.pid, *ranks]:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        process.wait()
