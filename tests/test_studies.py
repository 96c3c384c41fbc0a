"""Studies without training: the space a user writes, what `study create` refuses, and the
scheduler's side of a study (``StudyDriver``) on SQLite and on PostgreSQL with Optuna's real
storage: trials given just in time, how each ended told to Optuna, a resumed trial continuing as a
new Optuna trial, and two schedulers sharing one database never giving one trial twice."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import cli, tiny_config, train_trial
from db import Database, Workspace, states
from db.vocabulary import FAILED, PRUNED, QUEUED, RUNNING
from engine.config import ConfigError
from engine.studies import TrialReporter, storage_of
from runner import control
from runner.space import grid_size, parse_space
from runner.studies import (
    StudyDriver,
    StudyRequest,
    create_study,
    find_study,
    more_trials,
    overview,
    stop_study,
)

# -- the space ---------------------------------------------------------------------------------------


def test_a_space_reads_like_the_grid_with_ranges():
    params = parse_space("lr=log:1e-4:1e-1; batch_size=16,32,64; rotation=0:45; model=resnet18,resnet50; epochs=2:8:2; hist_eq=true,false")
    by_name = {p.name: p for p in params}
    assert by_name["lr"].kind == "float" and by_name["lr"].log and (by_name["lr"].low, by_name["lr"].high) == (1e-4, 1e-1)
    assert by_name["batch_size"].choices == (16, 32, 64)  # coerced as the field takes them
    assert by_name["rotation"].kind == "float" and not by_name["rotation"].log
    assert by_name["epochs"].kind == "int" and by_name["epochs"].grid_values() == [2, 4, 6, 8]
    assert by_name["hist_eq"].choices == (True, False)
    assert grid_size(params) is None  # lr and rotation are continuous
    assert grid_size(parse_space("batch_size=16,32; epochs=2:8:2")) == 8
    assert parse_space(["lr=1e-3,1e-2", "seed=0:4"])[1].kind == "int"  # several --space flags add up


@pytest.mark.parametrize("space, says", [
    ("lr=0:1", "lr: 0.0 is outside (0.0, 10.0]"),
    ("lr=log:0:1", "a log range starts above 0"),
    ("learning_rate=1,2", "'learning_rate' is not a config field"),
    ("lr=0.1", "one value is not a search"),
    ("model=0:3", "a text field takes a list of values"),
    ("batch_size=1:8", "batch_size: 1 is outside [2, 4096]"),
    ("batch_size=2.5:8", "whole-number ends"),
    ("data_dir=a,b", "'data_dir' cannot be searched"),
    ("lr=1e-3,1e-2; lr=1,2", "'lr' is given twice"),
    ("lr=1e-3; lr=1e-2", "'lr' is given twice"),  # not "one value is not a search": the field twice is the mistake
    ("lr=1e-3,,1e-2", "lr: '1e-3,,1e-2' has an empty value"),
    ("batch_size=8,16,", "batch_size: '8,16,' has an empty value"),
    ("rotation=10:5", "the range '10:5' is empty"),
    ("optimizer=adam,lion", "optimizer: 'lion' is not one of adam, adamw, sgd"),
    ("lr=0.001:0.002:5", "the step 5 leaves one value"),
    ("", "empty"),
])
def test_a_space_that_cannot_be_searched_is_one_line_naming_the_factor(space, says):
    with pytest.raises(ConfigError) as caught:
        parse_space(space)
    assert caught.value.field == "space" and says in caught.value.message


def test_study_create_refuses_what_it_cannot_search(tmp_path, tiny_data):
    home = tmp_path / "home"
    data = ["--data-dir", str(tiny_data), "--no-start"]
    bad_space = cli("study", "create", "s", "--space", "lr=log:0:1", *data, home=home, check=False)
    assert bad_space.returncode == 2 and "--space: lr: a log range starts above 0" in bad_space.stderr
    grid_range = cli("study", "create", "s", "--space", "lr=log:1e-4:1e-1", "--sampler", "grid", *data, home=home, check=False)
    assert grid_range.returncode == 2 and "--sampler: the grid sampler takes lists and stepped ranges" in grid_range.stderr
    too_many = cli("study", "create", "s", "--space", "batch_size=8,16", "--sampler", "grid", "--trials", "3", *data, home=home, check=False)
    assert too_many.returncode == 2 and "3 trials, but the grid has 2 combinations" in too_many.stderr
    bad_metric = cli("study", "create", "s", "--space", "lr=1e-3,1e-2", "--metric", "val_speed", *data, home=home, check=False)
    assert bad_metric.returncode == 2 and "--metric: 'val_speed' is not a metric" in bad_metric.stderr
    two_bests = cli("study", "create", "s", "--space", "lr=1e-3,1e-2", "--metric", "val_loss", "--best-metric", "val_acc", *data,
                    home=home, check=False)  # the trials' best epoch would follow the one, the study the other
    assert two_bests.returncode == 2 and "--best-metric: a study's trials keep their best epoch by its --metric (val_loss)" in two_bests.stderr
    for name in ("no spaces", "trailing\n", "x" * 101):
        bad_name = cli("study", "create", name, "--space", "lr=1e-3,1e-2", *data, home=home, check=False)
        assert bad_name.returncode == 2 and "NAME:" in bad_name.stderr
    huge = cli("study", "create", "s", "--space", "batch_size=2:4096; epochs=1:10000", "--sampler", "grid", *data, home=home, check=False)
    assert huge.returncode == 2 and "the grid sampler takes at most 100,000" in huge.stderr
    vast = cli("study", "create", "s", "--space", "rotation=0:180:1e-300", "--sampler", "grid", *data, home=home, check=False)
    assert vast.returncode == 2 and "the grid has about 10^302 combinations" in vast.stderr and len(vast.stderr) < 300, vast.stderr
    assert not (home / "optuna.journal").exists() or "no spaces" not in (home / "optuna.journal").read_text()
    cli("study", "create", "s", "--space", "lr=1e-3,1e-2", *data, home=home)
    again = cli("study", "create", "s", "--space", "lr=1e-3,1e-2", *data, home=home, check=False)
    assert again.returncode == 1 and "study 's' exists already" in again.stderr
    missing = cli("study", "show", "nope", home=home, check=False)
    assert missing.returncode == 1 and "study 'nope': no such study (studies: s)" in missing.stderr
    assert json.loads(cli("study", "ls", "--json", home=home).stdout)[0]["trials_wanted"] == 20
    cli("study", "more", "s", "5", "--no-start", home=home)
    assert json.loads(cli("study", "ls", "--json", home=home).stdout)[0]["trials_wanted"] == 25


# -- the scheduler's side, on both databases --------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def study_home(request, tmp_path, monkeypatch) -> Workspace:
    """A workspace on SQLite (Optuna's journal file), or on PostgreSQL (Optuna's RDB storage)."""
    if request.param == "postgresql":
        monkeypatch.setenv("LEUKTUI_DB", request.getfixturevalue("pg_url"))
    return Workspace(tmp_path / "home").ensure()


def make_study(workspace: Workspace, data: Path, **settings) -> tuple[Database, object]:
    db = Database(workspace.db_url)
    request = StudyRequest(**{"name": "search", "space": "lr=log:1e-4:1e-1; batch_size=8,16", "trials": 4, "parallel": 2,
                              "startup_trials": 1, **settings})
    return db, create_study(db, workspace, request, tiny_config(data, epochs=3), check_configs=False)


def optuna_trials(workspace: Workspace) -> dict[int, object]:
    import optuna

    from engine.studies import open_storage

    study = optuna.load_study(study_name="search", storage=open_storage(storage_of(workspace)))
    return {t.number: t for t in study.get_trials()}


def test_trials_are_given_just_in_time_and_optuna_hears_how_each_ended(study_home, tiny_data):
    db, sweep = make_study(study_home, tiny_data)
    driver = StudyDriver(db, study_home)
    driver.tick(force=True)
    first = [r for r in db.sweep_runs(sweep.id)]
    assert [r.trial for r in first] == [0, 1] and all(r.status == QUEUED for r in first)  # parallel 2
    assert first[0].config["best_metric"] == "val_acc" and first[0].name == "search #0"
    driver.tick(force=True)
    assert len(db.sweep_runs(sweep.id)) == 2  # no room until one ends

    assert train_trial(db, study_home, first[0].id, [0.6, 0.7, 0.65])
    assert train_trial(db, study_home, first[1].id, [0.5], end=FAILED)
    driver.tick(force=True)
    told = optuna_trials(study_home)
    assert told[0].state.name == "COMPLETE" and told[0].value == pytest.approx(0.7)  # the best epoch's, not the last
    assert told[0].intermediate_values == {1: 0.6, 2: 0.7, 3: 0.65}
    assert told[1].state.name == "FAIL" and told[1].user_attrs["leuktui_status"] == FAILED
    runs = db.sweep_runs(sweep.id)
    assert [r.trial for r in runs] == [0, 1, 2, 3]  # two more, up to the 4 trials
    assert {k: v for k, v in told[2].params.items()} == {"lr": pytest.approx(runs[2].config["lr"]),
                                                          "batch_size": runs[2].config["batch_size"]}

    # The failed trial is resumed: it continues as a new Optuna trial, same parameters, its epochs so far.
    control.resume(db, first[1].id)
    driver.tick(force=True)
    resumed = db.get_run(first[1].id)
    assert resumed.trial == 4 and len(db.sweep_runs(sweep.id)) == 4
    told = optuna_trials(study_home)
    assert told[4].state.name == "RUNNING" and told[4].params == told[1].params and told[4].intermediate_values == {1: 0.5}
    assert told[4].user_attrs["continues_trial"] == 1
    assert train_trial(db, study_home, resumed.id, [0.8, 0.75])
    for run in runs[2:]:
        assert train_trial(db, study_home, run.id, [0.3, 0.2])
    driver.tick(force=True)
    driver.tick(force=True)
    told = optuna_trials(study_home)
    assert told[4].state.name == "COMPLETE" and told[4].value == pytest.approx(0.8)
    assert told[4].intermediate_values == {1: 0.5, 2: 0.8, 3: 0.75}
    summary = overview(db, find_study(db, "search"))
    assert summary["state"] == "finished" and summary["best"]["run_id"] == first[1].id
    assert not driver.wants_trials()
    db.close()


def test_a_resumed_trial_of_a_finished_study_gets_its_new_optuna_trial_before_its_worker_starts(study_home, tiny_data):
    db, sweep = make_study(study_home, tiny_data, trials=1, parallel=1)
    driver = StudyDriver(db, study_home)
    driver.tick(force=True)
    (run,) = db.sweep_runs(sweep.id)
    assert train_trial(db, study_home, run.id, [0.5, 0.6], end=FAILED)
    driver.tick(force=True)
    driver.tick(force=True)
    assert driver.active() == [] and overview(db, find_study(db, "search"))["state"] == "finished"
    control.resume(db, run.id)
    assert [s.id for s in driver.active()] == [sweep.id]  # busy again
    prepared = driver.prepare(db.get_run(run.id))  # what the scheduler does before it starts the worker
    assert prepared.trial == 1 and optuna_trials(study_home)[1].state.name == "RUNNING"
    assert train_trial(db, study_home, run.id, [0.9])
    driver.tick(force=True)
    driver.tick(force=True)
    told = optuna_trials(study_home)
    assert told[0].state.name == "FAIL" and told[1].state.name == "COMPLETE" and told[1].value == pytest.approx(0.9)
    assert told[1].intermediate_values == {1: 0.5, 2: 0.6, 3: 0.9}
    assert driver.active() == []
    db.close()


def test_a_pruned_trial_is_told_pruned_and_a_stopped_study_gives_no_more(study_home, tiny_data):
    db, sweep = make_study(study_home, tiny_data, pruner="median", trials=6, parallel=1)
    driver = StudyDriver(db, study_home)
    driver.tick(force=True)
    assert train_trial(db, study_home, db.sweep_runs(sweep.id)[0].id, [0.7, 0.8, 0.9])
    driver.tick(force=True)
    second = db.sweep_runs(sweep.id)[1]
    states.move(db, second.id, RUNNING, only_from=(QUEUED,))
    reporter = TrialReporter(study_home, sweep.study, second.trial, logging.getLogger("test"))
    assert not reporter.report(1, {"val_acc": 0.1})  # the first epoch is its warm-up
    assert reporter.report(2, {"val_acc": 0.1})      # below the median of the completed trial at epoch 2
    states.finish(db, second.id, PRUNED)
    driver.tick(force=True)
    assert optuna_trials(study_home)[1].state.name == "PRUNED"
    third = db.sweep_runs(sweep.id)[2]
    cancelled, stopping = stop_study(db, find_study(db, "search"))
    assert cancelled == [third.id] and stopping == []
    driver.tick(force=True)
    driver.tick(force=True)
    assert len(db.sweep_runs(sweep.id)) == 3 and db.get_run(third.id).status == "cancelled"
    assert optuna_trials(study_home)[2].state.name == "FAIL"
    assert overview(db, find_study(db, "search"))["state"] == "stopped"
    db.close()


AGENT = """
import sys, time
sys.path.insert(0, {tests!r})
from db import Database, Workspace
from runner.studies import StudyDriver
from conftest import train_trial
workspace = Workspace.resolve({home!r})
db = Database(workspace.db_url)
driver = StudyDriver(db, workspace)
deadline = time.time() + 120
trained = []
while time.time() < deadline:
    driver.tick(force=True)
    for run in db.sweep_runs({sweep}):
        if run.status == "queued" and train_trial(db, workspace, run.id, [0.5 + 0.01 * (run.trial or 0)]):
            trained.append(run.trial)
    if not driver.active():
        break
