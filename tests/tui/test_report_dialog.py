"""The report dialog (r) on the Runs, Compare and Ablation screens, and the export dialog with
several marked runs (an ensemble)."""

from __future__ import annotations

from textual.widgets import Input, Static

from leuktui.screens.ablation import AblationScreen
from leuktui.screens.compare import CompareScreen
from leuktui.screens.export import ExportScreen
from leuktui.screens.report_dialog import ReportScreen
from leuktui.widgets.keybar import KeyBar
from tui.conftest import make_app, select_run, wait_until


async def mark(app, pilot, *run_ids: int) -> None:
    for run_id in run_ids:
        select_run(app, run_id)
        await pilot.press("space")


async def test_r_builds_a_report_on_the_marked_runs_and_names_the_folder(seeded, tmp_path):
    app = make_app(seeded)
    folder = tmp_path / "lab3"
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: app.screen.query_one("#runs").row_count == 9, message="nine runs")
        await mark(app, pilot, 1, 3)
        await pilot.press("r")
        await wait_until(pilot, lambda: isinstance(app.screen, ReportScreen), message="the report dialog")
        dialog = app.screen
        assert dialog.run_ids == [1, 3] and dialog.named
        listed = str(dialog.query_one("#report-runs", Static).render()).splitlines()
        assert len(listed) == 2 and listed[0].split()[0] == "1" and listed[1].split()[0] == "3", listed  # a run a line
        assert "resnet50" in " ".join(listed)
        dialog.query_one("#report-output", Input).value = str(folder)
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: any(str(folder) in n.message for n in app._notifications), timeout=60, message="the notification")
        assert (folder / "report.html").is_file() and (folder / "figures" / "confusion-run-3.png").is_file()
        assert any(n.message == f"report on 2 runs written to {folder}" for n in app._notifications)


async def test_r_reports_the_filtered_runs_and_says_why_it_cannot(seeded, tmp_path):
    app = make_app(seeded)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: app.screen.query_one("#runs").row_count == 9, message="nine runs")
        await pilot.press("slash")
        app.screen.query_one("#filter", Input).value = "status=queued"
        await pilot.press("enter")
        await pilot.press("r")
        await wait_until(pilot, lambda: isinstance(app.screen, ReportScreen), message="the report dialog")
        assert app.screen.run_ids == [8] and not app.screen.named
        app.screen.query_one("#report-output", Input).value = str(tmp_path / "nothing")
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: any("none of these runs has recorded epochs yet" in n.message for n in app._notifications),
                         message="the error")
        assert not (tmp_path / "nothing").exists()


async def test_r_on_compare_and_ablation(seeded):
    app = make_app(seeded)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: app.screen.query_one("#runs").row_count == 9, message="nine runs")
        await mark(app, pilot, 2, 4)
        await pilot.press("c")
        await wait_until(pilot, lambda: isinstance(app.screen, CompareScreen), message="compare")
        await pilot.press("r")
        await wait_until(pilot, lambda: isinstance(app.screen, ReportScreen), message="the report dialog")
        assert app.screen.run_ids == [2, 4]
        await pilot.press("escape", "escape")
        await pilot.press("a")
        await wait_until(pilot, lambda: isinstance(app.screen, AblationScreen), message="ablation")
        await pilot.press("r")
        await wait_until(pilot, lambda: isinstance(app.screen, ReportScreen), message="the report dialog")
        assert app.screen.run_ids == [2, 4]


async def test_export_with_several_marked_runs_is_an_ensemble(seeded):
    from db import Database

    db = Database(seeded.db_url)  # run 3's own test CSV has a name that would be markup
    db.update_run(3, config={**db.get_run(3).config, "test_csv": "/data/lab3/[red]odd.csv"})
    db.close()
    app = make_app(seeded)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: app.screen.query_one("#runs").row_count == 9, message="nine runs")
        await mark(app, pilot, 1, 3)
        await pilot.press("e")
        await wait_until(pilot, lambda: isinstance(app.screen, ExportScreen), message="the export dialog")
        assert [run.id for run in app.screen.runs] == [1, 3]
        assert "ensemble of runs 1, 3" in str(app.screen.query_one(".dialog-title", Static).render())
        bar = app.screen.query_one(KeyBar)  # the dialog's keys on the bottom line, not the Runs screen's
        assert str(bar.render()).split() == ["esc", "Close", "^s", "Export"] and bar.region.y == app.size.height - 1
        assert app.screen.query_one("#export-output", Input).value.endswith("exports/ensemble-1-3-single.csv")
        # A ResNet18 and a ResNet50 predict different test CSVs: nothing is chosen for the user.
        choose = "these runs predict different test CSVs (run 1: resnet_18_test.csv, run 3: [red]odd.csv): type the one to use"
        field = app.screen.query_one("#export-csv", Input)
        assert field.value == "" and str(app.screen.query_one("#export-result", Static).render()) == choose
        await pilot.press("ctrl+s")
        await pilot.pause(0.3)
        assert not app.screen.query_one("#export-progress").display and not app._notifications, "no job started"
        assert app.screen.focused is field and str(app.screen.query_one("#export-result", Static).render()) == choose
        field.value = "/data/lab3/resnet_50_test.csv"
        await pilot.press("ctrl+s")
        # The seeded runs have no checkpoints: the error names the first run, in one line.
        await wait_until(pilot, lambda: any("run 1: no best checkpoint" in n.message for n in app._notifications), timeout=60,
                         message="the error (the job imports torch first)")
        await pilot.press("escape")
        await mark(app, pilot, 1, 3, 2)  # unmarks 1 and 3; marks 2
        select_run(app, 1)
        await pilot.press("space", "e")  # 1 and 2: two ResNet18s, one test CSV, filled in
        await wait_until(pilot, lambda: isinstance(app.screen, ExportScreen), message="the export dialog")
        assert [run.id for run in app.screen.runs] == [1, 2]
        assert app.screen.query_one("#export-csv", Input).value == "/data/lab3/resnet_18_test.csv"
        assert str(app.screen.query_one("#export-result", Static).render()) == ""


