"""Recorded submissions and ensembles, on two runs really trained on tiny synthetic data."""

from __future__ import annotations

import csv
import json

import pytest

from conftest import cli, tiny_config
from db import Database, NotFound, Workspace
from engine.ensemble import EnsembleError, export_ensemble
from engine.predict import export_submission
from engine.scoring import score_submission
from engine.train import Trainer
from runner.control import create_run

# One pytest-xdist worker for the module: its two trained runs are made once.
pytestmark = pytest.mark.xdist_group("ensemble")


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, tiny_data):
    """Two one-epoch runs with different image sizes and preprocessing, in one workspace."""
    workspace = Workspace(tmp_path_factory.mktemp("ensemble") / "home").ensure()
    db = Database(workspace.db_url)
    ids = []
    for config in (tiny_config(tiny_data, epochs=1, amp="off", image_size=20),
                   tiny_config(tiny_data, epochs=1, amp="off", image_size=16, hist_eq=True, seed=1)):
        run = create_run(db, config)
        assert Trainer(db, workspace, run.id).run() == "completed"
        ids.append(run.id)
    yield workspace, db, ids
    db.close()


def test_an_ensemble_averages_each_runs_probabilities_and_is_recorded(two_runs, tmp_path):
    workspace, db, (a, b) = two_runs
    alone = {}
    for run_id in (a, b):
        alone[run_id] = tmp_path / f"run-{run_id}.csv"
        export_submission(db, workspace, run_id, alone[run_id], tta="five", proba=True)
    progress = []
    path, rows = export_ensemble(db, workspace, [a, b], tmp_path / "both.csv", tta="five", proba=True,
                                 on_batch=lambda done, total: progress.append((done, total)))
    assert rows == 16
    first, second, both = _rows(alone[a]), _rows(alone[b]), _rows(path)
    assert [r["ID"] for r in both] == [r["ID"] for r in first] == [r["ID"] for r in second]
    for x, y, mean in zip(first, second, both, strict=True):
        expected = (float(x["prob_all"]) + float(y["prob_all"])) / 2
        assert float(mean["prob_all"]) == pytest.approx(expected, abs=2e-6)
        assert int(mean["label"]) == int(float(mean["prob_all"]) >= 0.5)
    assert progress[-1][0] == progress[-1][1] and [d for d, _ in progress] == sorted(d for d, _ in progress)
    recorded = db.submissions()[-3:]
    assert [s.run_ids for s in recorded] == [[a], [b], [a, b]]
    assert recorded[-1].path == str(path.resolve()) and recorded[-1].tta == "five" and recorded[-1].rows == 16
    assert recorded[-1].test_csv.endswith("resnet_18_test.csv") and recorded[-1].score is None


def test_runs_on_different_test_csvs_are_refused_before_anything_is_written(two_runs, tmp_path, tiny_data):
    workspace, db, (a, b) = two_runs
    run = db.get_run(b)
    other = str(tiny_data / "resnet_152_test.csv")
    db.update_run(b, config={**run.config, "test_csv": other})
    before = len(db.submissions())
    try:
        with pytest.raises(EnsembleError, match=rf"^runs {a} and {b} predict different test CSVs .*resnet_18_test.csv.*resnet_152_test.csv.*--test-csv$"):
            export_ensemble(db, workspace, [a, b], tmp_path / "both.csv")
        with pytest.raises(EnsembleError, match=rf"run {a} is named twice"):
            export_ensemble(db, workspace, [a, a], tmp_path / "both.csv")
        with pytest.raises(NotFound, match="^run 77: no such run$"):
            export_ensemble(db, workspace, [a, 77], tmp_path / "both.csv")
        assert not (tmp_path / "both.csv").exists() and len(db.submissions()) == before
        path, rows = export_ensemble(db, workspace, [a, b], tmp_path / "both.csv", test_csv=other)
        assert rows == 16 and db.submissions()[-1].test_csv == other
    finally:
        db.update_run(b, config=run.config)


