"""The Studies screen on a real workspace with a real Optuna journal: trials, the best, curves,
importances, and its keys (more trials, stop, open a trial's run)."""

from __future__ import annotations

from textual.widgets import DataTable, Static

from conftest import tiny_config, train_trial
from db import Database, states
from db.vocabulary import PRUNED, QUEUED, RUNNING
from leuktui.screens.dialogs import ConfirmScreen
from leuktui.screens.run_detail import RunDetailScreen
from leuktui.screens.studies import StudiesScreen
from leuktui.widgets.charts import MetricChart
from leuktui.widgets.keybar import KeyBar
from runner.studies import StudyDriver, StudyRequest, create_study, find_study
from tui.conftest import make_app, wait_until


def seed_study(workspace, data_dir) -> int:
    db = Database(workspace.db_url)
    request = StudyRequest(name="lr-search", space="lr=log:1e-4:1e-1; batch_size=8,16", trials=6, parallel=3, startup_trials=1)
    sweep = create_study(db, workspace, request, tiny_config(data_dir, epochs=3), check_configs=False)
    driver = StudyDriver(db, workspace)
    driver.tick(force=True)
    first, second, third = db.sweep_runs(sweep.id)
    train_trial(db, workspace, first.id, [0.6, 0.8, 0.7])
    train_trial(db, workspace, second.id, [0.5, 0.55, 0.6])
    states.move(db, third.id, RUNNING, only_from=(QUEUED,))
    db.add_epoch(third.id, 1, 1, {"val_acc": 0.4, "confusion": [[1, 0], [0, 1]]}, best={"epoch": 1, "val_acc": 0.4})
    states.finish(db, third.id, PRUNED)
    driver.tick(force=True)
    db.close()
    return sweep.id


async def test_the_studies_screen_shows_trials_best_curves_importances_and_its_keys_act(tmp_path, tiny_data):
    from db import Workspace

    workspace = Workspace(tmp_path / "home").ensure()
    study_id = seed_study(workspace, tiny_data)
    app = make_app(workspace)
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.press("o")
        await wait_until(pilot, lambda: isinstance(app.screen, StudiesScreen) and app.screen.summaries, message="the studies read")
        screen = app.screen
        bar = str(screen.query_one(KeyBar).render())
        assert "x Stop study" in bar and "+ 5 more" in bar and "Prev study" not in bar, "one study: no [ and ]"
        table = screen.query_one("#study-trials", DataTable)
        await wait_until(pilot, lambda: table.row_count == 6, message="six trials")
        head = str(screen.query_one("#study-head", Static).render())
        assert "study 'lr-search' searching: 6/6 trials" in head and "1 pruned" in head
        assert "best: trial 0 (run 1) 80.00% at epoch 2" in head
        statuses = [str(table.get_row_at(i)[2]) for i in range(table.row_count)]
        assert statuses[:3] == ["completed", "completed", "pruned"]
        headers = [str(column.label) for column in table.columns.values()]
        assert "val_acc (pruned: last epoch)" in headers, headers  # why a pruned run's value is not its best accuracy
        chart = screen.query_one("#study-curves", MetricChart)
        assert [label for label, _, _ in chart._series][:3] == ["#0 completed", "#1 completed", "#2 pruned"]
        assert list(chart._series[0][2]) == [0.6, 0.8, 0.7]
        await wait_until(pilot, lambda: "importance (fANOVA)" in str(screen.query_one("#study-importances", Static).render()),
                         message="the importances")
        importances = str(screen.query_one("#study-importances", Static).render())
        assert "lr" in importances and "batch_size" in importances

        await pilot.press("plus")
        db = Database(workspace.db_url)
        await wait_until(pilot, lambda: find_study(db, "lr-search").study["trials"] == 11, message="five more trials")
        await pilot.press("x")
        await pilot.press("y")
        await wait_until(pilot, lambda: find_study(db, "lr-search").study["stopped_at"] is not None, message="the study stopped")
        waiting = [run for run in db.sweep_runs(study_id) if run.status == QUEUED]
        assert waiting == []  # its waiting trials were cancelled
        await wait_until(pilot, lambda: screen.summary()["state"] != "searching", message="the screen reads it stopped")
        await pilot.press("x")  # stopped: nothing to ask about
        await wait_until(pilot, lambda: any("it gives no new trials (+ adds more)" in n.message for n in app._notifications),
                         message="the study says it is stopped")
        assert not isinstance(app.screen, ConfirmScreen)

        table.move_cursor(row=0)
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, RunDetailScreen) and app.screen.run_id == 1, message="trial 0's run open")
        db.close()


async def test_with_no_study_the_screen_says_how_to_make_one_and_offers_no_studys_keys(seeded):
    app = make_app(seeded)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("o")
        await wait_until(pilot, lambda: isinstance(app.screen, StudiesScreen), message="the studies screen")
        screen = app.screen
        await wait_until(pilot, lambda: "no studies yet" in str(screen.query_one("#study-head", Static).render()), message="read")
        assert not screen.query_one("#study-charts").display and not screen.query_one("#study-trials").display, "no 'reading…' left"
        bar = str(screen.query_one(KeyBar).render())
        assert "esc Back" in bar and not any(key in bar for key in ("Stop study", "5 more", "Prev study", "Next study")), bar


async def test_the_sweep_form_in_search_mode_makes_a_study(tmp_path, tiny_data):
    from textual.widgets import Input, Select

    from db import Workspace
    from leuktui.screens.new_run import NewRunScreen

    workspace = Workspace(tmp_path / "home").ensure()
    app = make_app(workspace)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("g")
        await wait_until(pilot, lambda: isinstance(app.screen, NewRunScreen), message="the sweep form")
        form = app.screen
        form.query_one("#meta-mode", Select).value = "search"
        await pilot.pause(0.1)
        assert form.query_one("#search-rows").display and not form.query_one("#row-factors").display
        summary = lambda: str(form.query_one("#form-summary", Static).render())  # noqa: E731
        assert "fix the name" in summary()  # a study needs its name
        form.query_one("#meta-name", Input).value = "form-search"
        form.query_one("#field-data_dir", Input).value = str(tiny_data)
        form.query_one("#meta-space", Input).value = "lr=log:0:1"
        await pilot.pause(0.1)
        assert "fix the space: lr: a log range starts above 0" in summary()
        form.query_one("#meta-space", Input).value = "lr=log:1e-4:1e-1; batch_size=8,16"
        form.query_one("#meta-trials", Input).value = "7"
        form.query_one("#meta-parallel", Input).value = "2"
        form.query_one("#meta-pruner", Select).value = "asha"
        await pilot.pause(0.1)
        assert "will search 7 trials, 2 at once" in summary()
        await pilot.press("ctrl+s")
        db = Database(workspace.db_url)
        await wait_until(pilot, lambda: db.sweep_named("form-search", kind="study") is not None, message="the study made")
        study = find_study(db, "form-search").study
        assert (study["trials"], study["parallel"], study["pruner"], study["sampler"]) == (7, 2, "asha", "tpe")
        assert [p["name"] for p in study["space"]] == ["lr", "batch_size"]
        db.close()
