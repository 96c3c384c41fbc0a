"""Pilot tests of the app's flows on a real SQLite workspace."""

from __future__ import annotations

import gc
import subprocess
import sys

from textual.containers import VerticalScroll
from textual.widgets import DataTable, Input, Markdown, Static

from db import Database, states
from engine.synth import make_dataset
from leuktui.screens.ablation import AblationScreen
from leuktui.screens.compare import CompareScreen
from leuktui.screens.help import HelpScreen
from leuktui.screens.new_run import NewRunScreen
from leuktui.screens.queue import QueueScreen
from leuktui.screens.run_detail import RunDetailScreen
from leuktui.screens.runs import RunsScreen
from leuktui.widgets.charts import MetricChart
from leuktui.widgets.keybar import KeyBar
from tui.conftest import make_app, select_run, wait_until


def runs_table(app) -> DataTable:
    return app.screen.query_one("#runs", DataTable)


def row_ids(app) -> list[int]:
    table = runs_table(app)
    return [int(key.value) for key in table.rows]


async def open_run_screen(app, pilot, run_id: int) -> RunDetailScreen:
    """Open a run from the Runs screen as enter does, and wait for its screen with its data."""
    await wait_until(pilot, lambda: runs_table(app).row_count == 9)
    app.open_run(run_id)
    await wait_until(pilot, lambda: isinstance(app.screen, RunDetailScreen) and app.screen.run_id == run_id and app.screen.run is not None,
                     message=f"run {run_id} open")
    return app.screen


async def test_runs_screen_lists_filters_and_sorts(seeded):
    app = make_app(seeded)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: runs_table(app).row_count == 9, message="nine runs")
        assert row_ids(app) == [9, 8, 7, 6, 5, 4, 3, 2, 1]
        await pilot.press("slash")
        await pilot.press(*"model=resnet50", "enter")
        assert row_ids(app) == [8, 4, 3]
        await pilot.press("slash")
        app.screen.query_one("#filter", Input).value = "model=resnet50 status=completed acc>0.9"
        await pilot.press("enter")
        assert sorted(row_ids(app)) == [3, 4]
        await pilot.press("escape")
        assert len(row_ids(app)) == 9
        await pilot.press("s")  # sort by best accuracy
        accs = [app.runs[i].best_val_acc or -1 for i in row_ids(app)]
        assert accs == sorted(accs, reverse=True)
        await pilot.press("slash")
        app.screen.query_one("#filter", Input).value = "colour=red"
        await pilot.press("enter")
        assert len(row_ids(app)) == 9, "a bad filter keeps the table as it was"
        assert any("unknown field 'colour'" in n.message for n in app._notifications)


async def test_open_a_run_and_read_its_confusion_matrix(seeded, monkeypatch):
    first_pictures = {}  # chart id -> whether its first drawing had the run's data
    render = MetricChart.render

    def record(chart):
        first_pictures.setdefault(chart.id, chart._series is not None)
        return render(chart)

    monkeypatch.setattr(MetricChart, "render", record)
    app = make_app(seeded)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: runs_table(app).row_count == 9)
        select_run(app, 1)
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, RunDetailScreen), message="the run's screen")
        await wait_until(pilot, lambda: len(app.screen.epochs) == 5 and len(app.screen.steps) == 1250, message="epochs and steps")
        assert first_pictures == {"chart-loss": True, "chart-acc": True, "chart-steps": True}, "the screen opens with its data, never empty"
        await wait_until(pilot, gc.isenabled, timeout=2.0, message="garbage collection back on once the run is painted")
        head = str(app.screen.query_one("#detail-head", Static).render())
        assert "run 1" in head and "resnet18" in head and "completed" in head
        matrix = app.screen.query_one("#confusion")
        title, confusion, metrics = matrix.shown
        assert title.startswith("epoch 5") and confusion == Database(seeded.db_url).epochs(1)[-1].confusion
        await pilot.press("right_square_bracket")  # past the last epoch: the first evaluation
        title, confusion, metrics = matrix.shown
        assert title.startswith("evaluation 1: best checkpoint, five, valid") and confusion == [[29, 3], [4, 64]]
        assert app.screen.query_one("#detail-tabs").active == "tab-confusion"
        await pilot.press("5")
        assert app.screen.query_one("#detail-tabs").active == "tab-log"
        await pilot.press("1")
        assert app.screen.query_one("#detail-tabs").active == "tab-charts"
        await pilot.press("escape")
        assert isinstance(app.screen, RunsScreen)


async def test_epochs_arrive_live(seeded):
    app = make_app(seeded)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: runs_table(app).row_count == 9)
        select_run(app, 7)  # the running run, 3 epochs so far
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, RunDetailScreen) and len(app.screen.epochs) == 3)
        writer = Database(seeded.db_url)
        writer.add_epoch(7, 4, 400, {"train_loss": 0.3, "val_acc": 0.91, "val_loss": 0.25, "confusion": [[30, 2], [7, 61]], "seconds": 10})
        writer.add_steps(7, [(s, "train_loss", 0.3) for s in range(1, 401)])
        await wait_until(pilot, lambda: len(app.screen.epochs) == 4 and len(app.screen.steps) == 400, message="the new epoch on screen")
        await pilot.pause(0.4)
        assert "epoch 4/10" in str(app.screen.query_one("#detail-head", Static).render())
        await pilot.press("escape")
        await wait_until(pilot, lambda: "4/10" in str(runs_table(app).get_cell("7", "progress")), message="progress in the table")


