"""The lab report: figures checked as data against the database, tables against the app's, the
folder's files, and the mistakes a user can make (on a seeded workspace; nothing trains here)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tui.seed import seed_workspace

from conftest import cli
from db import Database, Workspace
from engine.config import RunConfig
from leuktui import ablation
from leuktui.formatting import number, percent
from leuktui.report import figures, tables
from leuktui.report.build import build_report, example_images
from leuktui.report.data import ReportError, collect, select_runs

SWEEP = 1  # the seeded sweep: resnet18/50/152 x hist_eq, runs 1-6


@pytest.fixture
def seeded(tmp_path):
    workspace = Workspace(tmp_path / "home").ensure()
    db = seed_workspace(workspace)
    yield workspace, db
    db.close()


def _add_validation_predictions(db: Database, run_id: int, seed: int = 0) -> list[tuple[float, int]]:
    rng = random.Random(seed)
    labels = [1] * 30 + [0] * 20
    points = [(round(min(1.0, max(0.0, rng.gauss(0.7 if y else 0.3, 0.2))), 4), y) for y in labels]
    db.add_evaluation(run_id, checkpoint="best", epoch=5, split="valid", tta="single", n=len(points), metrics={"acc": 0.9},
                      predictions=[(f"valid/{i}.bmp", p, int(p >= 0.5), y) for i, (p, y) in enumerate(points)])
    return points


# -- figures as data --------------------------------------------------------------------------------


def test_curves_plot_the_recorded_epochs_one_style_per_run(seeded):
    _, db = seeded
    data = collect(db, select_runs(db, sweep=SWEEP))
    for kind, (train_column, valid_column) in {"accuracy": ("train_acc", "val_acc"), "loss": ("train_loss", "val_loss")}.items():
        plot = figures.curves_plot(data.records, kind)
        train_axis, valid_axis = plot.figure.axes
        assert len(train_axis.lines) == len(valid_axis.lines) == 6
        for index, record in enumerate(data.records):
            epochs = db.epochs(record.id)
            assert list(train_axis.lines[index].get_xdata()) == [e.epoch for e in epochs]
            assert list(train_axis.lines[index].get_ydata()) == [getattr(e, train_column) for e in epochs]
            assert list(valid_axis.lines[index].get_ydata()) == [getattr(e, valid_column) for e in epochs]
            assert plot.data[record.id]["valid"] == [getattr(e, valid_column) for e in epochs]
            assert train_axis.lines[index].get_label() == f"{record.id} {record.run.name}"
    styles = [figures.style_of(i) for i in range(8)]
    assert len({(s.colour, s.line_style, s.marker) for s in styles}) == 8
    assert len({s.line_style for s in styles}) == 4  # tells runs apart in black and white


def test_confusion_plot_is_the_best_epochs_matrix_normalized_by_true_class(seeded):
    _, db = seeded
    record = collect(db, select_runs(db, [1])).records[0]
    run = db.get_run(1)
    best = next(e for e in db.epochs(1) if e.epoch == run.best_epoch)
    plot = figures.confusion_plot(record)
    (tn, fp), (fn, tp) = best.confusion
    assert plot.data["counts"] == best.confusion and plot.data["epoch"] == run.best_epoch
    expected = np.array([[tn / (tn + fp), fp / (tn + fp)], [fn / (fn + tp), tp / (fn + tp)]])
    np.testing.assert_allclose(plot.data["normalized"], expected)
    axis = plot.figure.axes[0]
    np.testing.assert_allclose(axis.images[0].get_array(), expected)
    cells = [text.get_text() for text in axis.texts]
    assert cells[0] == f"{100 * expected[0, 0]:.1f}%\n({tn})" and cells[3] == f"{100 * expected[1, 1]:.1f}%\n({tp})"
    assert [t.get_text() for t in axis.get_yticklabels()] == ["HEM (0)", "ALL (1)"]
    assert axis.get_ylabel() == "true class"


def test_roc_points_agree_with_scikit_learn():
    from sklearn.metrics import roc_auc_score, roc_curve

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 300)
    scores = np.round(np.clip(rng.normal(0.3 + 0.4 * labels, 0.25), 0, 1), 2)  # ties on purpose
    fpr, tpr, auc = figures.roc_points(scores, labels)
    expected_fpr, expected_tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, expected_fpr)
    np.testing.assert_allclose(tpr, expected_tpr)
    assert auc == pytest.approx(roc_auc_score(labels, scores))


def test_roc_plot_draws_the_recorded_validation_predictions(seeded):
    _, db = seeded
    points = _add_validation_predictions(db, 3)
    data = collect(db, select_runs(db, [1, 3]))
    plot = figures.roc_plot(data.records)
    assert set(plot.data) == {3}
    fpr, tpr, auc = figures.roc_points([p for p, _ in points], [y for _, y in points])
    line = next(line for line in plot.figure.axes[0].lines if line.get_label().startswith("3 "))
    np.testing.assert_allclose(line.get_xdata(), fpr)
    np.testing.assert_allclose(line.get_ydata(), tpr)
    assert f"AUC {auc:.4f}" in line.get_label()
    assert "1 resnet18" in plot.caption and "leuktui eval" in plot.caption


def test_examples_show_each_preprocessing_setting_with_the_pipelines_steps(tmp_path, tiny_data):
    from engine.preprocess import Preprocess
    from runner.control import create_run

    workspace = Workspace(tmp_path / "home").ensure()
    db = Database(workspace.db_url)
    for values in ({}, {"hist_eq": True}, {"hist_eq": True, "center_crop": True}):
        config = RunConfig.from_dict({"data_dir": str(tiny_data), "image_size": 32, **values})
        run = create_run(db, config)
        db.add_epoch(run.id, 1, 3, {"val_acc": 0.8, "confusion": [[5, 3], [2, 14]]}, best={"epoch": 1, "val_acc": 0.8})
    records = collect(db, select_runs(db, [1, 2, 3])).records
    originals, columns, why_not = example_images(records)
    assert why_not is None and len(originals) == 4
    assert [caption.split(" · ")[0] for caption, _ in originals] == ["ALL", "ALL", "HEM", "HEM"]
    assert len(columns) == 3 and "(run 3)" in columns[2][0] and "centre crop 27 px" in columns[2][0]
    settings = [Preprocess(32), Preprocess(32, hist_eq=True), Preprocess(32, hist_eq=True, center_crop=True)]
    for (_, images), preprocess in zip(columns, settings, strict=True):
        for (_, original), shown in zip(originals, images, strict=True):
            np.testing.assert_array_equal(shown, preprocess(original))
    plot = figures.examples_plot(originals, columns)
    assert len(plot.figure.axes) == 4 * 4 and plot.data["columns"][0] == "as stored"
    db.close()


# -- tables -----------------------------------------------------------------------------------------


def test_results_table_numbers_are_those_show_prints(seeded):
    _, db = seeded
    data = collect(db, select_runs(db, sweep=SWEEP))
    table = tables.results_table(data)
    for position, run in enumerate(data.runs):
        row = table.text.iloc[position]
        assert row["run"] == f"{run.id} {run.name}" and row["model"] == run.model
        assert row["val acc"] == percent(run.best_val_acc)          # as `show` prints it
        assert row["val F1"] == number(run.best_val_f1)
        assert row["val AUC"] == number(run.best_val_auc)
        assert row["optimizer"] == "Adam" and row["loss"] == "BCE" and row["batch size"] == "32"
        assert row["learning rate"] == "0.001" and row["epochs"] == "5/5" and row["score"] == "-"
    best = max(range(6), key=lambda i: data.runs[i].best_val_acc)
    assert (best, "val acc") in table.bold


def test_ablation_tables_are_the_ablation_screens_pivots(seeded):
    _, db = seeded
    data = collect(db, select_runs(db, sweep=SWEEP))
    made = {table.name: table for table in tables.ablation_tables(data, db.predictions_of)}
    assert list(made) == ["ablation-tta", "ablation-hist_eq"]
    epochs = db.epochs_of([r.id for r in data.runs])
    for factor in ("tta", "hist_eq"):
        pivots = ablation.build(data.runs, db.evaluations_of([r.id for r in data.runs]), "model", factor, "acc", epochs=epochs,
                                load_predictions=db.predictions_of)
        pivot = pivots[0]
        table = made[f"ablation-{factor}"]
        assert table.markdown.startswith(pivot.to_markdown())
        frame = table.frame
        assert list(frame["model"]) == pivot.rows
        for position, row in enumerate(pivot.rows):
            for column in pivot.columns:
                assert frame.iloc[position][pivot.column_label(column)] == pivot.value(row, column)
                assert table.text.iloc[position][pivot.column_label(column)] == pivot.cell_text(row, column)
            assert frame.iloc[position]["verdict"] == pivot.verdict_text(row)
    # The views of the runs without hist-eq; the hist-eq runs have a single view only, so their
    # table compares nothing and is named instead, with what sets them apart.
    tta = made["ablation-tta"]
    assert "(hist_eq=False)" in tta.title and "hist_eq=True" in tta.caption and "runs 2, 4, 6" in tta.caption
    assert list(tta.frame.columns) == ["model", "single view", "5-crop", "10-crop", "verdict"]


def test_reproduce_command_parses_back_to_the_same_config(seeded):
    from leuktui.cli import build_parser
    from leuktui.cli.common import config_from_args

    _, db = seeded
    record = collect(db, select_runs(db, [2])).records[0]
    command = tables.reproduce_command(record)
    assert command.startswith("leuktui run ") and "--hist-eq" in command
    args = build_parser().parse_args(command.split()[1:])
    assert config_from_args(args).to_dict() == record.config


# -- the report folder ------------------------------------------------------------------------------


def test_report_folder_holds_markdown_html_and_printable_figures(seeded, tmp_path):
    workspace, db = seeded
    _add_validation_predictions(db, 1)
    submission = db.add_submission([1], checkpoint="best", tta="single", test_csv="/data/lab3/resnet_18_test.csv",
                                   path=str(tmp_path / "run-1.csv"), rows=100)
    db.score_submission(submission.id, 0.96907, "leaderboard")
    db.add_submission([1, 3], checkpoint="best", tta="ten", test_csv="/data/lab3/resnet_18_test.csv",
                      path=str(tmp_path / "ensemble.csv"), rows=100)
    steps = []
    result = build_report(db, workspace, select_runs(db, sweep=SWEEP), tmp_path / "report",
                          progress=lambda done, total, what: steps.append((done, total)))
    folder = tmp_path / "report"
    assert result.folder == folder and result.run_ids == [1, 2, 3, 4, 5, 6]
    assert steps[-1][0] == steps[-1][1]
    assert result.figures == ["accuracy", "loss", *(f"confusion-run-{i}" for i in range(1, 7)), "roc"]
    for name in result.figures:
        with Image.open(folder / "figures" / f"{name}.png") as image:
            image.load()
            assert image.width >= 1200 and image.info["dpi"][0] >= 150, name
        assert (folder / "figures" / f"{name}.svg").read_text().lstrip().startswith("<?xml")
    markdown = (folder / "report.md").read_text()
    page = (folder / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(result.figures)
    assert "src=\"figures/" not in page  # self-contained
    for name in result.figures:
        assert f"](figures/{name}.png)" in markdown
    assert "| 1 resnet18 | resnet18 |" in markdown
    assert "0.96907" in markdown and "ensemble: resnet18 + resnet50" in markdown
    assert "leuktui run" in markdown and "leuktui run" in page
    assert {p.name for p in (folder / "tables").iterdir()} == {f"{t}.csv" for t in result.tables}
    assert "results.csv" in os.listdir(folder / "tables")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert result.notes and "no example images" in result.notes[-1]


def test_a_failed_build_leaves_the_older_report_and_no_temporary_folder(seeded, tmp_path, monkeypatch):
    workspace, db = seeded
    runs = select_runs(db, [1, 2])
    build_report(db, workspace, runs, tmp_path / "report")
    before = (tmp_path / "report" / "report.md").read_text()

    def broken(record):
        raise RuntimeError("drawing failed")

    monkeypatch.setattr(figures, "confusion_plot", broken)
    with pytest.raises(RuntimeError):
        build_report(db, workspace, runs, tmp_path / "report")
    assert (tmp_path / "report" / "report.md").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "report"]


# -- mistakes a user can make -----------------------------------------------------------------------


def test_bad_selections_say_which_run_or_sweep(seeded):
    _, db = seeded
    with pytest.raises(ReportError, match=r"^run 99: no such run$"):
        select_runs(db, [99])
    with pytest.raises(ReportError, match=r"^run 8: no epochs recorded yet \(status queued\)"):
        select_runs(db, [1, 8])
    with pytest.raises(ReportError, match=r"^sweep 7: no such sweep$"):
        select_runs(db, sweep=7)
    with pytest.raises(ReportError, match="tag 'nope'"):
        select_runs(db, tag="nope")
    assert [r.id for r in select_runs(db, tag="histeq")] == [2, 4, 6]
    assert [r.model for r in select_runs(db)] == ["resnet18", "resnet50", "resnet152"]  # best run per model


def test_unusable_output_folders_are_refused_in_one_line(seeded, tmp_path):
    workspace, db = seeded
    runs = select_runs(db, [1])
    occupied = tmp_path / "notes"
    occupied.mkdir()
    (occupied / "thesis.tex").write_text("mine")
    with pytest.raises(ReportError, match="notes: folder is not empty and holds no report"):
        build_report(db, workspace, runs, occupied)
    # The user's own report.md is no report of leuktui's; and an old report of leuktui's with something of
    # the user's beside it is not replaced either (a new report replaces the whole folder).
    write_up = tmp_path / "lab3"
    write_up.mkdir()
    (write_up / "report.md").write_text("# My lab 3 write-up\n")
    with pytest.raises(ReportError, match=r"lab3: folder is not empty and holds no report of leuktui's"):
        build_report(db, workspace, runs, write_up)
    assert (write_up / "report.md").read_text() == "# My lab 3 write-up\n"
    old_report = tmp_path / "old-report"
    old_report.mkdir()
    (old_report / "report.md").write_text("# Lab 3\n\n1 run (r) · written 2026-12-01 10:00 by leuktui from the workspace `h`\n")
    (old_report / "figures").mkdir()
    (old_report / "thesis.txt").write_text("mine")
    with pytest.raises(ReportError, match=r"old-report: holds 'thesis.txt', which a report does not write and a new one would replace"):
        build_report(db, workspace, runs, old_report)
    assert sorted(p.name for p in old_report.iterdir()) == ["figures", "report.md", "thesis.txt"]
    a_file = tmp_path / "file"
    a_file.write_text("")
    with pytest.raises(ReportError, match="file: exists and is not a folder"):
        build_report(db, workspace, runs, a_file)
    if os.geteuid() == 0:
        unwritable = Path("/proc/leuktui-report")  # not writable, even for root
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        unwritable = locked / "report"
    with pytest.raises(ReportError, match="cannot write the report there|is not writable"):
        build_report(db, workspace, runs, unwritable)
    assert (occupied / "thesis.tex").read_text() == "mine" and list(occupied.iterdir()) == [occupied / "thesis.tex"]


# -- the command line -------------------------------------------------------------------------------


@pytest.fixture
def seeded_home(tmp_path):
    workspace = Workspace(tmp_path / "home").ensure()
    seed_workspace(workspace).close()
    return workspace.home


def test_report_and_submissions_commands(seeded_home, tmp_path):
    out = tmp_path / "lab-report"
    result = cli("report", "1", "3", "-o", str(out), home=seeded_home)
    assert f"wrote the report on runs 1, 3 to {out}" in result.stdout
    assert (out / "report.html").is_file() and (out / "figures" / "confusion-run-3.png").is_file()
    # No runs named: the line says which runs it took, and why.
    Workspace(seeded_home).marks_path.write_text("[2, 4]")
    marked = cli("report", "-o", str(tmp_path / "marked"), home=seeded_home)
    assert f"wrote the report on runs 2, 4 (the runs marked in the app; `u` there unmarks them) to {tmp_path / 'marked'}" in marked.stdout
    for args, message in (
        (("report", "99"), "leuktui: error: run 99: no such run"),
        (("report", "8"), "leuktui: error: run 8: no epochs recorded yet (status queued)"),
        (("report", "--sweep", "5"), "leuktui: error: sweep 5: no such sweep"),
        (("report", "1", "-o", "/proc/leuktui-report"), "leuktui: error: /proc: cannot write the report there"),  # fails as it writes
    ):
        failed = cli(*args, "-o", str(tmp_path / "x"), home=seeded_home, check=False) if "-o" not in args else \
            cli(*args, home=seeded_home, check=False)
        assert failed.returncode == 1 and failed.stderr.strip().startswith(message) and len(failed.stderr.strip().splitlines()) == 1
        assert failed.stdout == "", "to a pipe, a failed report prints nothing but its error"
    assert not (tmp_path / "x").exists()

    assert "no submissions yet" in cli("submissions", home=seeded_home).stdout
    db = Database(Workspace(seeded_home).db_url)
    db.add_submission([1], checkpoint="best", tta="single", test_csv="/data/lab3/resnet_18_test.csv", path=str(tmp_path / "s.csv"), rows=16)
    db.close()
    scored = cli("submissions", "score", "1", "0.96907", home=seeded_home)
    assert "leaderboard score 0.96907 recorded" in scored.stdout
    import json

    listed = json.loads(cli("submissions", "--json", home=seeded_home).stdout)
    assert [(s["id"], s["run_ids"], s["score"], s["score_source"]) for s in listed] == [(1, [1], 0.96907, "leaderboard")]
    shown = cli("submissions", home=seeded_home).stdout.splitlines()
    assert shown[0].split()[:6] == ["id", "runs", "model", "checkpoint", "tta", "test"], shown  # the test CSV predicted
    assert shown[1].split()[:7] == ["1", "1", "resnet18", "best", "single", "resnet_18_test.csv", "16"] and "0.96907" in shown[1], shown
    bad = cli("submissions", "score", "1", "97", home=seeded_home, check=False)
    assert bad.returncode == 2 and "'97' is not between 0 and 1" in bad.stderr
    missing = cli("submissions", "score", "5", "0.5", home=seeded_home, check=False)
    assert missing.returncode == 1 and "submission 5: no such submission" in missing.stderr


def test_listing_commands_load_neither_matplotlib_nor_pandas(seeded_home, tmp_path):
    probe = (
        "import sys\n"
        "from leuktui.cli import main\n"
        f"for argv in (['--home', {str(seeded_home)!r}, 'ls'], ['--home', {str(seeded_home)!r}, 'show', '1'],"
        f" ['--home', {str(seeded_home)!r}, 'submissions']):\n"
        "    assert main(argv) == 0, argv\n"
        "heavy = sorted(m for m in ('matplotlib', 'pandas', 'torch') if m in sys.modules)\n"
        "print('HEAVY=' + ','.join(heavy))\n"
        f"assert main(['--home', {str(seeded_home)!r}, 'report', '1', '-o', {str(tmp_path / 'r')!r}]) == 0\n"
        "print('REPORT=' + ','.join(sorted(m for m in ('torch', 'torchvision', 'textual') if m in sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert "HEAVY=\n" in result.stdout
    assert "REPORT=\n" in result.stdout  # a report needs neither torch nor the app


def test_a_runs_final_fits_and_their_submission_come_with_it_into_the_report(seeded_home, tmp_path):
    """A final fit has epochs but no validation score: the report on its source run shows it in a
    table of its own and lists the ensemble it exported (the file a lab hands in)."""
    db = Database(Workspace(seeded_home).db_url)
    source = db.get_run(3)
    fits = []
    for seed in (0, 1):
        config = {**source.config, "fit_on": "train+valid", "seed": seed, "epochs": 2}
        fit = db.create_run(config=config, config_hash=f"fit-{seed}", model=source.model, name=f"{source.name}-final-{seed}",
                            tags=["final"], parent_id=3, status="completed")
        for epoch in (1, 2):
            db.add_epoch(fit.id, epoch, epoch * 10, {"train_loss": 0.5 / epoch, "train_acc": 0.8 + 0.05 * epoch})
        fits.append(fit.id)
    final = db.add_submission(fits, checkpoint="last", tta="single", test_csv="/data/lab3/resnet_50_test.csv",
                              path=str(tmp_path / "final-3-single.csv"), rows=16)
    db.close()

    out = tmp_path / "report"
    result = cli("report", "3", "-o", str(out), home=seeded_home)
    assert f"wrote the report on runs 3, {fits[0]}, {fits[1]} to {out}" in result.stdout
    markdown = (out / "report.md").read_text()
    assert "## Final fits" in markdown and (out / "tables" / "final-fits.csv").is_file()
    rows = (out / "tables" / "final-fits.csv").read_text().splitlines()
    assert rows[0].startswith("run,made from,model,seed,epochs,train loss,train acc") and len(rows) == 3
    assert rows[1].startswith(f"{fits[0]},3,") and ",2/2,0.25,0.9," in rows[1], rows[1]
    submissions = (out / "tables" / "submissions.csv").read_text()
    assert f"\n{final.id},ensemble: resnet50 + resnet50,\"{fits[0]}, {fits[1]}\",last," in submissions, submissions
    assert not (out / "figures" / f"confusion-run-{fits[0]}.png").exists(), "no validation figures of a final fit"

    alone = cli("report", str(fits[0]), "-o", str(tmp_path / "alone"), home=seeded_home, check=False)
    assert (alone.returncode, alone.stderr.strip()) == (1, f"leuktui: error: run {fits[0]}: final fit, trained on train + valid, with "
                                                           "no validation score to report; a report on the run it was made from (3) "
                                                           "includes it")
    both = cli("report", "3", str(fits[1]), "-o", str(tmp_path / "both"), home=seeded_home)
    assert f"wrote the report on runs 3, {fits[0]}, {fits[1]} to" in both.stdout, "a named fit, and its sibling by its source"


def test_runs_that_differ_in_two_fields_at_once_are_said_to_and_why_no_table_compares_them(seeded, tmp_path):
    """A study's trials: each its own lr and rotation, so no ablation table is fair, and the
    report says so instead of claiming they differ in nothing."""
    workspace, db = seeded
    base = db.get_run(1)
    ids = []
    for lr, rotation in ((0.01, 5.0), (0.001, 25.0)):
        config = {**base.config, "lr": lr, "rotation": rotation}
        run = db.create_run(config=config, config_hash=f"trial-{lr}", model=base.model, name=f"trial-{lr}", status="completed")
        db.add_epoch(run.id, 1, 10, {"val_acc": 0.7, "val_loss": 0.6}, best={"epoch": 1, "val_acc": 0.7})
        ids.append(run.id)
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = build_report(db, workspace, [db.get_run(i) for i in ids], tmp_path / "trials")
    assert [str(w.message) for w in caught] == [], "runs with validation points only are still named in the legend"
    markdown = (result.folder / "report.md").read_text()
    assert "These runs differ in lr, rotation, but no two of them agree on every other field" in markdown
    assert "differ in no factor" not in markdown


def test_a_report_never_goes_into_a_runs_dataset_folder(seeded, tmp_path):
    workspace, db = seeded
    data = tmp_path / "cells"
    (data / "train").mkdir(parents=True)
    run = db.get_run(1)
    db.update_run(1, config={**run.config, "data_dir": str(data)})
    for inside in (data / "report", data / "train" / "r", data):
        with pytest.raises(ReportError, match=f"^{inside}: inside the dataset folder {data}; a report never goes among"):
            build_report(db, workspace, [db.get_run(1)], inside)
    assert sorted(p.name for p in data.iterdir()) == ["train"], "nothing written there"
