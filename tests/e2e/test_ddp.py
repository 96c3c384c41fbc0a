"""One run on two processes: torchrun and gloo on this CPU, as on a GPU node with NCCL. Epochs
are recorded once, by rank 0; each validation image is scored once; the checkpoint is a one-process
checkpoint; a rank killed with SIGKILL fails the run with nothing left running, and resume (with
another number of processes) finishes it."""

from __future__ import annotations

import json
import os
import signal
import stat
import time

import psutil
import pytest

from conftest import TINY_NET, cli, run_cli, wait_for
from db import Database
from engine.synth import make_dataset
from runner import daemon
from runner.options import Options

VALID = 20
FAULT_EPOCHS = 20


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("ddp") / "cells", n_train=96, n_valid=VALID, n_test=8, size=16, seed=13)


def flags(cells, *extra: str) -> list[str]:
    return ["--data-dir", str(cells), "--image-size", "16", "--batch-size", "8", "--rotation", "0", "--amp", "off",
            "--workers", "0", *extra]


def processes_of(home, run_id: int) -> list[psutil.Process]:
    """Every process of the run still there: its ranks, and torchrun. A worker is known by its
    run id and its home: another test, on another xdist worker, may train a run 1 of its own."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        argv = process.info["cmdline"] or []
        if "engine.worker" in argv and str(run_id) in argv and str(home.home) in argv:
            found.append(process)
    return found


def test_leuktui_run_nproc_2_trains_two_gloo_processes_and_one_process_reproduces_its_validation(home, cells, tmp_path):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    result = run_cli("run", *flags(cells, "--epochs", "2", "--nproc", "2", "--name", "ddp", "--model", TINY_NET), home=home.home,
                     env={"TMPDIR": str(scratch), "LEUKTUI_SHARE": "group"})
    run_id = int(result.stdout.strip().splitlines()[-1])
    db = Database(home.db_url)
    run = db.get_run(run_id)
    assert run.status == "completed" and run.environment["processes"] == 2
    epochs = db.epochs(run_id)
    assert [e.epoch for e in epochs] == [1, 2]  # once each, though two processes trained them
    for epoch in epochs:
        assert sum(map(sum, epoch.confusion)) == VALID  # every validation image once, none twice
    log = home.log_path(run_id).read_text()
    assert "rank 0/2" in log and "rank 1/2" in log and "2 processes" in log
    assert log.count(" INFO epoch 1/2 ") == 1  # rank 0 alone writes the log
    # torchrun's folders (a launch's, an attempt's, a rank's) are the run's, not left in $TMPDIR, and
    # as open as the workspace's (a lab sharing it can delete the run), though torchrun makes them owner-only.
    assert sorted(p.name for p in home.torchrun_dir(run_id).glob("*/attempt_0/*")) == ["0", "1"]
    assert not list(scratch.glob("torchelastic_*"))
    folders = [home.torchrun_dir(run_id), *(p for p in home.torchrun_dir(run_id).rglob("*") if p.is_dir())]
    assert len(folders) == 5 and {stat.S_IMODE(p.stat().st_mode) for p in folders} == {0o770}

    best = next(e for e in epochs if e.epoch == run.best_epoch)
    evaluated = json.loads(cli("eval", str(run_id), "--json", home=home.home).stdout)  # one process, the best checkpoint
    assert evaluated["n"] == VALID
    assert evaluated["acc"] == pytest.approx(best.val_acc) and evaluated["auc"] == pytest.approx(best.auc, abs=1e-6)
    db.close()


def test_cancel_stops_every_rank_a_killed_rank_fails_the_run_within_20_s_and_resume_finishes_it(home, cells):
    db = Database(home.db_url)
    # The tests' small network, with epochs enough that the cancel and the kill each land mid-run.
    queued = json.loads(cli("queue", *flags(cells, "--epochs", str(FAULT_EPOCHS), "--nproc", "2", "--name", "ddp-faults", "--model", TINY_NET),
                            "--json", "--no-start", home=home.home).stdout)
    (run_id,) = queued["run_ids"]
    daemon.start_detached(home, Options(max_parallel=2, idle_timeout=30))
    wait_for(lambda: db.get_run(run_id).epochs_done >= 1, 120, "the first epoch")

    # Cancel: every rank stops after the same step, with a checkpoint; the run resumes.
    cli("cancel", str(run_id), home=home.home)
    cancelled = wait_for(lambda: (r := db.get_run(run_id)).status == "cancelled" and r, 30, "the run to be cancelled")
    wait_for(lambda: not processes_of(home, run_id), 20, "every process of the cancelled run gone")
    assert home.checkpoint_path(run_id, "last").is_file() and cancelled.error is None
    # The ranks were asked, not torchrun: it saw them end well and exited without a traceback.
    assert "Traceback" not in home.log_path(run_id).read_text()
    cli("resume", str(run_id), "--no-start", home=home.home)
    daemon.start_detached(home, Options(max_parallel=2, idle_timeout=30))
    wait_for(lambda: db.get_run(run_id).status == "running" and db.get_run(run_id).epochs_done > cancelled.epochs_done, 120,
             "the resumed run's next epoch")

    # SIGKILL to one rank: the run fails within 20 s and nothing of it is left.
    ranks = wait_for(lambda: len(r := [p for p in processes_of(home, run_id) if "torch.distributed.run" not in p.cmdline()]) == 2 and r,
                     30, "two ranks")
    victim = next(p for p in ranks if p.pid != db.get_run(run_id).pid)  # rank 1 (rank 0 recorded its pid)
    killed_at = time.monotonic()
    os.kill(victim.pid, signal.SIGKILL)
    failed = wait_for(lambda: (r := db.get_run(run_id)).status == "failed" and r, 20, "the run to fail")
    assert time.monotonic() - killed_at < 20
    wait_for(lambda: not processes_of(home, run_id), 20, "every process of the run gone")
    assert failed.epochs_done < FAULT_EPOCHS

    # Resume with one process: the checkpoint of two is a checkpoint of one.
    cli("resume", str(run_id), "--nproc", "1", "--no-start", home=home.home)
    daemon.start_detached(home, Options(max_parallel=2, idle_timeout=30))
    finished = wait_for(lambda: (r := db.get_run(run_id)).status == "completed" and r, 120, "the resumed run to finish")
    assert finished.config["nproc"] == 1 and [e.epoch for e in db.epochs(run_id)] == list(range(1, FAULT_EPOCHS + 1))
    assert home.log_path(run_id).read_text().count("resuming after epoch") == 2
    db.close()


def test_what_several_processes_cannot_do_here_is_one_line_naming_the_flag(tmp_path, cells):
    home = tmp_path / "home"
    for extra, says in (
        (["--nproc", "2", "--sync-bn"], "--sync-bn: SyncBatchNorm needs GPUs"),
        (["--nodes", "2"], "--nodes: 2 nodes for one run need a batch system; the local backend runs on this host"),
        (["--nproc", "0"], "--nproc: 0 is outside [1, 64]"),
    ):
        result = cli("queue", *flags(cells, *extra), "--no-start", home=home, check=False)
        assert result.returncode == 2 and says in result.stderr, result.stderr
    assert not (home / "leuktui.db").exists() or not Database(f"sqlite:///{home / 'leuktui.db'}").list_runs()
    (run_id,) = json.loads(cli("queue", *flags(cells, "--nproc", "2"), "--json", "--no-start", home=home).stdout)["run_ids"]
    control_cancel = cli("cancel", str(run_id), home=home)
    assert "cancelled" in control_cancel.stdout
    too_many = cli("resume", str(run_id), "--nproc", "99", "--no-start", home=home, check=False)
    assert too_many.returncode == 2 and "--nproc: 99 is outside [1, 64]" in too_many.stderr


def test_the_scheduler_gives_a_run_of_n_processes_n_gpus_or_its_share_of_the_cpu(home, cells, monkeypatch):
    from engine.config import RunConfig
    from runner import control
    from runner.backends.base import Handle
    from runner.scheduler import Scheduler

    db = Database(home.db_url)
    two, one = (control.create_run(db, RunConfig.from_dict({"data_dir": str(cells), "nproc": n})) for n in (2, 1))
    on_gpus = Scheduler(home, db, Options(per_gpu=1), gpus=[0, 1, 2])
    free = on_gpus.slots()
    assert on_gpus.place(two, free) == "cuda:0,1"
    env = on_gpus.worker_env("cuda:0,1", two)
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1" and env["LEUKTUI_NPROC"] == "2"
    on_gpus.handles[two.id] = Handle(two.id, 1, "cuda:0,1", 0.0)
    free = on_gpus.slots()
    assert free == {"cuda:0": 0, "cuda:1": 0, "cuda:2": 1, "cpu": 1}  # two GPUs taken by one run
    assert on_gpus.place(one, free) == "cuda:2" and on_gpus.place(two, free) is None

    on_cpu = Scheduler(home, db, Options(max_parallel=3), gpus=[])
    four = control.create_run(db, RunConfig.from_dict({"data_dir": str(cells), "nproc": 4}))
    assert on_cpu.cpu_slots(four) == 3 and on_cpu.cpu_slots(two) == 2  # at most all the slots: it can run alone
    on_cpu.handles[one.id] = Handle(one.id, 1, "cpu", 0.0, slots=1)
    free = on_cpu.slots()
    assert on_cpu.place(two, free) == "cpu" and on_cpu.place(four, free) is None
    monkeypatch.setattr("runner.scheduler.usable_cpus", lambda: 12)  # 12 CPUs this process may use
    assert on_cpu.worker_env("cpu", two)["LEUKTUI_THREADS"] == "8"  # two slots of three: 8 threads
    monkeypatch.setattr("runner.scheduler.usable_cpus", lambda: 1)
    assert on_cpu.worker_env("cpu", two)["LEUKTUI_THREADS"] == "1"  # never none
    db.close()