async def test_queue_a_run_from_the_form(seeded, tmp_path):
    app = make_app(seeded)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: runs_table(app).row_count == 9)
        await pilot.press("n")
        assert isinstance(app.screen, NewRunScreen)
        form = app.screen
        form.query_one("#field-image_size", Input).value = "abc"
        await pilot.pause(0.1)
        error = form.query_one("#error-image_size", Static)
        assert error.display and "not an integer" in str(error.render())
        form.query_one("#field-image_size", Input).value = "32"
        form.query_one("#field-epochs", Input).value = "1"
        form.query_one("#field-data_dir", Input).value = str(tmp_path / "cells")
        form.query_one("#meta-name", Input).value = "from the form"
        await pilot.pause(0.1)
        assert not error.display
        await pilot.press("ctrl+s")  # the folder does not exist: refused before anything is recorded
        await wait_until(pilot, lambda: any("no such dataset folder" in n.message for n in app._notifications), message="refused")
        assert isinstance(app.screen, NewRunScreen) and len(Database(seeded.db_url).list_runs()) == 9
        make_dataset(tmp_path / "cells", n_train=8, n_valid=4, n_test=4, size=16)
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: isinstance(app.screen, RunsScreen), message="form closed")
        await wait_until(pilot, lambda: runs_table(app).row_count == 10, message="the new run listed")
        new = Database(seeded.db_url).get_run(10)
        assert (new.name, new.status, new.config["image_size"], new.config["epochs"]) == ("from the form", "queued", 32, 1)


async def test_new_sweep_counts_the_runs_it_will_queue(seeded):
    app = make_app(seeded)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: runs_table(app).row_count == 9)
        await pilot.press("g")
        form = app.screen
        await pilot.pause(0.1)
        # The factors are the user's to give (an example shows how): none typed, nothing to queue.
        assert form.query_one("#meta-factors", Input).value == ""
        assert "fix the factors: give one or more" in str(form.query_one("#form-summary", Static).render())
        form.query_one("#meta-factors", Input).value = "model=resnet18,resnet50,resnet152; hist_eq=false,true"
        await pilot.pause(0.1)
        assert "will queue 6 runs" in str(form.query_one("#form-summary", Static).render())
        form.query_one("#meta-factors", Input).value = "model=resnet18,resnet50; eval_mode=single,five,ten"
        await pilot.pause(0.1)
        assert "will queue 6 runs" in str(form.query_one("#form-summary", Static).render())
        form.query_one("#meta-factors", Input).value = "hist_eq=false,true"
        form.query_one("#meta-seeds", Input).value = "3"  # replicates: three seeds a cell
        await pilot.pause(0.1)
        assert "will queue 6 runs" in str(form.query_one("#form-summary", Static).render())
        form.query_one("#meta-seeds", Input).value = "0"
        await pilot.pause(0.1)
        assert "fix the seeds" in str(form.query_one("#form-summary", Static).render())
        form.query_one("#meta-seeds", Input).value = "1"
        form.query_one("#meta-factors", Input).value = "optimizer=adam,rmsprop"
        await pilot.pause(0.1)
        assert "fix the factors" in str(form.query_one("#form-summary", Static).render())


async def test_mark_two_runs_and_compare(seeded):
    app = make_app(seeded)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: runs_table(app).row_count == 9)
        select_run(app, 5)
        await pilot.press("space")  # marks 5, moves to 4
        await pilot.press("space")  # marks 4
        await pilot.press("c")
        assert isinstance(app.screen, CompareScreen)
        diff = app.screen.query_one("#compare-diff", DataTable)
        await wait_until(pilot, lambda: diff.row_count > 0, message="config diff")
        keys = [str(diff.get_row_at(i)[0]) for i in range(diff.row_count)]
        assert keys == ["hist_eq", "model"]
        metrics = app.screen.query_one("#compare-metrics", DataTable)
        assert metrics.row_count == 2
        headers = [str(column.label) for column in metrics.columns.values()]
        assert "MCC" in headers and "bal acc" in headers
        # Accuracy, its interval and its last-5 mean lead: a narrow terminal cuts the right-hand columns.
        assert headers[:6] == ["run", "status", "best ep", "acc", "acc 95% CI", "last-5 acc"], headers
        mcc = [str(metrics.get_row_at(i)[headers.index("MCC")]) for i in range(2)]
        assert all(value not in ("-", "") for value in mcc)