print(trained)
"""


def test_two_schedulers_sharing_the_database_never_give_one_trial_twice(study_home, tiny_data):
    db, sweep = make_study(study_home, tiny_data, trials=12, parallel=3, pruner="none")
    code = AGENT.format(tests=str(Path(__file__).parent), home=str(study_home.home), sweep=sweep.id)
    agents = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [agent.communicate(timeout=180) for agent in agents]
    assert all(agent.returncode == 0 for agent in agents), [err for _, err in outputs]
    trained = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    runs = db.sweep_runs(sweep.id)
    assert len(runs) == 12 and sorted(r.trial for r in runs) == list(range(12))
    assert sorted(trained[0] + trained[1]) == list(range(12))  # each trial trained by one of them, once
    told = optuna_trials(study_home)
    assert len(told) == 12 and all(t.state.name == "COMPLETE" for t in told.values())
    assert all(told[r.trial].value == pytest.approx(0.5 + 0.01 * r.trial) for r in runs)
    db.close()


def test_the_report_of_a_studys_runs_has_its_trials_best_importances_and_history(tmp_path, tiny_data):
    import csv

    from leuktui.report.build import build_report

    workspace = Workspace(tmp_path / "home").ensure()
    db, sweep = make_study(workspace, tiny_data, trials=3, parallel=3)
    driver = StudyDriver(db, workspace)
    driver.tick(force=True)
    first, second, third = db.sweep_runs(sweep.id)
    train_trial(db, workspace, first.id, [0.6, 0.8, 0.7])
    train_trial(db, workspace, second.id, [0.55, 0.6, 0.65])
    train_trial(db, workspace, third.id, [0.4, 0.45], end=PRUNED)
    driver.tick(force=True)
    result = build_report(db, workspace, db.sweep_runs(sweep.id), tmp_path / "report")
    markdown = (result.folder / "report.md").read_text()
    assert "## Studies" in markdown
    assert "Study 'search' (finished): 3 of 3 trials (2 completed, 1 pruned). Best: trial 0 (run 1), val_acc 80.00% at epoch 2" in markdown
    assert "Parameter importance (Optuna's fANOVA over the completed trials): " in markdown
    with open(result.folder / "tables" / f"study-{sweep.id}.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["trial"], r["status"]) for r in rows] == [("0", "completed"), ("1", "completed"), ("2", "pruned")]
    assert float(rows[2]["val_acc"]) == pytest.approx(0.45)  # a pruned trial's value: its last epoch's
    assert (result.folder / "figures" / f"study-{sweep.id}-history.png").is_file()
    db.close()


@pytest.mark.parametrize("pruner", ["asha", "hyperband"])
def test_successive_halving_pruners_cut_a_bad_trial_at_their_first_rung_and_never_in_the_warm_up(tmp_path, tiny_data, pruner):
    workspace = Workspace(tmp_path / "home").ensure()
    db, sweep = make_study(workspace, tiny_data, pruner=pruner, trials=4, parallel=4)
    driver = StudyDriver(db, workspace)
    driver.tick(force=True)
    runs = db.sweep_runs(sweep.id)
    for run, value in zip(runs[:3], (0.9, 0.8, 0.7), strict=True):
        assert train_trial(db, workspace, run.id, [value, value, value])
    driver.tick(force=True)
    states.move(db, runs[3].id, RUNNING, only_from=(QUEUED,))
    reporter = TrialReporter(workspace, sweep.study, runs[3].trial, logging.getLogger("test"))
    assert not reporter.report(1, {"val_acc": 0.1})  # the warm-up epoch
    pruned_at_rung = reporter.report(2, {"val_acc": 0.1})  # the first rung: epoch warm-up + 1
    if pruner == "asha":
        assert pruned_at_rung
    db.close()


def test_the_grid_sampler_tries_every_combination_once(tmp_path, tiny_data):
    workspace = Workspace(tmp_path / "home").ensure()
    db, sweep = make_study(workspace, tiny_data, space="rotation=0:1:0.25; batch_size=8,16", sampler="grid", trials=10,
                           parallel=3, pruner="none")
    driver = StudyDriver(db, workspace)
    for _ in range(6):
        driver.tick(force=True)
        for run in db.sweep_runs(sweep.id):
            train_trial(db, workspace, run.id, [0.5])
    tried = sorted((r.config["rotation"], r.config["batch_size"]) for r in db.sweep_runs(sweep.id))
    assert tried == sorted((r, b) for r in (0.0, 0.25, 0.5, 0.75, 1.0) for b in (8, 16))
    db.close()


def test_more_trials_counts_from_what_a_stopped_study_gave_and_no_pass_writes_back_stale_settings(tmp_path, tiny_data):
    workspace = Workspace(tmp_path / "home").ensure()
    db, sweep = make_study(workspace, tiny_data, trials=20, parallel=2)
    driver = StudyDriver(db, workspace)
    driver.tick(force=True)
    stop_study(db, find_study(db, "search"))
    assert more_trials(db, find_study(db, "search"), 1)["trials"] == 3  # 2 given (then cancelled) + 1, not 21
    stale = find_study(db, "search")
    for run in db.sweep_runs(sweep.id):
        train_trial(db, workspace, run.id, [0.5])
    driver.tick(force=True)  # gives the third
    (third,) = [r for r in db.sweep_runs(sweep.id) if r.status == QUEUED]
    train_trial(db, workspace, third.id, [0.5])
    more_trials(db, find_study(db, "search"), 2)  # after the pass read its settings, before it finishes the study
    driver.work(stale)
    assert find_study(db, "search").study["trials"] == 5 and find_study(db, "search").study["finished_at"] is None
    driver.tick(force=True)
    assert len(db.sweep_runs(sweep.id)) == 5
    db.close()


def test_an_orphan_trial_with_history_is_failed_never_given_to_a_fresh_run(tmp_path, tiny_data):
    from optuna.trial import TrialState, create_trial

    from engine.studies import load_study, open_storage

    workspace = Workspace(tmp_path / "home").ensure()
    db, sweep = make_study(workspace, tiny_data, trials=2, parallel=2)
    study = load_study(open_storage(storage_of(workspace)), sweep.study)
    from runner.studies import params_of

    distributions = {p.name: p.distribution() for p in params_of(sweep)}
    # A resumed trial's new Optuna trial whose turn was rolled back (a kill), and a fresh orphan.
    study._storage.create_new_trial(study._study_id, template_trial=create_trial(
        state=TrialState.RUNNING, params={"lr": 0.01, "batch_size": 8}, distributions=distributions,
        intermediate_values={1: 0.5}, user_attrs={"continues_trial": 7}))
    fresh = study.ask(distributions)
    StudyDriver(db, workspace).tick(force=True)
    runs = db.sweep_runs(sweep.id)
    told = optuna_trials(workspace)
    assert told[0].state.name == "FAIL"
    assert fresh.number in {r.trial for r in runs} and 0 not in {r.trial for r in runs} and len(runs) == 2
    db.close()


def test_a_study_whose_optuna_study_is_gone_is_one_line_and_its_runs_stay(tmp_path, tiny_data):
    workspace = Workspace(tmp_path / "home").ensure()
    db, sweep = make_study(workspace, tiny_data)
    driver = StudyDriver(db, workspace)
    driver.tick(force=True)
    (workspace.home / "optuna.journal").unlink()
    shown = cli("study", "show", "search", home=workspace.home)
    assert "Optuna: study 'search': its Optuna storage has no such study" in shown.stdout and "search #0" not in shown.stderr
    restarted = StudyDriver(db, workspace)  # a scheduler started after it went
    restarted.tick(force=True)  # logged, tried again later, and it does not keep the scheduler up
    assert not restarted.wants_trials() and len(db.sweep_runs(sweep.id)) == 2
    db.close()


def test_importances_are_fanovas_the_same_each_time_and_none_where_the_trials_scored_the_same(tmp_path, tiny_data):
    import warnings

    from runner.studies import importances

    workspace = Workspace(tmp_path / "home").ensure()
    db, sweep = make_study(workspace, tiny_data, trials=3, parallel=3)
    driver = StudyDriver(db, workspace)
    driver.tick(force=True)
    runs = db.sweep_runs(sweep.id)
    for run in runs[:2]:
        train_trial(db, workspace, run.id, [0.5, 0.6])  # the same value: nothing to attribute
    driver.tick(force=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert importances(workspace, sweep) is None
    assert "importance: none to tell" in cli("study", "show", "search", home=workspace.home).stdout
    train_trial(db, workspace, runs[2].id, [0.7, 0.9])
    driver.tick(force=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = importances(workspace, sweep)
    assert [str(w.message) for w in caught] == [], "no library warning reaches the user"
    assert first is not None and set(first) == {"lr", "batch_size"} and first == importances(workspace, sweep)
    db.close()
