"""The Runs screen (home): every run, live, with filter, sort, marks and every action."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import DataTable, Header, Input, Static

from db.models import Run
from db.vocabulary import CANCELLED, COMPLETED, FAILED, INTERRUPTED, QUEUED, RUNNING
from leuktui.actions import bindings
from leuktui.cells import cell_width, plain, progress_cell, status_cell
from leuktui.formatting import NAME_WIDTH, age, best_accuracy_text, number, shared_start, short_name
from leuktui.query import FilterError, matcher
from leuktui.widgets.keybar import KeyBar

# What matters first, so that at 80 columns the name, the status and the best metric are on screen.
COLUMNS = (("mark", " "), ("id", "id"), ("name", "name"), ("status", "status"), ("acc", "best acc"), ("progress", "epoch"),
           ("model", "model"), ("f1", "val F1"), ("eval", "eval"), ("tags", "tags"), ("age", "age"))
SORTS = (
    ("newest", lambda run: -run.id),
    ("best acc", lambda run: -(run.best_val_acc or -1)),
    ("val F1", lambda run: -(run.best_val_f1 or -1)),
    ("status", lambda run: (run.status, -run.id)),
    ("model", lambda run: (run.model, -run.id)),
)
# The table holds the first rows of the sorted, filtered runs; filter or sort to reach the rest.
# (A DataTable row costs about a millisecond to add; ten thousand would take seconds.)
TABLE_LIMIT = 250
class RunsTable(DataTable):
    """The runs, where ``Home`` and ``End`` go to the first and the last run (a table's default
    scrolls sideways, which moved the cursor nowhere a user could see)."""

    def action_scroll_home(self) -> None:
        if self.row_count:
            self.move_cursor(row=0)

    def action_scroll_end(self) -> None:
        if self.row_count:
            self.move_cursor(row=self.row_count - 1)


def name_width(columns: int) -> int:
    """The names' column: 28 characters on an 80-column terminal, more on a wider one."""
    return min(64, NAME_WIDTH + max(0, columns - 80) // 2)


class RunsScreen(Screen):
    AGE_TICK_SECONDS = 15.0
    BINDINGS = bindings("runs")

    def __init__(self) -> None:
        super().__init__()
        self.marked: set[int] = set()
        self.sort_index = 0
        self.filter_text = ""
        self.matching = 0
        self.shown_keys: dict[int, object] = {}  # the sort key of each row as drawn
        self.name_width = NAME_WIDTH  # wider on a wider terminal
        self.shared = ""  # what the long names shown all begin with, left out of them (formatting.shared_start)

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="filter-bar"):
            yield Input(placeholder="filter: text, model=resnet50 status=completed acc>0.95 … (enter to apply, esc to clear)", id="filter")
        yield RunsTable(id="runs", cursor_type="row", zebra_stripes=True)
        yield Static("", id="runs-status")
        yield KeyBar()

    def on_mount(self) -> None:
        self.marked = set(self.app.workspace.marked_runs())  # marks live on between sessions, shown in the status line
        table = self.query_one("#runs", DataTable)
        for key, label in COLUMNS:
            table.add_column(label, key=key)
        self.query_one("#filter-bar").display = False
        self.refresh_table()
        table.focus()
        self.set_interval(self.AGE_TICK_SECONDS, self.tick_ages)

    def on_resize(self) -> None:
        if name_width(self.app.size.width) != self.name_width and self.app.loaded:
            self.refresh_table()

    def tick_ages(self) -> None:
        """Ages go on: a row that has not changed still gets older."""
        table = self.query_one("#runs", DataTable)
        clock = self.app.clock()
        for key in list(table.rows):
            run = self.app.runs.get(int(key.value))
            if run is not None:
                table.update_cell(key, "age", age(run.created_at, clock))

    # -- data ----------------------------------------------------------------------------------

    def runs_updated(self, message) -> None:
        """Update changed rows in place; rebuild only when the set or order of rows changes."""
        table = self.query_one("#runs", DataTable)
        if message.initial or message.removed or not table.row_count:
            self.refresh_table()
            return
        keep = self._matcher()
        sort_key = SORTS[self.sort_index][1]
        for run in message.changed:
            key = str(run.id)
            shown = key in table.rows
            if shown != keep(run) or (shown and sort_key(run) != self.shown_keys.get(run.id)):
                if not shown and not self._would_show(sort_key(run)):
                    continue  # a match that sorts below the rows the table holds
                self.refresh_table()
                return
            if shown:
                for column, value in zip((c for c, _ in COLUMNS), self.row_cells(run), strict=True):
                    table.update_cell(key, column, value, update_width=True)
        self._update_status()

    def _would_show(self, key) -> bool:
        return len(self.shown_keys) < TABLE_LIMIT or key < max(self.shown_keys.values())

    def _matcher(self):
        try:
            return matcher(self.filter_text)
        except FilterError:
            return lambda run: True

    def row_cells(self, run: Run) -> list:
        clock = self.app.clock()
        return [
            Text("●", style="bold yellow") if run.id in self.marked else Text(" "),
            str(run.id), plain(short_name(run.name, self.name_width, shared=self.shared)), status_cell(run), best_accuracy_text(run), progress_cell(run),
            plain(run.model.split(":")[-1]), number(run.best_val_f1), plain(run.config.get("eval_mode", "-")),
            plain(",".join(run.tags)), age(run.created_at, clock),
        ]

    def visible_runs(self) -> list[Run]:
        keep = self._matcher()
        runs = [run for run in self.app.runs.values() if keep(run)]
        return sorted(runs, key=SORTS[self.sort_index][1])

    def refresh_table(self) -> None:
        table = self.query_one("#runs", DataTable)
        current = self.current_run_id()
        table.clear()
        runs = self.visible_runs()
        self.matching = len(runs)
        sort_key = SORTS[self.sort_index][1]
        self.shown_keys = {run.id: sort_key(run) for run in runs[:TABLE_LIMIT]}
        self.name_width = name_width(self.app.size.width)
        self.shared = shared_start((run.name for run in runs[:TABLE_LIMIT]), self.name_width)
        rows = [self.row_cells(run) for run in runs[:TABLE_LIMIT]]
        for run, cells in zip(runs[:TABLE_LIMIT], rows, strict=True):
            table.add_row(*cells, key=str(run.id))
        # The table would measure these rows only when it next goes idle, which a table filled
        # from a background read did not always reach before the next key: columns stayed as
        # narrow as their labels. Measured here, as the table itself would (cells.refill).
        for column, cells in zip(table.ordered_columns, zip(*rows, strict=True), strict=False):
            column.content_width = max(column.content_width, *map(cell_width, cells))
        table.refresh(layout=True)
        if current is not None and str(current) in table.rows:
            table.move_cursor(row=table.get_row_index(str(current)))
        self._update_status()

    def _update_status(self) -> None:
        table = self.query_one("#runs", DataTable)
        total = len(self.app.runs)
        running = sum(1 for run in self.app.runs.values() if run.status == RUNNING)
        queued = sum(1 for run in self.app.runs.values() if run.status == QUEUED)
        shown = f"{table.row_count} of {total} runs"
        if self.matching > table.row_count:
            shown = f"first {table.row_count} of {self.matching} matching ({total} in all; filter or sort for others)"
        # What the user set first (the filter, the marks): on a narrow terminal the line's end is cut.
        parts = [shown, *([f"filter: {self.filter_text}"] if self.filter_text else []),
                 *([f"{len(self.marked)} marked"] if self.marked else []),
                 f"{running} running", f"{queued} queued", f"sort: {SORTS[self.sort_index][0]}"]
        if not self.app.loaded:
            parts = ["loading runs…"]
        elif not total:
            parts = ["no runs yet — press n to queue one"]
        self.query_one("#runs-status", Static).update(plain(" · ".join(parts)))  # the filter is the user's text

    def current_run_id(self) -> int | None:
        table = self.query_one("#runs", DataTable)
        if not table.row_count:
            return None
        row_key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        return int(row_key.value)

    def current_run(self) -> Run | None:
        run_id = self.current_run_id()
        return self.app.runs.get(run_id) if run_id is not None else None

    def selected_runs(self) -> list[Run]:
        """The marked runs, else the one under the cursor."""
        if self.marked:
            return [self.app.runs[i] for i in sorted(self.marked) if i in self.app.runs]
        run = self.current_run()
        return [run] if run else []

    # -- filter and sort ---------------------------------------------------------------------

    def action_filter(self) -> None:
        self.query_one("#filter-bar").display = True
        # The input can take focus only once it is displayed, after the next refresh.
        self.call_after_refresh(self.query_one("#filter", Input).focus)

    @on(Input.Submitted, "#filter")
    def apply_filter(self, event: Input.Submitted) -> None:
        try:
            matcher(event.value)
        except FilterError as exc:
            self.notify(str(exc), title="filter", severity="error")
            return
        self.filter_text = event.value.strip()
        self.refresh_table()
        self.query_one("#runs", DataTable).focus()

    def action_clear_filter(self) -> None:
        self.filter_text = ""
        self.query_one("#filter", Input).value = ""
        self.query_one("#filter-bar").display = False
        self.refresh_table()
        self.query_one("#runs", DataTable).focus()

    def action_cycle_sort(self) -> None:
        self.sort_index = (self.sort_index + 1) % len(SORTS)
        self.refresh_table()

    def _save_marks(self) -> None:
        """Kept in the workspace, so `leuktui report` reports on what is marked here."""
        import json

        from engine.files import atomic_write

        # A few bytes, written here rather than in a thread: marks are saved in the order made.
        try:
            with atomic_write(self.app.workspace.marks_path, "w") as out:
                out.write(json.dumps(sorted(self.marked)))
        except OSError as exc:
            self.notify(f"marks not kept: {exc}", severity="warning")

    def action_toggle_mark(self) -> None:
        run_id = self.current_run_id()
        if run_id is None:
            return
        self.marked ^= {run_id}
        self._save_marks()
        table = self.query_one("#runs", DataTable)
        table.update_cell(str(run_id), "mark", Text("●", style="bold yellow") if run_id in self.marked else Text(" "))
        row = table.cursor_row
        if row + 1 < table.row_count:
            table.move_cursor(row=row + 1)
        self._update_status()

    def action_unmark_all(self) -> None:
        if not self.marked:
            return
        unmarked, self.marked = self.marked, set()
        self._save_marks()
        table = self.query_one("#runs", DataTable)
        for run_id in unmarked:
            if str(run_id) in table.rows:
                table.update_cell(str(run_id), "mark", Text(" "))
        self._update_status()
        self.notify(f"unmarked {len(unmarked)} run{'s' if len(unmarked) != 1 else ''}")

    # -- actions -------------------------------------------------------------------------------

    @on(DataTable.RowSelected, "#runs")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open_run()

    def action_open_run(self) -> None:
        run = self.current_run()
        if run:
            self.app.open_run(run.id)

    def action_new_run(self) -> None:
        from leuktui.screens.new_run import NewRunScreen

        self.app.push_screen(NewRunScreen(sweep=False, base=self.current_run()))

    def action_new_sweep(self) -> None:
        from leuktui.screens.new_run import NewRunScreen

        self.app.push_screen(NewRunScreen(sweep=True, base=self.current_run()))

    def action_compare(self) -> None:
        from leuktui.screens.compare import CompareScreen

        runs = self.selected_runs()
        if len(runs) < 2:
            self.notify("mark two or more runs with space, then press c", title="compare", severity="warning")
            return
        self.app.push_screen(CompareScreen([run.id for run in runs]))

    def action_ablation(self) -> None:
        from leuktui.screens.ablation import AblationScreen

        runs = self.selected_runs() if self.marked else []
        if not runs:
            current = self.current_run()
            if current and current.sweep_id:
                runs = [run for run in self.app.runs.values() if run.sweep_id == current.sweep_id]
            else:
                runs = self.visible_runs()
        self.app.push_screen(AblationScreen([run.id for run in runs]))

    def action_export(self) -> None:
        from leuktui.screens.export import ExportScreen

        runs = self.selected_runs()
        if runs:
            self.app.push_screen(ExportScreen(runs))

    def action_report(self) -> None:
        """A report on the marked runs, else on the runs the filter shows."""
        from leuktui.screens.report_dialog import ReportScreen

        runs = self.selected_runs() if self.marked else self.visible_runs()
        self.app.push_screen(ReportScreen([run.id for run in runs], named=bool(self.marked)))

    def action_cancel_run(self) -> None:
        """Cancel the selected runs: waiting ones at once, running ones after a yes (they
        checkpoint, then stop)."""
        from leuktui.screens.dialogs import ConfirmScreen
        from runner import control

        runs = self.selected_runs()

        def cancel() -> None:
            for run in runs:
                self.app.run_task("cancel", lambda run_id=run.id: (run_id, control.cancel(self.app.db, run_id)),
                                  done=lambda result: self.notify(f"run {result[0]} {result[1]}"))

        running = [run.id for run in runs if run.status == RUNNING]
        if running:
            self.app.push_screen(ConfirmScreen(f"Stop running run(s) {', '.join(map(str, running))}? They checkpoint, then stop."),
                                 lambda yes: yes and cancel())
        else:
            cancel()

    def action_resume_or_retry(self) -> None:
        """Resume what stopped at once; a retry (a new run of a finished one) is asked about first."""
        from leuktui.screens.dialogs import ConfirmScreen
        from runner import control

        runs = self.selected_runs()
        resumable = [run for run in runs if run.status in (INTERRUPTED, CANCELLED, FAILED)]
        retries = [run for run in runs if run not in resumable]
        for run in resumable:
            self.app.run_task("resume", lambda run_id=run.id: control.resume(self.app.db, run_id),
                              done=lambda _result, run_id=run.id: self._after_queue(run_id, "queued to resume"))

        def retry() -> None:
            for run in retries:
                self.app.run_task("retry", lambda run_id=run.id: control.retry(self.app.db, run_id).id,
                                  done=lambda new_id, run_id=run.id: self._after_queue(run_id, f"retried as run {new_id}"))

        if retries:
            names = ", ".join(f"{run.id} ({run.status})" for run in retries)
            self.app.push_screen(ConfirmScreen(f"Retry run(s) {names}: queue a new run with the same config?"), lambda yes: yes and retry())

    def _after_queue(self, run_id: int, verb: str) -> None:
        self.notify(f"run {run_id} {verb}")
        if self.app.start_scheduler:
            self.app.ensure_scheduler()

    def action_finalize(self) -> None:
        """Queue the run's final fit (3 seeds on train + valid), or, once its fits have finished,
        export their ensemble: the same as ``leuktui finalize RUN`` and ``--export``."""
        run = self.current_run()
        if run is None:
            return
        if run.config.get("fit_on") == "train+valid":
            self.notify(f"run {run.id} is itself a final fit; finalize run {run.parent_id}", title="final fit", severity="error")
            return
        db = self.app.db
        self.app.run_task("final fit", lambda: db.final_fit_plan(run.id), done=lambda plan: self._finalize(run, *plan))

    def _finalize(self, run: Run, done: list[Run], waiting: list[Run], left_out: list[Run]) -> None:
        from leuktui.screens.dialogs import ConfirmScreen

        db, workspace = self.app.db, self.app.workspace
        finished = [fit.id for fit in done]
        if finished and not waiting:
            def export() -> str:
                from engine.ensemble import export_final

                path, rows, submission, _ = export_final(db, workspace, run.id)
                return f"submission {submission.id}: {rows} rows in {path}"

            question = f"Export the ensemble of run {run.id}'s final fits ({', '.join(map(str, finished))}) as the submission?"
            self.app.push_screen(ConfirmScreen(question), lambda yes: yes and self.app.run_task(
                "final fit", export, done=lambda what: self.notify(what, title="final fit exported")))
            return
        if waiting:
            self.notify(f"run {run.id}'s final fits are not all finished: {', '.join(f'{fit.id} ({fit.status})' for fit in waiting)}",
                        title="final fit")
            return
        if run.status != COMPLETED or run.best_epoch is None:
            self.notify(f"run {run.id} is {run.status}: a final fit takes the epoch count of a completed run", title="final fit",
                        severity="error")
            return

        def queue() -> list[int]:
            from runner.control import finalize

            return [fit.id for fit in finalize(db, run.id, seeds=3, workspace=workspace)[0]]

        question = (f"Final fit of run {run.id}: retrain its config on train + valid for {run.best_epoch} epochs, "
                    "with 3 seeds? (Final fits have no validation score.)")
        self.app.push_screen(ConfirmScreen(question), lambda yes: yes and self.app.run_task(
            "final fit", queue, done=lambda ids: self._after_queue(run.id, f"final fit queued: runs {', '.join(map(str, ids))}")))

    def action_tags(self) -> None:
        from leuktui.screens.dialogs import TagsScreen

        run = self.current_run()
        if run:
            self.app.push_screen(TagsScreen(run))

    def action_delete(self) -> None:
        from leuktui.screens.dialogs import ConfirmScreen

        runs = self.selected_runs()
        if not runs:
            return
        busy = [run.id for run in runs if run.status == RUNNING]
        if busy:
            self.notify(f"run {busy[0]} is running; cancel it first", title="delete", severity="error")
            return
        names = ", ".join(str(run.id) for run in runs)

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.app.run_task("delete", lambda: self._delete([run.id for run in runs]), done=self._deleted)

        self.app.push_screen(ConfirmScreen(f"Delete run(s) {names} and their files?"), confirmed)

    def _delete(self, run_ids: list[int]) -> list[int]:
        from runner import control

        for run_id in run_ids:
            control.delete(self.app.db, self.app.workspace, run_id)
        return run_ids

    def _deleted(self, run_ids: list[int]) -> None:
        for run_id in run_ids:
            self.app.runs.pop(run_id, None)
        self.marked -= set(run_ids)
        self._save_marks()
        self.refresh_table()
        self.notify(f"deleted run(s) {', '.join(map(str, run_ids))}")