async def test_ablation_table_from_a_sweep(seeded):
    app = make_app(seeded)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: runs_table(app).row_count == 9)
        select_run(app, 1)
        await pilot.press("a")
        assert isinstance(app.screen, AblationScreen)
        pivot_table = app.screen.query_one("#ablation-table", DataTable)
        # Opened on a sweep: its own factors, model x hist_eq, one table, every run in it.
        await wait_until(pilot, lambda: app.screen.pivot is not None and app.screen.pivot.column_factor == "hist_eq", message="hist_eq")
        assert app.screen.pivot.rows == ["resnet18", "resnet50", "resnet152"] and app.screen.pivot.columns == [False, True]
        assert len(app.screen.tables) == 1 and app.screen.pivot.run_ids == [1, 2, 3, 4, 5, 6]
        from textual.widgets import Select

        app.screen.query_one("#ablation-columns", Select).value = "tta"
        await wait_until(pilot, lambda: app.screen.pivot.column_factor == "tta", message="the views")
        await wait_until(pilot, lambda: pivot_table.row_count == 3, message="three model rows")
        pivot = app.screen.pivot
        assert pivot.rows == ["resnet18", "resnet50", "resnet152"] and pivot.columns == ["single", "five", "ten"]
        assert pivot.context == {"hist_eq": False} and len(app.screen.tables) == 2  # the hist-eq runs: a table of their own
        for row in pivot.rows:
            assert pivot.value(row, pivot.leading_column(row)) == max(pivot.value(row, c) for c in pivot.columns if pivot.value(row, c) is not None)
            # The seeded views have no per-image predictions: nothing is tested, so nothing is marked best.
            assert pivot.best_column(row) is None and pivot.verdict_text(row).startswith("not tested")
        shown = pivot_table.get_row_at(0)
        assert str(shown[1]).endswith("(n=1)") and str(shown[-1]).startswith("not tested [")
        legend = str(app.screen.query_one("#ablation-legend").render())
        reasons = {pivot.verdict_text(row).removeprefix("not tested (").removesuffix(")") for row in pivot.rows}
        assert all(legend.count(f"not tested: {why}") == 1 for why in reasons), "each reason said once, under the table"
        await pilot.press("t")
        assert app.screen.pivot.context == {"hist_eq": True} and app.screen.pivot.columns == ["single"]
        title = str(app.screen.query_one("#ablation-title", Static).render())
        assert title.startswith("table 2 of 2: model x tta (hist_eq=True) · 6 of 6 runs with results · "), title  # what tells it apart, first
        await pilot.press("t")
        assert app.screen.pivot.context == {"hist_eq": False}
        async def metric_is(key: str) -> None:
            await wait_until(pilot, lambda: app.screen.pivot.metric == key, message=f"the {key} table")

        await pilot.press("m")
        await metric_is("f1")
        for key in ("auc", "sensitivity", "specificity", "mcc"):  # m cycles through every metric of the registry
            await pilot.press("m")
            await metric_is(key)
        assert all(app.screen.pivot.value(row, "single") is not None for row in app.screen.pivot.rows)
        assert "Matthews correlation" in str(app.screen.query_one("#ablation-title", Static).render())
        await pilot.press("m")
        await metric_is("balanced_acc")
        await pilot.press("m")
        await metric_is("loss")
        for row in app.screen.pivot.rows:  # lower is better: the leading cell is the smallest
            values = [app.screen.pivot.value(row, c) for c in app.screen.pivot.columns if app.screen.pivot.value(row, c) is not None]
            assert app.screen.pivot.value(row, app.screen.pivot.leading_column(row)) == min(values)
        await pilot.press("m")
        await metric_is("acc")
        await pilot.press("l")  # the mean of the last five epochs: the views exist for the best checkpoint only
        await wait_until(pilot, lambda: app.screen.selection == "last")
        assert "best checkpoint" in str(app.screen.query_one("#ablation-title", Static).render())
        await pilot.press("y")
        await wait_until(pilot, lambda: list((seeded.exports_dir).glob("ablation-*.md")), message="markdown saved")
        text = next(seeded.exports_dir.glob("ablation-*.md")).read_text()
        assert "| model | single view | 5-crop | 10-crop | verdict |" in text and "hist_eq=True" in text


async def test_cancel_a_queued_run_and_use_the_queue_screen(seeded):
    app = make_app(seeded)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: runs_table(app).row_count == 9)
        await pilot.press("w")
        assert isinstance(app.screen, QueueScreen)
        queue = app.screen.query_one("#queue", DataTable)
        await wait_until(pilot, lambda: queue.row_count == 2, message="running and queued runs")
        assert "CPU" in str(app.screen.query_one("#devices", Static).render())
        queue.move_cursor(row=1)
        await pilot.press("h")
        await wait_until(pilot, lambda: Database(seeded.db_url).get_run(8).status == "held", message="held")
        await pilot.press("u")
        await wait_until(pilot, lambda: Database(seeded.db_url).get_run(8).status == "queued", message="released")
        await pilot.pause(1.2)  # a poll or two
        assert queue.coordinate_to_cell_key(queue.cursor_coordinate).row_key.value == "8", "the cursor stays on its run"
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, RunDetailScreen) and app.screen.run_id == 8, message="run 8 opened")
        await pilot.press("escape")
        assert isinstance(app.screen, QueueScreen)
        await pilot.press("escape")
        table = select_run(app, 8)
        await pilot.press("x")
        await wait_until(pilot, lambda: Database(seeded.db_url).get_run(8).status == "cancelled", message="cancelled")
        await wait_until(pilot, lambda: "cancelled" in str(table.get_cell("8", "status")), message="shown cancelled")
        await pilot.press("x")  # cancelling it again is an error shown, not a crash
        await wait_until(pilot, lambda: any("nothing to cancel" in n.message for n in app._notifications), message="notification")
        assert app.is_running


async def test_an_empty_queue_says_so_and_how_to_fill_it(tmp_path):
    from db import Workspace

    app = make_app(Workspace(tmp_path / "home").ensure())
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: app.loaded, message="the app")
        await pilot.press("w")
        state = app.screen.query_one("#scheduler-state", Static)
        await wait_until(pilot, lambda: "nothing queued or running" in str(state.render()), message="the empty queue said")
        assert "`leuktui queue` adds one" in str(state.render()) and app.screen.query_one("#queue", DataTable).row_count == 0