def test_export_and_score_from_the_command_line(two_runs, tiny_data):
    workspace, db, (a, b) = two_runs
    result = cli("export", str(a), str(b), home=workspace.home)
    output = workspace.exports_dir / f"ensemble-{a}-{b}-single.csv"
    assert f"wrote 16 rows to {output}" in result.stdout
    submission = db.submissions()[-1]
    assert submission.run_ids == [a, b] and submission.path == str(output)
    assert f"recorded as submission {submission.id}" in result.stdout
    scored = cli("score", str(output), "--key", str(tiny_data / "test_answer_key.csv"), home=workspace.home)
    accuracy = score_submission(output, tiny_data / "test_answer_key.csv")["acc"]
    assert f"as the score of submission {submission.id}" in scored.stdout
    listed = json.loads(cli("submissions", "--json", home=workspace.home).stdout)
    assert (listed[-1]["score"], listed[-1]["score_source"]) == (pytest.approx(accuracy), "key")


def test_report_evaluate_records_the_predictions_its_roc_curves_need(two_runs, tmp_path):
    workspace, db, (a, b) = two_runs
    from sqlalchemy import delete

    from db.models import Evaluation

    # Runs recorded before training kept its best epoch's predictions: the report evaluates them.
    assert {e.origin for run in (a, b) for e in db.evaluations(run)} >= {"training"}
    db.write(lambda session: session.execute(delete(Evaluation).where(Evaluation.origin == "training")))
    before = len(db.evaluations(b))
    result = cli("report", str(a), str(b), "--evaluate", "-o", str(tmp_path / "report"), home=workspace.home)
    assert f"evaluating run {a}" in result.stdout and f"evaluating run {b}" in result.stdout
    added = db.evaluations(b)[before:]
    assert [(e.split, e.tta, e.checkpoint, e.n) for e in added] == [("valid", "single", "best", 24)]
    assert (tmp_path / "report" / "figures" / "roc.svg").is_file()
    again = cli("report", str(a), str(b), "--evaluate", "-o", str(tmp_path / "report"), home=workspace.home)
    assert "evaluating" not in again.stdout and len(db.evaluations(b)) == before + 1


async def test_the_report_dialog_evaluates_and_draws_the_maps_first_when_asked(two_runs, tmp_path):
    """The dialog's two boxes do what `report --evaluate --cam` does, before the report is built."""
    from sqlalchemy import delete
    from textual.widgets import Input
    from tui.conftest import make_app, select_run, wait_until

    from db.models import Evaluation
    from leuktui.screens.report_dialog import ReportScreen

    workspace, db, (a, b) = two_runs
    db.write(lambda session: session.execute(delete(Evaluation).where(Evaluation.split == "valid")))
    for run_id in (a, b):
        for old_map in (workspace.home / "runs" / str(run_id)).rglob("cam/**/*.png"):
            old_map.unlink()
    folder = tmp_path / "report"
    app = make_app(workspace)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: app.screen.query_one("#runs").row_count == 2, message="two runs")
        for run_id in (a, b):
            select_run(app, run_id)
            await pilot.press("space")
        await pilot.press("r")
        await wait_until(pilot, lambda: isinstance(app.screen, ReportScreen), message="the report dialog")
        app.screen.query_one("#report-output", Input).value = str(folder)
        await pilot.click("#report-evaluate")
        await pilot.click("#report-cam")
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: any(str(folder) in n.message for n in app._notifications), timeout=120,
                         message="the report's notification")
    for run_id in (a, b):
        assert [(e.split, e.tta, e.checkpoint, e.n) for e in db.evaluations(run_id) if e.split == "valid"] == \
            [("valid", "single", "best", 24)], run_id
    assert (folder / "figures" / "roc.svg").is_file()
    assert list((workspace.home / "runs" / str(a) / "cam").rglob("*.png")), "the maps drawn first"
    assert "not drawn yet" not in (folder / "report.md").read_text()