async def test_marks_made_in_the_app_are_what_a_plain_leuktui_report_reports_on(seeded, tmp_path):
    import json

    from conftest import cli

    app = make_app(seeded)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: app.screen.query_one("#runs").row_count == 9)
        select_run(app, 5)
        await pilot.press("space", "space")  # marks 5, then 4
        await wait_until(pilot, lambda: seeded.marked_runs() == [4, 5], message="marks kept in the workspace")
    out = json.loads(cli("report", "-o", str(tmp_path / "r"), "--json", home=seeded.home).stdout)
    assert out["runs"] == [4, 5]
    again = make_app(seeded)
    async with again.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: again.loaded and again.screen.query_one("#runs").row_count == 9)
        assert again.screen.marked == {4, 5} and "2 marked" in str(again.screen.query_one("#runs-status").render())
        select_run(again, 4)
        await pilot.press("space")
        await wait_until(pilot, lambda: seeded.marked_runs() == [5], message="unmarked")
        select_run(again, 2)
        await pilot.press("space")
        await wait_until(pilot, lambda: seeded.marked_runs() == [2, 5], message="marked")
        await pilot.press("u")  # every mark at once
        await wait_until(pilot, lambda: seeded.marked_runs() == [], message="every mark gone")
        table = again.screen.query_one("#runs")
        assert not again.screen.marked and "marked" not in str(again.screen.query_one("#runs-status").render())
        assert all(str(table.get_cell(str(run_id), "mark")).strip() == "" for run_id in (2, 5))
        assert any(n.message == "unmarked 2 runs" for n in again._notifications)
    out = json.loads(cli("report", "-o", str(tmp_path / "r2"), "--json", home=seeded.home).stdout)
    assert out["runs"] == [1, 4, 5], "nothing marked: the best run of each model"


async def test_the_report_dialog_names_the_runs_the_report_will_have(seeded, tmp_path):
    app = make_app(seeded)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: app.screen.query_one("#runs").row_count == 9, message="nine runs")
        await pilot.press("r")  # nothing marked: the runs shown, and run 8 (queued) has no epochs
        await wait_until(pilot, lambda: isinstance(app.screen, ReportScreen), message="the report dialog")
        title = str(app.screen.query_one(".dialog-title", Static).render())
        listed = str(app.screen.query_one("#report-runs", Static).render())
        assert title == "Report on 8 runs (1 without epochs left out: 8)"
        assert "   8  resnet50-centercrop" not in listed and "   9  resnet152-big" in listed
        app.screen.query_one("#report-output", Input).value = str(tmp_path / "r")
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: any("report on 8 runs written" in n.message for n in app._notifications), message="built",
                         timeout=60)


async def test_r_on_a_run_with_final_fits_reports_them_too(seeded, tmp_path):
    from db import Database

    db = Database(seeded.db_url)
    source = db.get_run(3)
    fit = db.create_run(config={**source.config, "fit_on": "train+valid", "seed": 5}, config_hash="fit", model=source.model,
                        name="final", tags=["final"], parent_id=3, status="completed")
    db.add_epoch(fit.id, 1, 10, {"train_loss": 0.4, "train_acc": 0.85})
    db.close()
    folder = tmp_path / "with-fits"
    app = make_app(seeded)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: app.screen.query_one("#runs").row_count == 10, message="ten runs")
        await mark(app, pilot, 3)
        await pilot.press("r")
        await wait_until(pilot, lambda: isinstance(app.screen, ReportScreen), message="the report dialog")
        title = str(app.screen.query_one(".dialog-title", Static).render())
        assert title == f"Report on 1 run and the 1 final fit made from it ({fit.id})", title
        app.screen.query_one("#report-output", Input).value = str(folder)
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: any(str(folder) in n.message for n in app._notifications), timeout=60, message="the notification")
    assert "## Final fits" in (folder / "report.md").read_text()