async def test_delete_asks_first(seeded):
    app = make_app(seeded)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: runs_table(app).row_count == 9)
        select_run(app, 9)
        seeded.run_dir(9).mkdir(parents=True)
        await pilot.press("d")
        await pilot.press("escape")
        assert runs_table(app).row_count == 9
        await pilot.press("d")
        await pilot.press("y")
        await wait_until(pilot, lambda: runs_table(app).row_count == 8, message="deleted")
        assert 9 not in Database(seeded.db_url).run_ids() and not seeded.run_dir(9).exists()


async def test_the_final_fit_key_queues_three_seeds_on_train_and_valid_then_waits_for_them(tmp_path):
    from db import Workspace
    from tui.seed import seed_workspace

    data = make_dataset(tmp_path / "cells", n_train=8, n_valid=4, n_test=4, size=16)
    workspace = Workspace(tmp_path / "home").ensure()
    seed_workspace(workspace, data_dir=str(data)).close()
    db = Database(workspace.db_url)
    app = make_app(workspace)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: runs_table(app).row_count == 9)
        select_run(app, 1)
        await pilot.press("F")
        await wait_until(pilot, lambda: app.screen.__class__.__name__ == "ConfirmScreen", message="asked first")
        await pilot.press("y")
        await wait_until(pilot, lambda: len(db.final_fits(1)) == 3, message="three final fits")
        fits = db.final_fits(1)
        assert [fit.config["seed"] for fit in fits] == [0, 1, 2]
        assert all(fit.config["fit_on"] == "train+valid" and fit.config["epochs"] == db.get_run(1).best_epoch for fit in fits)
        await wait_until(pilot, lambda: runs_table(app).row_count == 12, message="listed")
        assert str(runs_table(app).get_cell(str(fits[0].id), "acc")) == "final fit"
        select_run(app, 1)
        await pilot.press("F")
        await wait_until(pilot, lambda: any("not all finished" in n.message for n in app._notifications), message="waits")
    db.close()


async def test_every_action_is_in_the_command_palette(seeded):
    app = make_app(seeded)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: runs_table(app).row_count == 9)
        titles = {command.title for command in app.get_system_commands(app.screen)}
        for binding in RunsScreen.BINDINGS:
            if binding.show:
                assert binding.description in titles
        assert {"Queue", "Help"} <= titles
        helps = {command.title: command.help for command in app.get_system_commands(app.screen)}
        assert helps["Export"] == "export the Kaggle submission (several marked runs: an ensemble) (e)", "what it does, not its name again"


def test_the_app_never_imports_torch_sklearn_matplotlib_pandas_scipy_or_optuna_at_start_up(seeded):
    """Nor when a run is opened, nor when the report dialog opens: only building a report or
    training loads them."""
    probe = (
        "import asyncio, sys\n"
        "from db import Workspace\n"
        "from leuktui.app import LeuktuiApp\n"
        "async def main():\n"
        f"    app = LeuktuiApp(Workspace.resolve({str(seeded.home)!r}), start_scheduler=False)\n"
        "    async with app.run_test(size=(80, 24)) as pilot:\n"
        "        while not app.loaded:\n"
        "            await pilot.pause(0.05)\n"
        "        await pilot.press('enter')\n"
        "        await pilot.pause(0.5)\n"
        "        await pilot.press('escape', 'r')\n"
        "        await pilot.pause(0.5)\n"
        "asyncio.run(main())\n"
        "print('HEAVY=' + ','.join(sorted(m for m in ('torch', 'torchvision', 'sklearn', 'matplotlib', 'pandas', 'scipy', 'statsmodels', 'optuna') if m in sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    assert "HEAVY=\n" in result.stdout


async def test_a_run_deleted_meanwhile_is_an_error_not_a_screen(seeded):
    app = make_app(seeded)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: app.loaded and runs_table(app).row_count == 9)
        assert gc.get_freeze_count() > 0, "the loaded runs are out of the collector's way"
        app.open_run(4242)
        await wait_until(pilot, lambda: any("run 4242: no such run" in n.message for n in app._notifications), message="the error")
        assert isinstance(app.screen, RunsScreen)
        await wait_until(pilot, gc.isenabled, timeout=1.0, message="garbage collection back on")
    assert gc.get_freeze_count() == 0, "what the app froze is collectable once it exits"


async def test_keymap_remaps_a_key_and_the_key_bar_shows_and_clicks_it(seeded):
    (seeded.home / "keymap.json").write_text('{"new-run": "N"}')
    app = make_app(seeded)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: runs_table(app).row_count == 9)
        bar = app.screen.query_one(KeyBar)
        keys, palette = bar.shown()
        assert [key for key, *_ in keys][:5] == ["N", "space", "c", "a", "e"], "a remapped key keeps its place"
        assert ("N", "N", "New run", True) in keys and palette[0] == "ctrl+p"
        await pilot.press("n")
        assert isinstance(app.screen, RunsScreen), "the old key no longer opens the form"
        start = next(start for start, _, key in bar._keys if key == "N")
        await pilot.hover(KeyBar, offset=(start + 1, 0))
        assert bar.hovered == "N"
        await pilot.click(KeyBar, offset=(start + 1, 0))
        await wait_until(pilot, lambda: isinstance(app.screen, NewRunScreen), message="the form, from a click on the key bar")
        await pilot.press("escape")
        await pilot.press("N")
        assert isinstance(app.screen, NewRunScreen)


