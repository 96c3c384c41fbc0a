"""A real Optuna study on the local backend: its trials train as runs in worker processes, the
median pruner stops some, a scheduler killed mid-study is started again and the study ends with
exactly its trials, and Optuna, opened from a process of its own, sees what leuktui shows."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from conftest import TINY_NET, cli, wait_for
from db import Database
from db.vocabulary import COMPLETED, PRUNED
from engine.synth import make_dataset
from runner import daemon
from runner.options import Options

TRIALS = 6  # 2 start-up trials, then 4 the median pruner judges (unhurried, it stops trials 3, 4 and 5: lr 0.037, 2e-5, 0.031)


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("study") / "cells", n_train=64, n_valid=48, n_test=8, size=16, seed=11)


def optuna_from_outside(load_study: str) -> list[dict]:
    """The study's trials as a plain ``optuna.load_study`` in another process reads them."""
    script = (
        "import json, optuna\n"
        "optuna.logging.set_verbosity(optuna.logging.WARNING)\n"
        f"study = {load_study}\n"
        "print(json.dumps({'trials': [{'number': t.number, 'state': t.state.name, 'value': t.value, 'params': t.params,"
        " 'steps': sorted(t.intermediate_values)} for t in study.trials], 'best': study.best_trial.number,"
        " 'best_params': study.best_params}))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    return json.loads(result.stdout)


def test_a_median_study_prunes_survives_a_killed_scheduler_and_optuna_reads_the_same_trials(home, cells):
    created = cli("study", "create", "lr-search", "--space", "lr=log:1e-5:1e-1; batch_size=8,16", "--trials", str(TRIALS),
                  "--parallel", "2", "--pruner", "median", "--startup-trials", "2", "--warmup-epochs", "0", "--data-dir", str(cells),
                  "--image-size", "16", "--epochs", "4", "--rotation", "0", "--amp", "off", "--workers", "0", "--seed", "3",
                  "--model", TINY_NET, "--no-start", "--json", home=home.home)
    study_id = json.loads(created.stdout)["study_id"]
    db = Database(home.db_url)
    first = daemon.start_detached(home, Options(max_parallel=2, idle_timeout=30))

    def trial_runs():
        return [run for run in db.sweep_runs(study_id) if run.trial is not None]

    # Mid-study: some trials given, some still to come, and the kill lands while they train: not in the
    # instant between a run's claim and its worker's pid being recorded (a run killed there is ended
    # interrupted by the next scheduler, to be resumed, by design; tests/e2e/test_scheduler.py).
    def training() -> bool:
        runs = trial_runs()
        running = [r for r in runs if r.status == "running"]
        return len(runs) >= 3 and bool(running) and all(r.pid for r in running)

    wait_for(training, 120, "three trials given, the running ones with their workers")
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: daemon.running_pid(home) is None, 10, "the scheduler gone")
    given_before = len(trial_runs())
    assert given_before < TRIALS
    second = daemon.start_detached(home, Options(max_parallel=2, idle_timeout=30))
    assert second != first

    # Waits on the study's row (a cheap read that leaves the CPU to the trials), then asks as a user would.
    wait_for(lambda: any(s.id == study_id and s.study.get("finished_at") for s in db.studies()), 400, "the study to finish", interval=0.5)
    shown = json.loads(cli("study", "show", "lr-search", "--json", home=home.home).stdout)
    assert shown["state"] == "finished"
    runs = {run.id: run for run in trial_runs()}
    assert len(runs) == TRIALS and len(shown["trials"]) == TRIALS
    numbers = sorted(run.trial for run in runs.values())
    assert numbers == sorted(set(numbers)), "one run per trial"
    assert {run.status for run in runs.values()} <= {COMPLETED, PRUNED}
    pruned = [run for run in runs.values() if run.status == PRUNED]
    assert pruned, "the median pruner stopped at least one trial"
    for run in pruned:  # stopped early, after a checkpoint, which is there
        assert 1 <= run.epochs_done < 4
        assert home.checkpoint_path(run.id, "last").is_file()
    listed = json.loads(cli("ls", "--status", "pruned", "--json", home=home.home).stdout)
    assert sorted(r["id"] for r in listed) == sorted(r.id for r in pruned)

    # Optuna itself, from a process of its own, through the line `study show` prints.
    outside = optuna_from_outside(shown["load_study"])
    assert len(outside["trials"]) == TRIALS
    by_number = {t["number"]: t for t in outside["trials"]}
    assert set(by_number) == set(numbers)
    for run in runs.values():
        trial = by_number[run.trial]
        assert trial["state"] == {"completed": "COMPLETE", "pruned": "PRUNED"}[run.status]
        assert trial["params"] == {"lr": pytest.approx(run.config["lr"]), "batch_size": run.config["batch_size"]}
        assert trial["steps"] == list(range(1, run.epochs_done + 1))
        if run.status == COMPLETED:
            assert trial["value"] == pytest.approx(run.summary["val_acc"])  # its best epoch's accuracy
    best_run = next(run for run in runs.values() if run.trial == outside["best"])
    assert shown["best"]["run_id"] == best_run.id
    assert best_run.summary["val_acc"] == max(r.summary["val_acc"] for r in runs.values() if r.status == COMPLETED)
    assert outside["best_params"] == {"lr": pytest.approx(best_run.config["lr"]), "batch_size": best_run.config["batch_size"]}
    log = (home.home / "scheduler.log").read_text()
    assert "could not be updated" not in log  # no pass of either scheduler failed
    db.close()
