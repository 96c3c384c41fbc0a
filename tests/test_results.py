"""Results a student can defend, through the command line on a real workspace: fair ablation
tables of seed replicates with intervals and verdicts, ``compare``'s paired tests, the last-k
mean, and ``queue --seeds``. The runs are recorded by hand (nothing trains here), with per-image
validation predictions as the worker records them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import cli
from db import Database, Workspace
from engine.config import RunConfig
from engine.metrics import classification_metrics
from engine.stats import metric_intervals
from leuktui import ablation

N = 100
LABELS = np.array([1] * 60 + [0] * 40)


def record_run(db: Database, *, curve: list[float], right: np.ndarray | None = None, probabilities: np.ndarray | None = None,
               status: str = "completed", **config_values) -> int:
    """A run whose epochs have validation accuracies ``curve``, best at the highest, and whose best
    epoch got the images in ``right`` right, or gave ``probabilities`` (recorded as the worker
    does: origin ``training``)."""
    config = RunConfig.from_dict({"data_dir": "/data/lab3", "epochs": len(curve), **config_values})  # config_values win
    run = db.create_run(config=config.to_dict(), config_hash=config.config_hash(), model=config.model,
                        name=f"{config.model}-{config_values}", status=status)
    best_epoch = int(np.argmax(curve)) + 1
    if probabilities is None:
        predicted = np.where(right, LABELS, 1 - LABELS)
        probabilities = np.where(predicted == 1, 0.8, 0.2)
    predicted = (probabilities >= 0.5).astype(int)
    at_best = classification_metrics(LABELS, probabilities)
    for epoch, acc in enumerate(curve, start=1):
        row = {**at_best, "val_acc": acc, "val_loss": 0.3, "train_loss": 0.2, "train_acc": 0.9, "lr": 1e-3, "seconds": 1.0,
               "images_per_s": 10.0}
        if epoch == best_epoch:
            row["val_acc"] = at_best["acc"]
        db.add_epoch(run.id, epoch, epoch * 10, row, best={"epoch": epoch, **row} if epoch == best_epoch else None)
        if epoch == best_epoch:
            db.add_evaluation(
                run.id, checkpoint="best", epoch=epoch, split="valid", tta=config.eval_mode, metrics=at_best, n=N,
                predictions=[(f"valid/{i}.bmp", float(p), int(c), int(y)) for i, (p, c, y) in enumerate(zip(probabilities, predicted, LABELS, strict=True))],
                intervals=metric_intervals(LABELS, probabilities), origin="training", replaces=True,
            )
    return run.id


def right_on(count: int, seed: int) -> np.ndarray:
    mask = np.zeros(N, dtype=bool)
    mask[np.random.default_rng(seed).permutation(N)[:count]] = True
    return mask


@pytest.fixture
def lab(tmp_path):
    """hist_eq x 3 seeds at 6 epochs (hist-eq clearly worse), and a 2-epoch hist-eq run that must not
    join them."""
    workspace = Workspace(tmp_path / "home").ensure()
    db = Database(workspace.db_url)
    ids = {}
    for hist_eq, counts in ((False, (90, 92, 91)), (True, (80, 78, 81))):
        for seed, count in enumerate(counts):
            curve = [0.6, 0.7, 0.75, 0.8, count / N, 0.85]
            ids[(hist_eq, seed)] = record_run(db, curve=curve, right=right_on(count, seed), hist_eq=hist_eq, seed=seed)
    ids["short"] = record_run(db, curve=[0.7, 0.915], right=right_on(91, 9), hist_eq=True, epochs=2)
    yield workspace, db, ids
    db.close()


def test_a_hist_eq_by_seeds_ablation_has_replicate_cells_with_intervals_and_a_verdict(lab):
    workspace, db, ids = lab
    result = json.loads(cli("ablation", "--cols", "hist_eq", "--json", home=workspace.home).stdout)
    first, second = result["tables"]
    assert first["context"] == {"epochs": 6} and second["context"] == {"epochs": 2}
    cells = {cell["col"]: cell for cell in first["cells"]}
    for hist_eq, counts in ((False, (90, 92, 91)), (True, (80, 78, 81))):
        cell = cells[hist_eq]
        runs = [db.get_run(ids[(hist_eq, seed)]) for seed in range(3)]
        assert cell["row"] == "resnet18" and cell["n"] == 3 and cell["runs"] == [r.id for r in runs]
        own = [r.best_val_acc for r in runs]  # the runs' own numbers
        assert own == pytest.approx([c / N for c in counts])
        assert cell["mean"] == pytest.approx(np.mean(own)) and cell["std"] == pytest.approx(np.std(own, ddof=1))
        assert cell["ci"][0] < cell["mean"] < cell["ci"][1] and cell["ci_kind"] == "t"
    (verdict,) = first["verdicts"]
    assert verdict["best"] is False and verdict["significant"] and verdict["tests"][0]["test"] == "welch"
    assert verdict["tests"][0]["p"] < 0.05
    # The 2-epoch run has a table of its own, never a cell beside the 6-epoch runs.
    assert second["cells"][0]["runs"] == [ids["short"]] and ids["short"] not in cells[True]["runs"]

    # The screen's and the report's tables are the same pivots.
    runs = db.runs_by_id(list(ids.values()))
    (pivot, _) = ablation.build(runs, db.evaluations_of([r.id for r in runs]), "model", "hist_eq", "acc",
                                load_predictions=db.predictions_of)
    markdown = cli("ablation", "--cols", "hist_eq", "--markdown", home=workspace.home).stdout
    assert pivot.to_markdown() in markdown and "**91.00% ± 1.00 (n=3)" in markdown
    from leuktui.report.data import collect
    from leuktui.report.tables import ablation_tables

    (table,) = [t for t in ablation_tables(collect(db, runs), db.predictions_of) if t.name == "ablation-hist_eq"]
    assert table.markdown.startswith(pivot.to_markdown()) and "runs " + str(ids["short"]) in table.caption
    text = cli("ablation", "--cols", "hist_eq", home=workspace.home).stdout
    assert "hist_eq=False" in text and "91.00% ± 1.00 (n=3)" in text and "hist_eq=False best (p = " in text


def test_cells_that_differ_in_another_field_are_never_joined_without_a_warning(lab):
    workspace, db, ids = lab
    # Everything in one sweep-like selection: the tables still split by epochs.
    result = json.loads(cli("ablation", "--rows", "epochs", "--cols", "hist_eq", "--json", home=workspace.home).stdout)
    (table,) = result["tables"]  # epochs is now the row factor: one table, rows 2 and 6
    assert {cell["row"] for cell in table["cells"]} == {2, 6}
    assert all(len({db.get_run(r).config["epochs"] for r in cell["runs"]}) == 1 for cell in table["cells"])
    # An unfinished run is shown with a warning, and no best is marked in its table.
    record_run(db, curve=[0.5, 0.99], right=right_on(99, 4), status="cancelled", hist_eq=False, seed=7)
    result = json.loads(cli("ablation", "--cols", "hist_eq", "--json", home=workspace.home).stdout)
    warned = [t for t in result["tables"] if t["warnings"]]
    assert warned and "cancelled at epoch" in warned[0]["warnings"][0]
    assert all(v["best"] is None for t in warned for v in t["verdicts"])


def test_single_runs_are_judged_by_mcnemar_on_the_same_images(tmp_path):
    workspace = Workspace(tmp_path / "home").ensure()
    db = Database(workspace.db_url)
    better = right_on(95, 1)
    worse = better.copy()
    worse[np.flatnonzero(better)[:25]] = False  # wrong on 25 images the better one got right
    a = record_run(db, curve=[0.5, 0.95], right=better, model="resnet18")
    b = record_run(db, curve=[0.5, 0.70], right=worse, model="resnet50")
    c = record_run(db, curve=[0.5, 0.94], right=right_on(94, 2), model="resnet152")
    result = json.loads(cli("ablation", "--rows", "hist_eq", "--cols", "model", "--json", home=workspace.home).stdout)
    (table,) = result["tables"]
    (verdict,) = table["verdicts"]
    assert [t["test"] for t in verdict["tests"]] == ["mcnemar", "mcnemar"]
    assert verdict["best"] is None and verdict["text"].startswith("no significant difference")  # 95% vs 94%: not significant
    cells = {cell["col"]: cell for cell in table["cells"]}
    assert cells["resnet18"]["ci_kind"] == "bootstrap" and cells["resnet18"]["n"] == 1
    assert cells["resnet18"]["ci"] == db.evaluations(a)[0].interval("acc")

    only_two = json.loads(cli("ablation", str(a), str(b), "--rows", "hist_eq", "--cols", "model", "--json", home=workspace.home).stdout)
    (verdict,) = only_two["tables"][0]["verdicts"]
    assert verdict["best"] == "resnet18" and verdict["significant"]

    # compare: the same table, statsmodels' p-value, and each side's own recorded accuracy.
    from statsmodels.stats.contingency_tables import mcnemar

    out = json.loads(cli("compare", str(a), str(b), str(c), "--json", home=workspace.home).stdout)
    assert [(p["a"], p["b"]) for p in out["pairs"]] == [(a, b), (a, c), (b, c)]
    pair = out["pairs"][0]
    assert pair["table"] == [[70, 25], [0, 5]]
    assert pair["mcnemar_p"] == mcnemar(np.array(pair["table"]), exact=True).pvalue
    for pair in out["pairs"]:
        (both, only_a), (only_b, _) = pair["table"]
        assert (both + only_a) / pair["n"] == pytest.approx(db.get_run(pair["a"]).best_val_acc)
        assert (both + only_b) / pair["n"] == pytest.approx(db.get_run(pair["b"]).best_val_acc)
        assert pair["diff"] == pytest.approx(pair["acc_a"] - pair["acc_b"])
        assert pair["diff_ci"][0] <= pair["diff"] <= pair["diff_ci"][1]
    assert out["differs"] == {"model": ["resnet18", "resnet50", "resnet152"]}
    assert all(p["adjustment"] == "holm over 3 pairs" for p in out["pairs"]) and out["pairs"][0]["significant"]
    shown = {run["id"]: run for run in out["runs"]}
    assert shown[a]["metrics"]["acc"]["value"] == pytest.approx(0.95) and shown[a]["metrics"]["acc"]["ci"] == db.evaluations(a)[0].interval("acc")
    text = cli("compare", str(a), str(b), home=workspace.home).stdout
    assert "both right 70, only run 1 right 25, only run 2 right 0, both wrong 5" in text and "significant at 0.05" in text

    # An ensemble is one side: the mean P(ALL) of its runs.
    ensemble = json.loads(cli("compare", f"{b}+{c}", str(a), "--json", home=workspace.home).stdout)["pairs"][0]
    assert ensemble["a"] == [b, c] and ensemble["n"] == N
    db.close()


def test_last_k_mean_beside_the_best_epoch(lab):
    workspace, db, ids = lab
    run_id = ids[(False, 0)]
    epochs = db.epochs(run_id)
    expected = np.mean([e.val_acc for e in epochs[-5:]])
    listed = {run["id"]: run for run in json.loads(cli("ls", "--json", home=workspace.home).stdout)}
    assert listed[run_id]["last_k"]["k"] == 5 and listed[run_id]["last_k"]["acc"] == pytest.approx(expected)
    shown = json.loads(cli("show", str(run_id), "--last-k", "2", "--json", home=workspace.home).stdout)
    assert shown["last_k"]["acc"] == pytest.approx(np.mean([e.val_acc for e in epochs[-2:]]))
    assert shown["best_intervals"]["metrics"]["acc"][0] <= shown["best_val_acc"] <= shown["best_intervals"]["metrics"]["acc"][1]
    text = cli("show", str(run_id), home=workspace.home).stdout
    assert "mean of the last 5 epochs: accuracy" in text and "95% bootstrap intervals over the 100 validation images" in text
    table = json.loads(cli("ablation", "--cols", "hist_eq", "--select", "last", "--json", home=workspace.home).stdout)["tables"][0]
    cell = next(c for c in table["cells"] if c["col"] is False)
    own = [np.mean([e.val_acc for e in db.epochs(ids[(False, s)])[-5:]]) for s in range(3)]
    assert table["selection"] == "last" and cell["values"] == pytest.approx(own) and cell["mean"] == pytest.approx(np.mean(own))
    assert "last-5 acc" in cli("ls", home=workspace.home).stdout


def test_queue_seeds_makes_replicates_that_differ_only_in_seed(tmp_path, tiny_data):
    home = tmp_path / "home"
    out = json.loads(cli("queue", "--data-dir", str(tiny_data), "--grid", "hist_eq=false,true", "--seeds", "3", "--seed", "5",
                         "--no-start", "--json", home=home).stdout)
    db = Database(Workspace(home).db_url)
    runs = db.runs_by_id(out["run_ids"])
    assert len(runs) == 6 and out["sweep_id"] is not None
    assert sorted((r.config["hist_eq"], r.config["seed"]) for r in runs) == [(h, s) for h in (False, True) for s in (5, 6, 7)]
    for run in runs:
        others = {k: v for k, v in run.config.items() if k not in ("seed", "hist_eq")}
        assert others == {k: v for k, v in runs[0].config.items() if k not in ("seed", "hist_eq")}
    assert db.get_sweep(out["sweep_id"]).factors == {"hist_eq": [False, True], "seed": [5, 6, 7]}
    db.close()
    bad = cli("queue", "--data-dir", str(tiny_data), "--grid", "seed=1,2", "--seeds", "2", "--no-start", home=home, check=False)
    assert bad.returncode == 2 and "--seeds" in bad.stderr and "seed" in bad.stderr
    assert cli("queue", "--seeds", "0", "--no-start", home=home, check=False).returncode == 2
    # A factor whose values repeat would make replicates that are not (the same seed twice), and a
    # grid beyond 10,000 runs is a slip: both refused in one line, nothing queued.
    before = len(Database(Workspace(home).db_url).list_runs())
    for grid, said in (
        (("--grid", "epochs=1,2,01"), "--grid: epochs=01 is epochs=1 again; a factor's values must differ"),
        (("--grid", "lr=0.001,1e-3"), "--grid: lr=1e-3 is lr=0.001 again; a factor's values must differ"),
        (("--grid", "lr=" + ",".join(f"0.{i:03d}1" for i in range(100)), "--grid", "epochs=" + ",".join(map(str, range(1, 102)))),
         "--grid: 100 x 101 = 10,100 runs; at most 10,000 in one sweep"),
    ):
        refused = cli("queue", "--data-dir", str(tiny_data), *grid, "--no-start", home=home, check=False)
        assert refused.returncode == 2 and refused.stderr.startswith(f"leuktui: error: {said}") and refused.stderr.count("\n") == 1
    assert len(Database(Workspace(home).db_url).list_runs()) == before


def test_without_cols_the_ablation_opens_as_the_screen_does_on_the_runs_own_factor(lab):
    """`leuktui ablation` with no --cols pivots what the runs differ in (a sweep's factor), as the
    Ablation screen opens; runs that differ in nothing else get the views."""
    from leuktui.ablation import default_columns

    workspace, db, ids = lab
    six = [str(ids[(hist_eq, seed)]) for hist_eq in (False, True) for seed in range(3)]
    plain = json.loads(cli("ablation", *six, "--json", home=workspace.home).stdout)["tables"]
    assert plain == json.loads(cli("ablation", *six, "--cols", "hist_eq", "--json", home=workspace.home).stdout)["tables"]
    assert [t["cols_factor"] for t in plain] == ["hist_eq"] and {c["col"] for c in plain[0]["cells"]} == {False, True}
    assert default_columns(db.runs_by_id([int(i) for i in six]), "model") == "hist_eq"
    seeds_only = json.loads(cli("ablation", *six[:3], "--json", home=workspace.home).stdout)["tables"]
    assert [t["cols_factor"] for t in seeds_only] == ["tta"]


def test_mistakes_are_one_line(lab, tmp_path):
    workspace, db, ids = lab
    for args, words in (
        (("ablation", "--rows", "bogus"), "--rows: 'bogus' is not a config field"),
        (("ablation", "--cols", "model"), "--rows and --cols are both model"),
        (("ablation", "--metric", "nope"), "--metric"),
        (("ablation", "--sweep", "9"), "sweep 9"),
        (("compare", "1"), "give two runs or more"),
        (("compare", "1", "999"), "run 999: no such run"),
        (("compare", "1+1", "2"), "names a run twice"),
        (("compare", "2", "2"), "compare: 2 is named twice"),
        (("compare", "1+2", "2+1"), "compare: 2+1 is named twice"),
    ):
        result = cli(*args, home=workspace.home, check=False)
        assert result.returncode != 0 and words in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1
    # --metric as --best-metric and a study's --metric spell it, too.
    assert cli("ablation", "--cols", "hist_eq", "--metric", "val_loss", "--json", home=workspace.home).stdout == \
        cli("ablation", "--cols", "hist_eq", "--metric", "loss", "--json", home=workspace.home).stdout
    # A selection that matches nothing is about the workspace, not the command line: exit 1, in one wording.
    for command in ("ablation", "report"):
        result = cli(command, "--tag", "nope", home=workspace.home, check=False)
        assert (result.returncode, result.stderr.strip()) == (1, "leuktui: error: no runs with recorded epochs have tag 'nope'"), command
    # A run recorded before training kept its predictions: say how to record them.
    config = RunConfig.from_dict({"data_dir": "/data/lab3", "epochs": 1})
    old = db.create_run(config=config.to_dict(), config_hash=config.config_hash(), model="resnet18", name="old", status="completed")
    db.add_epoch(old.id, 1, 10, {"val_acc": 0.8}, best={"epoch": 1, "val_acc": 0.8})
    result = cli("compare", "1", str(old.id), home=workspace.home, check=False)
    assert result.returncode != 0 and f"leuktui eval {old.id} --tta single" in result.stderr
    # Runs on another dataset share image names, not images.
    elsewhere = record_run(db, curve=[0.5, 0.8], right=right_on(80, 5), data_dir="/data/other")
    result = cli("compare", "1", str(elsewhere), home=workspace.home, check=False)
    assert result.returncode != 0 and "validate on different datasets" in result.stderr


def test_a_run_recorded_before_a_field_existed_shares_a_table_at_its_default(lab):
    workspace, db, ids = lab
    run = db.get_run(ids[(False, 0)])
    older = {k: v for k, v in run.config.items() if k not in ("ema", "fit_on")}
    db.update_run(run.id, config=older)
    (first, _) = json.loads(cli("ablation", "--cols", "hist_eq", "--json", home=workspace.home).stdout)["tables"]
    assert run.id in next(c for c in first["cells"] if c["col"] is False)["runs"]
    # The hash the code before ema and fit_on existed gave this config: still "this exact config".
    recorded_before = RunConfig.from_dict({"data_dir": "/data/lab3", "epochs": 6, "hist_eq": False, "seed": 0})
    assert recorded_before.config_hash() == "fb2b2d7eb7d97eea"
    assert recorded_before.replace(ema=0.9).config_hash() != "fb2b2d7eb7d97eea"


def test_the_verdict_tests_the_tables_metric_in_its_direction(tmp_path):
    """A run far better in accuracy but worse in AUC: the AUC table must not call the accurate run
    significantly best by a test of accuracy, nor the other way round."""
    workspace = Workspace(tmp_path / "home").ensure()
    db = Database(workspace.db_url)
    right = right_on(95, 1)
    accurate = record_run(db, curve=[0.5, 0.95], right=right, model="resnet18")
    scores = np.where(np.where(right, LABELS, 1 - LABELS) == 1, 0.8, 0.2)
    shifted = scores / 2  # the same ranking, every image below the threshold...
    wrong_all = np.flatnonzero(~right & (LABELS == 1))[:1]
    shifted[wrong_all] += 0.01  # ...but one ALL image it missed ranked a little better
    ranking = record_run(db, curve=[0.5, 0.4], probabilities=shifted, model="resnet50")
    a, b = db.get_run(accurate), db.get_run(ranking)
    assert b.best_val_auc > a.best_val_auc and b.best_val_acc == 0.4 and a.best_val_acc == 0.95
    by_auc = json.loads(cli("ablation", "--rows", "hist_eq", "--cols", "model", "--metric", "auc", "--json",
                            home=workspace.home).stdout)["tables"][0]["verdicts"][0]
    # The AUCs differ by a hair: no significant difference, though the accuracies are worlds apart.
    assert by_auc["tests"][0]["test"] == "paired-bootstrap" and by_auc["best"] is None
    assert by_auc["text"].startswith("no significant difference")
    by_acc = json.loads(cli("ablation", "--rows", "hist_eq", "--cols", "model", "--json", home=workspace.home).stdout)
    verdict = by_acc["tables"][0]["verdicts"][0]
    assert verdict["tests"][0]["test"] == "mcnemar" and verdict["best"] == "resnet18"
    db.close()
    assert accurate != ranking


def test_a_repeated_seed_is_one_replicate_not_two(lab):
    workspace, db, ids = lab
    # A retry of seed 0 (a new run, the same config) and a forced repeat of seed 1.
    retry = record_run(db, curve=[0.6, 0.7, 0.75, 0.8, 0.93, 0.85], right=right_on(93, 11), hist_eq=False, seed=0)
    table = json.loads(cli("ablation", "--cols", "hist_eq", "--json", home=workspace.home).stdout)["tables"][0]
    cell = next(c for c in table["cells"] if c["col"] is False)
    assert cell["n"] == 3 and retry in cell["runs"] and ids[(False, 0)] not in cell["runs"]
    assert any(f"run {ids[(False, 0)]} repeats seed 0 of run {retry}" in note for note in table["notes"])
    assert cell["mean"] == pytest.approx(np.mean([0.93, 0.92, 0.91]))


def test_views_of_the_same_runs_are_compared_with_a_paired_test(lab):
    workspace, db, ids = lab
    for seed in range(3):
        run = db.get_run(ids[(False, seed)])
        db.add_evaluation(run.id, checkpoint="best", epoch=run.best_epoch, split="valid", tta="five", n=N,
                          metrics={"acc": run.best_val_acc + 0.02 + 0.001 * seed})
    chosen = [str(ids[(False, seed)]) for seed in range(3)]
    (shown,) = json.loads(cli("ablation", *chosen, "--cols", "tta", "--json", home=workspace.home).stdout)["tables"]
    verdict = shown["verdicts"][0]
    assert [t["test"] for t in verdict["tests"]] == ["paired-t"] and verdict["best"] == "five"


def test_a_final_fit_export_takes_the_newest_finalize_and_follows_retries(tmp_path):
    from db import states
    from runner import control

    workspace = Workspace(tmp_path / "home").ensure()
    db = Database(workspace.db_url)
    source = record_run(db, curve=[0.6, 0.9, 0.8], right=right_on(90, 1))
    first, second = control.finalize(db, source, seeds=2)[0]
    assert (first.config["epochs"], first.parent_id, first.config["seed"], second.config["seed"]) == (2, source, 0, 1)
    for status in ("running", "failed"):
        states.move(db, first.id, status)
    retry = control.retry(db, first.id)
    completed, waiting, left_out = db.final_fit_plan(source)
    assert completed == [] and [r.id for r in waiting] == [second.id, retry.id] and left_out == []
    for run in (second, retry):
        for status in ("running", "completed"):
            states.move(db, run.id, status)
    completed, waiting, left_out = db.final_fit_plan(source)
    assert [r.id for r in completed] == [second.id, retry.id] and waiting == [] and left_out == []  # the failed fit was retried
    (longer,) = control.finalize(db, source, epochs=10)[0]
    completed, waiting, left_out = db.final_fit_plan(source)
    assert completed == [] and [r.id for r in waiting] == [longer.id]  # the newest finalize, never mixed with the older one
    unfinished = record_run(db, curve=[0.6], right=right_on(60, 2), status="running", seed=3)
    refused = cli("finalize", str(unfinished), "--no-start", home=workspace.home, check=False)
    assert refused.returncode == 1 and "pass --epochs" in refused.stderr
    db.close()


def test_the_default_report_takes_each_models_best_config_with_all_its_seeds(lab):
    from leuktui.report.data import select_runs

    workspace, db, ids = lab
    chosen = [run.id for run in select_runs(db)]
    assert chosen == [ids[(False, seed)] for seed in range(3)]  # not seed 1 alone, the luckiest


def test_the_last_k_mean_query_is_the_mean_of_the_last_epochs_on_both_databases(db_url):
    from leuktui.results import last_k_mean

    db = Database(db_url)
    short = record_run(db, curve=[0.5, 0.7], right=right_on(70, 1))
    long = record_run(db, curve=[0.5, 0.6, 0.7, 0.8, 0.9, 0.85, 0.8], right=right_on(90, 2))
    means = db.last_k_means(3)
    for run_id in (short, long):
        for key in ("acc", "f1", "loss"):
            assert means[run_id][key] == pytest.approx(last_k_mean(db.epochs(run_id), key, 3)), (run_id, key)
    assert db.last_k_means(5, [short]).keys() == {short}
    db.close()


def test_the_report_can_use_the_last_k_mean(lab, tmp_path):
    workspace, db, ids = lab
    runs = [str(run_id) for run_id in ids.values()]
    result = cli("report", *runs, "--select", "last", "--last-k", "3", "-o", str(tmp_path / "report"), home=workspace.home)
    text = (tmp_path / "report" / "report.md").read_text()
    assert "mean of each run's last 3 epochs" in text and "(n=3)" in text, result.stdout


def test_compare_weighs_seed_replicates_against_each_other(lab):
    from scipy.stats import ttest_ind

    workspace, db, ids = lab
    plain_runs = ",".join(str(ids[(False, s)]) for s in range(3))
    equalized = ",".join(str(ids[(True, s)]) for s in range(3))
    out = json.loads(cli("compare", plain_runs, equalized, "--json", home=workspace.home).stdout)
    (pair,) = out["pairs"]
    a = [db.get_run(ids[(False, s)]).best_val_acc for s in range(3)]
    b = [db.get_run(ids[(True, s)]).best_val_acc for s in range(3)]
    assert pair["test"] == "welch" and pair["values_a"] == pytest.approx(a) and pair["values_b"] == pytest.approx(b)
    assert pair["p"] == pytest.approx(ttest_ind(a, b, equal_var=False).pvalue) and pair["significant"]
    assert pair["diff"] == pytest.approx(np.mean(a) - np.mean(b)) and pair["diff_ci"][0] < pair["diff"] < pair["diff_ci"][1]
    text = cli("compare", plain_runs, equalized, home=workspace.home).stdout
    assert "replicates" in text and "Welch's t-test p = " in text and ": significant at 0.05" in text
    mixed = cli("compare", plain_runs, str(ids["short"]), home=workspace.home, check=False)
    assert mixed.returncode != 0 and "compare replicates with replicates" in mixed.stderr
    both = cli("compare", "1,2+3", "4", home=workspace.home, check=False)
    assert both.returncode == 2 and "not both" in both.stderr


def test_replicates_without_spread_or_that_are_not_replicates(tmp_path):
    workspace = Workspace(tmp_path / "home").ensure()
    db = Database(workspace.db_url)
    same = [record_run(db, curve=[0.5, 0.9], right=right_on(90, seed), seed=seed) for seed in range(2)]
    other = [record_run(db, curve=[0.5, 0.8], right=right_on(80, seed), seed=seed, hist_eq=True) for seed in range(2)]
    out = json.loads(cli("compare", f"{same[0]},{same[1]}", f"{other[0]},{other[1]}", "--json", home=workspace.home).stdout)
    (pair,) = out["pairs"]
    assert pair["p"] is None and pair["diff_ci"] is None and not pair["significant"] and pair["adjustment"] is None
    text = cli("compare", f"{same[0]},{same[1]}", f"{other[0]},{other[1]}", home=workspace.home).stdout
    assert "no interval (no spread)" in text and "Welch's t-test p = -" in text
    mixed = cli("compare", f"{same[0]},{other[0]}", f"{same[1]},{other[1]}", home=workspace.home, check=False)
    assert mixed.returncode == 1 and "differ in more than the seed" in mixed.stderr
    shared = cli("compare", f"{same[0]},{same[1]}", f"{same[1]},{same[0]}", home=workspace.home, check=False)
    assert shared.returncode == 1 and "two groups" in shared.stderr
    db.close()


def test_an_interval_stays_inside_what_the_metric_can_be(tmp_path):
    """Two seeds far apart: the t-interval of their mean would reach past 100%; it is cut there."""
    workspace = Workspace(tmp_path / "home").ensure()
    db = Database(workspace.db_url)
    for seed, count in ((0, 99), (1, 60)):
        record_run(db, curve=[0.5, count / N], right=right_on(count, seed), seed=seed)
    (table,) = json.loads(cli("ablation", "--cols", "hist_eq", "--json", home=workspace.home).stdout)["tables"]
    (cell,) = table["cells"]
    assert cell["n"] == 2 and cell["ci"][0] >= 0.0 and cell["ci"][1] == 1.0
    missing = cli("compare", "1", "99", home=workspace.home, check=False)
    shown = cli("show", "99", home=workspace.home, check=False)
    assert missing.returncode == shown.returncode == 1, "a run that does not exist is the same error everywhere"
    db.close()


def test_finalize_fits_each_seed_once_and_its_flags_belong_to_one_use(tmp_path):
    from db import states
    from runner import control

    workspace = Workspace(tmp_path / "home").ensure()
    db = Database(workspace.db_url)
    source = record_run(db, curve=[0.6, 0.9, 0.8], right=right_on(90, 1))
    (first,) = control.finalize(db, source)[0]
    more, _, kept = control.finalize(db, source, seeds=2)
    assert [run.config["seed"] for run in more] == [1] and [fit.id for fit in kept] == [first.id], "seed 0 is queued already"
    refused = cli("finalize", str(source), "--seeds", "2", "--no-start", home=workspace.home, check=False)
    assert refused.returncode == 1 and f"run {source} has this final fit already: runs {first.id} (seed 0, queued), " in refused.stderr
    (again,) = control.finalize(db, source, again=True)[0]
    for run_id in (first.id, more[0].id, again.id):
        for status in ("running", "completed"):
            states.move(db, run_id, status)
    completed, waiting, left_out = db.final_fit_plan(source)
    assert [run.id for run in completed] == [more[0].id, again.id] and waiting == [], "one fit a seed, the newest"
    assert left_out == [], "the older fit of seed 0 is replaced, not left out (the lineage would call it a failure)"
    for args, message in ((("-o", "final.csv"), "-o: only with --export"), (("--tta", "five"), "--tta: only with --export"),
                          (("--export", "--seeds", "2"), "--seeds: only without --export"),
                          (("--export", "--epochs", "3"), "--epochs: only without --export")):
        wrong = cli("finalize", str(source), *args, home=workspace.home, check=False)
        assert wrong.returncode == 2 and wrong.stderr.startswith(f"leuktui: error: {message}"), (args, wrong.stderr)
    assert not (tmp_path / "final.csv").exists() and len(db.final_fits(source)) == 3, "nothing queued by the refusals"
    named = cli("ablation", str(source), str(first.id), home=workspace.home, check=False)
    assert (named.returncode, named.stderr.strip()) == (1, f"leuktui: error: run {first.id}: a final fit (trained on train + valid), "
                                                          "so no validation score to tabulate; leave it out")
    db.close()