async def test_a_keymap_with_mistakes_starts_the_app_with_warnings_and_the_rest_applies(seeded):
    (seeded.home / "keymap.json").write_text('{"new-run": "N", "nwe-sweep": "G", "compare": "q", "export": "\\u001b]0;KEYPWN\\u0007"}')
    app = make_app(seeded)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: runs_table(app).row_count == 9)
        messages = [n.message for n in app._notifications]
        assert any("unknown binding id 'nwe-sweep'" in m for m in messages)
        assert any("'q' for 'compare' is already the key of 'quit'" in m for m in messages)
        assert any("the key for 'export' must be a key name" in m for m in messages), messages
        keys = [key for key, *_ in app.screen.query_one(KeyBar).shown()[0]]
        assert "N" in keys and "c" in keys and "n" not in keys and "e" in keys, keys
        await pilot.press("question_mark")
        help_text = app.screen.query_one(Markdown).source
        assert "| N | new run | `new-run` |" in help_text and "| c | compare marked runs | `compare` |" in help_text


async def test_a_user_error_in_the_app_is_a_notification_naming_its_cause(seeded):
    from engine.device import resolve_device

    app = make_app(seeded)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: runs_table(app).row_count == 9)
        app.run_task("evaluate", lambda: resolve_device("cuda:99"))
        await wait_until(pilot, lambda: any("'cuda:99' asked for" in n.message for n in app._notifications), message="the cause")
        notification = next(n for n in app._notifications if "'cuda:99' asked for" in n.message)
        assert notification.title == "evaluate" and "Traceback" not in notification.message
        assert isinstance(app.screen, RunsScreen), "the app goes on"


async def test_an_open_run_deleted_elsewhere_closes_with_a_warning(seeded):
    app = make_app(seeded)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_run_screen(app, pilot, 9)
        Database(seeded.db_url).delete_run(9)  # as another process would
        await wait_until(pilot, lambda: isinstance(app.screen, RunsScreen), message="back on the runs")
        # The notification is a message of its own: it may land just after the screen is popped.
        await wait_until(pilot, lambda: any("run 9 was deleted" in n.message for n in app._notifications), message="the warning")
        await wait_until(pilot, lambda: "9" not in [key.value for key in runs_table(app).rows], timeout=15, message="gone from the table")


async def test_the_run_head_grows_for_an_error_line(seeded):
    app = make_app(seeded)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_run_screen(app, pilot, 7)
        head = app.screen.query_one("#detail-head", Static)
        await pilot.pause(0.3)
        before = head.size.height

        def bar() -> str:
            return str(app.screen.query_one(KeyBar).render())

        assert "x Cancel" in bar(), bar()
        assert states.finish(Database(seeded.db_url), 7, "failed", error="CUDA out of memory: try a smaller batch_size\ntraceback…")
        await wait_until(pilot, lambda: "failed" in str(head.render()), message="the new status")
        await wait_until(pilot, lambda: "Cancel" not in bar(), message="x Cancel gone with the run's end")
        await pilot.pause(0.2)
        assert "CUDA out of memory: try a smaller batch_size" in str(head.render()) and "traceback" not in str(head.render())
        assert head.size.height == before + 1, "laid out again for the error line"


async def test_charts_fit_their_points_to_their_width_after_a_resize(seeded):
    app = make_app(seeded)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_run_screen(app, pilot, 1)
        chart = app.screen.query_one("#chart-steps", MetricChart)
        await wait_until(pilot, lambda: chart._plotted_width == chart.size.width - 10, message="drawn at its width")
        wide = chart._plotted_width
        assert len(app.screen.steps) == 1250 > wide, "more steps than columns: the chart draws bucket means"
        await pilot.resize_terminal(80, 24)
        await wait_until(pilot, lambda: chart._plotted_width == chart.size.width - 10, message="drawn again at the new width")
        assert chart._plotted_width < wide


async def test_enter_pressed_twice_opens_the_run_once(seeded):
    app = make_app(seeded)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: runs_table(app).row_count == 9)
        app.open_run(9)
        app.open_run(9)  # a second enter before the run's data is read
        await wait_until(pilot, lambda: isinstance(app.screen, RunDetailScreen), message="the run's screen")
        await pilot.pause(0.3)
        assert sum(isinstance(screen, RunDetailScreen) for screen in app.screen_stack) == 1
        await pilot.press("escape")
        assert isinstance(app.screen, RunsScreen)


async def test_a_long_watch_keeps_the_step_points_bounded(seeded):
    from leuktui.screens.run_detail import MAX_STEPS_KEPT

    app = make_app(seeded)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_run_screen(app, pilot, 7)
        writer = Database(seeded.db_url)
        writer.add_steps(7, [(s, "train_loss", 1.0) for s in range(1, 101)])
        await wait_until(pilot, lambda: len(app.screen.steps) == 100, message="the first steps, one by one")
        writer.add_steps(7, [(s, "train_loss", 0.5) for s in range(101, MAX_STEPS_KEPT + 1001)])
        await wait_until(pilot, lambda: app.screen.steps[-1][0] == MAX_STEPS_KEPT + 1000, message="the newest step")
        steps = app.screen.steps
        assert len(steps) <= MAX_STEPS_KEPT // 4 + 1, "folded into bucket means"
        assert [s for s, _ in steps] == sorted(s for s, _ in steps) and steps[0][1] == 1.0 and steps[-1][1] == 0.5


async def test_the_ablation_screen_shows_the_clis_replicate_cells_and_verdict(tmp_path):
    import json

    import numpy as np
    from test_results import N, record_run, right_on

    from conftest import cli
    from db import Workspace

    workspace = Workspace(tmp_path / "home").ensure()
    db = Database(workspace.db_url)
    ids = [record_run(db, curve=[0.6, count / N], right=right_on(count, seed), hist_eq=hist_eq, seed=seed)
           for hist_eq, counts in ((False, (90, 92, 91)), (True, (80, 78, 81))) for seed, count in enumerate(counts)]
    expected = json.loads(cli("ablation", "--cols", "hist_eq", "--json", home=workspace.home).stdout)["tables"][0]
    app = make_app(workspace)
    async with app.run_test(size=(160, 40)) as pilot:
        await wait_until(pilot, lambda: runs_table(app).row_count == 6)
        app.push_screen(AblationScreen(ids))
        await wait_until(pilot, lambda: app.screen.pivot is not None, message="the first table")
        from textual.widgets import Select

        app.screen.query_one("#ablation-columns", Select).value = "hist_eq"
        await wait_until(pilot, lambda: app.screen.pivot.column_factor == "hist_eq", message="the hist_eq table")
        pivot = app.screen.pivot
        assert pivot.to_dict()["cells"] == expected["cells"] and pivot.to_dict()["verdicts"] == expected["verdicts"]
        shown = app.screen.query_one("#ablation-table", DataTable).get_row_at(0)
        assert [str(cell) for cell in shown[1:]] == [pivot.cell_text("resnet18", False), pivot.cell_text("resnet18", True),
                                                     pivot.verdict_text("resnet18")]
        assert str(shown[1]).startswith("91.00% ± 1.00 (n=3)") and "best (p = " in str(shown[-1])
        assert np.isclose(pivot.value("resnet18", True), np.mean([0.80, 0.78, 0.81]))
    db.close()


async def test_a_retry_and_stopping_a_running_run_ask_first(seeded):
    from leuktui.screens.dialogs import ConfirmScreen

    app = make_app(seeded)
    db = Database(seeded.db_url)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: runs_table(app).row_count == 9)
        select_run(app, 1)  # completed: R is a retry
        await pilot.press("R")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("escape")
        await pilot.pause(0.3)
        assert len(db.run_ids()) == 9, "nothing queued without a yes"
        await pilot.press("R", "y")
        await wait_until(pilot, lambda: len(db.run_ids()) == 10, message="retried")
        select_run(app, 7)  # running: x asks, in the run screen too
        await pilot.press("x")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("escape")
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, RunDetailScreen) and app.screen.run is not None, message="run 7")
        await pilot.press("x")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("escape")
        await pilot.pause(0.3)
        assert db.get_run(7).cancel_requested_at is None and db.get_run(7).status == "running"
        await pilot.press("x", "y")
        await wait_until(pilot, lambda: db.get_run(7).cancel_requested_at is not None, message="cancel asked for")
    db.close()


async def test_home_and_end_go_to_the_first_and_last_run(seeded):
    app = make_app(seeded)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: runs_table(app).row_count == 9)
        table = runs_table(app)
        table.move_cursor(row=4)
        await pilot.press("end")
        assert table.cursor_row == 8
        await pilot.press("home")
        assert table.cursor_row == 0


async def test_ages_go_on_while_nothing_changes(seeded, monkeypatch):
    from leuktui.app import LeuktuiApp
    from tui.conftest import fixed_devices
    from tui.seed import NOW

    monkeypatch.setattr(RunsScreen, "AGE_TICK_SECONDS", 0.2)
    now = [NOW]
    app = LeuktuiApp(seeded, start_scheduler=False, clock=lambda: now[0], poll_seconds=0.1, device_reader=fixed_devices)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: runs_table(app).row_count == 9)
        before = str(runs_table(app).get_cell("9", "age"))
        now[0] += 3 * 3600
        await wait_until(pilot, lambda: str(runs_table(app).get_cell("9", "age")) != before, message="the age moved on")
        assert str(runs_table(app).get_cell("9", "age")).endswith("h")


async def test_the_form_names_every_wrong_field_and_a_bad_factor_value(seeded):
    app = make_app(seeded)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: runs_table(app).row_count == 9)
        await pilot.press("g")
        form = app.screen
        await pilot.pause(0.1)
        form.query_one("#field-image_size", Input).value = "abc"
        form.query_one("#field-epochs", Input).value = "-2"
        await pilot.pause(0.1)
        assert form.query_one("#error-image_size", Static).display and form.query_one("#error-epochs", Static).display
        summary = str(form.query_one("#form-summary", Static).render())
        assert "2 fields" in summary and "image_size" in summary and "epochs" in summary
        form.query_one("#field-image_size", Input).value = "64"
        form.query_one("#field-epochs", Input).value = "3"
        form.query_one("#meta-factors", Input).value = "lr=1e-3,bogus"
        await pilot.pause(0.1)
        summary = str(form.query_one("#form-summary", Static).render())
        assert "fix the factors" in summary and "lr" in summary and "bogus" in summary
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: any("bogus" in n.message for n in app._notifications), message="named on submit")


def test_a_rate_and_an_eta_show_before_the_first_epoch_ends(seeded):
    from leuktui.screens.run_detail import early_rate, eta_text

    db = Database(seeded.db_url)
    run = db.get_run(7)  # running, 10 epochs, batch 32
    db.update_run(7, phase="epoch 1/10 step 10/40", started_at=1000.0)
    run = db.get_run(7)
    images_per_s, left = early_rate(run, now=1020.0)
    assert images_per_s == 10 * 32 / 20 and left == (400 - 10) * 2.0
    assert eta_text(run, [], now=1020.0) == "13m00s"
    db.update_run(7, phase="epoch 1/10 step 2/40")
    assert early_rate(db.get_run(7), now=1020.0) is None and eta_text(db.get_run(7), [], now=1020.0) == "-"  # too few steps yet
    db.close()


async def test_at_80_columns_the_best_metric_and_help_are_on_screen(seeded):
    app = make_app(seeded)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: runs_table(app).row_count == 9)
        await pilot.pause(0.2)
        table = runs_table(app)
        keys = [column.key.value for column in table.ordered_columns]
        left = sum(column.get_render_width(table) for column in table.ordered_columns[: keys.index("acc") + 1])
        assert left <= 80, f"the best acc column ends at column {left}"
        bar = str(app.screen.query_one(KeyBar).render())
        assert "? Help" in bar and "q Quit" in bar and bar.index("? Help") > bar.index("New run")
        # The keys a lab needs first: a new run, marks, and what marks are for.
        assert bar.index("n New run") < bar.index("space Mark") < bar.index("c Compare") < bar.index("a Ablation"), bar

        # On a run, each tab's own keys show on that tab (and open it from any other).
        select_run(app, 1)
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, RunDetailScreen) and app.screen.epochs, message="run 1")

        def bar() -> str:
            return str(app.screen.query_one(KeyBar).render())

        assert "m Chart" in bar() and "Prev" not in bar() and "FN/FP" not in bar(), bar()
        assert "e Export" in bar() and "v Eval 5/10-crop" in bar(), bar()
        assert app.runs[1].status == "completed" and "Cancel" not in bar(), "a finished run has nothing to cancel"
        await pilot.press("2")
        await wait_until(pilot, lambda: "[ Prev" in bar(), message="the confusion tab's keys")
        assert "] Next" in bar() and "m Chart" not in bar() and "e Export" in bar(), bar()
        chart = app.screen.query_one("#chart-acc", MetricChart)
        shown = chart.title
        await pilot.press("m")  # from the confusion tab: the charts, as they were
        await wait_until(pilot, lambda: app.screen.query_one("#detail-tabs").active == "tab-charts", message="the charts tab")
        await pilot.pause(0.3)
        assert chart.title == shown, "m from another tab opens the charts; it does not skip a metric"
        await wait_until(pilot, lambda: "m Chart" in bar() and "Prev" not in bar(), message="the charts tab's keys")
        await pilot.press("6")
        await wait_until(pilot, lambda: "f FN/FP" in bar() and "z Larger" in bar(), message="the mistakes tab's keys")
        assert "? Help" in bar() and "q Quit" in bar()

        # ? opens the help at the keys of the screen it was pressed on.
        await pilot.press("question_mark")
        await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen), message="the help")
        await wait_until(pilot, lambda: app.screen.query_one(Markdown).table_of_contents, message="the help's headings")
        heading = app.screen.query_one("#" + next(i for _, title, i in app.screen.query_one(Markdown).table_of_contents if title == "Run detail"))
        scroller = app.screen.query_one(VerticalScroll)
        await wait_until(pilot, lambda: scroller.scroll_y > 0 and scroller.region.y <= heading.region.y <= scroller.region.y + 3,
                         message="the Run detail keys at the top")


async def test_an_unticked_box_is_empty_and_a_ticked_one_shows_its_x(seeded):
    from textual.widgets import Checkbox

    app = make_app(seeded)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: runs_table(app).row_count == 9)
        await pilot.press("n")
        await pilot.pause(0.2)
        off = app.screen.query_one("#field-hist_eq", Checkbox)
        on = app.screen.query_one("#field-hflip", Checkbox)
        assert not off.value and on.value
        off_style = off.get_component_rich_style("toggle--button")
        on_style = on.get_component_rich_style("toggle--button")
        assert off_style.color == off_style.bgcolor, "the X of an unticked box is not drawn"
        assert on_style.color != on_style.bgcolor and on_style.bold


async def test_m_charts_another_metric_per_epoch_on_the_run_and_compare_screens(seeded):
    from leuktui.widgets.charts import MetricChart, charted, integer_ticks

    app = make_app(seeded)
    db = Database(seeded.db_url)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: runs_table(app).row_count == 9)
        select_run(app, 1)
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, RunDetailScreen) and app.screen.epochs, message="run 1")
        chart = app.screen.query_one("#chart-acc", MetricChart)
        assert chart.title == "accuracy per epoch"
        await pilot.press("m")
        await wait_until(pilot, lambda: chart.title == "weighted F1 per epoch", message="F1")
        assert chart._series == [("val", [1, 2, 3, 4, 5], [e.f1 for e in db.epochs(1)])]
        for _ in range(len(charted()) - 2):
            await pilot.press("m")
        await wait_until(pilot, lambda: chart.title == "learning rate per epoch", message="the learning rate")
        await pilot.press("escape")
        select_run(app, 2)
        await pilot.press("space", "space", "c")
        await wait_until(pilot, lambda: isinstance(app.screen, CompareScreen) and app.screen.loaded is not None, message="compare")
        overlay = app.screen.query_one("#compare-acc", MetricChart)
        await pilot.press("m", "m")
        await wait_until(pilot, lambda: overlay.title == "validation ROC AUC", message="AUC overlaid")
        assert [label for label, _, _ in overlay._series] == ["1 resnet18", "2 resnet18-histeq"] and overlay.markers
    db.close()
    assert integer_ticks([1, 2, 3, 4, 5]) == [1, 2, 3, 4, 5] and integer_ticks(range(1, 51)) == [1, 8, 15, 22, 29, 36, 43, 50]


async def test_the_tags_dialog_shows_tags_as_text_and_an_unedited_save_keeps_them(seeded):
    from leuktui.screens.dialogs import TagsScreen

    db = Database(seeded.db_url)
    odd = ["a\x1b[31mred", "x,y", "[b]bold[/b]"]  # what an older version, or another program, may have stored
    odd_notes = "first line\nhi\x1b]0;PWNED\x07 there\x1b[5;5HXYZ \u202e"
    db.update_run(9, tags=odd, notes=odd_notes)
    app = make_app(seeded)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: runs_table(app).row_count == 9)
        select_run(app, 9)
        await pilot.press("t")
        await wait_until(pilot, lambda: isinstance(app.screen, TagsScreen), message="the tags dialog")
        field = app.screen.query_one("#tags-input", Input)
        assert field.value == "a\\x1b[31mred, x,y, [b]bold[/b]" and "\x1b" not in field.value
        notes = app.screen.query_one("#notes-input").text
        assert notes == "first line\nhi\\x1b]0;PWNED\\x07 there\\x1b[5;5HXYZ \\u202e", notes  # lines kept, escapes as text
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: not isinstance(app.screen, TagsScreen), message="saved")
        await wait_until(pilot, lambda: any("tags and notes saved" in n.message for n in app._notifications), message=f"the save {[(n.title, n.message) for n in app._notifications]}")
        saved = Database(seeded.db_url).get_run(9)
        assert (saved.tags, saved.notes) == (odd, odd_notes), "an unedited save changes nothing"
        await pilot.press("t")
        await wait_until(pilot, lambda: isinstance(app.screen, TagsScreen), message="the tags dialog again")
        app.screen.query_one("#notes-input").text = "typed\x1b[2J"
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: any("notes: line 1 has a control character ('\\x1b')" in f"{n.title}: {n.message}"
                                            for n in app._notifications), message="the refusal")
        assert isinstance(app.screen, TagsScreen) and Database(seeded.db_url).get_run(9).notes == odd_notes
        await pilot.press("escape")
        await pilot.press("t")
        await wait_until(pilot, lambda: isinstance(app.screen, TagsScreen), message="the tags dialog again")
        app.screen.query_one("#tags-input", Input).value = "alpha, beta, alpha,, "
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: Database(seeded.db_url).get_run(9).tags == ["alpha", "beta"], message="edited tags, each once")
    db.close()


async def test_a_sweeps_long_names_stay_told_apart_and_the_filter_leads_the_status_line(tmp_path):
    from db import Workspace

    workspace = Workspace(tmp_path / "home").ensure()
    db = Database(workspace.db_url)
    names = [f"resnet18-128px{'-histeq' if hist_eq else ''}-lr={lr}-seed={seed}-{index:06x}"
             for index, (hist_eq, lr, seed) in enumerate((h, lr, s) for h in (True, False) for lr in ("0.001", "0.0001") for s in (0, 1))]
    for name in names:
        db.create_run(config={"epochs": 3, "eval_mode": "single"}, config_hash=name, model="resnet18", name=name, tags=["sweep"])
    db.create_run(config={"epochs": 3, "eval_mode": "single"}, config_hash="demo", model="resnet18", name="demo")
    db.close()

    def shown_names(app) -> list[str]:
        table = runs_table(app)
        return [str(table.get_cell(key, "name")) for key in table.rows]

    app = make_app(workspace)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: runs_table(app).row_count == 9, message="nine runs")
        shown = shown_names(app)
        assert "demo" in shown and len(set(shown)) == 9, shown
        assert all(len(name) <= 28 for name in shown), shown
        assert "…lr=0.0001-seed=1-000007" in shown, "the words the sweep's runs all begin with are left out"
        await pilot.press("slash")
        app.screen.query_one("#filter", Input).value = "[bold] tag=sweep"
        await pilot.press("enter")
        status = str(app.screen.query_one("#runs-status", Static).render())
        assert status.startswith("0 of 9 runs · filter: [bold] tag=sweep · "), status
    app = make_app(workspace)
    async with app.run_test(size=(140, 30)) as pilot:
        await wait_until(pilot, lambda: runs_table(app).row_count == 9, message="nine runs")
        assert sorted(shown_names(app)) == sorted([*names, "demo"]), "a wide terminal shows the names whole"


async def test_the_form_queues_a_completed_config_again_only_when_again_is_ticked(tmp_path, tiny_data):
    from textual.widgets import Checkbox

    from conftest import tiny_config
    from db import Workspace
    from runner.control import create_run

    workspace = Workspace(tmp_path / "home").ensure()
    db = Database(workspace.db_url)
    done = create_run(db, tiny_config(tiny_data, epochs=1), status="completed")
    app = make_app(workspace)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: runs_table(app).row_count == 1, message="the run")
        await pilot.press("n")  # the form, on the run's config
        await wait_until(pilot, lambda: isinstance(app.screen, NewRunScreen), message="the form")
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: any("tick “again” in the form" in n.message for n in app._notifications), message="the refusal")
        assert len(db.list_runs()) == 1 and isinstance(app.screen, NewRunScreen)
        assert not any("--force" in n.message for n in app._notifications), "the form's words, not the command line's"
        app.screen.query_one("#meta-again", Checkbox).value = True
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: len(db.list_runs()) == 2, message="queued again")
    assert db.list_runs()[0].config_hash == done.config_hash
    db.close()
