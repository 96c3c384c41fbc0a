"""The run screen's Mistakes tab: the validation images the best checkpoint gets wrong, false
negatives or false positives (``f`` flips), the most confident first; the image and the Grad-CAM
map of the class the model predicted side by side; ``z`` (or ``enter``) a larger view.

The list is read from the recorded evaluation (no torch). The maps are drawn by a background job
in the worker's environment, ``leuktui mistakes RUN --cam``, which caches them as PNG files in the
run folder under the checkpoint's identity; the pane shows each map as its file appears, and a
new best checkpoint gets new maps.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static
from textual.worker import get_current_worker

from db.models import Run
from leuktui.actions import bindings
from leuktui.cells import plain, refill
from leuktui.formatting import visible
from leuktui.mistakes import (
    FALSE_NEGATIVES,
    FALSE_POSITIVES,
    Mistake,
    Mistakes,
    chosen_evaluation,
    counted,
    mistakes_of,
)
from leuktui.results import view_label
from leuktui.widgets.cell_image import CellImage
from leuktui.widgets.keybar import KeyBar

COLUMNS = ("#", "P(ALL)", "image")
WATCH_SECONDS = 0.5  # how often the pane looks for the maps the job has drawn, while it draws
MAPS_DRAWN = 50  # the most confident mistakes of each kind the job draws maps for


def caption(mistake: Mistake) -> Text:
    truth, said = ("ALL", "HEM") if mistake.label == 1 else ("HEM", "ALL")
    return Text.assemble(("true ", "dim"), (truth, "bold"), ("  called ", "dim"), (said, "bold red"),
                         ("  P(ALL) ", "dim"), f"{mistake.probability:.3f}  ", (visible(mistake.id), "dim"))


class MistakesPane(Vertical):
    """Filled by ``load`` (the run screen calls it when the tab is first shown and whenever the
    run's evaluations change)."""

    DEFAULT_CSS = """
    MistakesPane { height: 1fr; }
    MistakesPane #mistakes-head { height: auto; padding: 0 1; }
    MistakesPane #mistakes-body { height: 1fr; }
    MistakesPane #mistakes { width: 30; height: 1fr; }
    MistakesPane #mistake-side { width: 1fr; height: 1fr; padding: 0 1; }
    MistakesPane #mistake-caption { height: auto; }
    MistakesPane #mistake-pictures { height: 1fr; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.mistakes: Mistakes | None = None
        self.kind = FALSE_NEGATIVES
        self.cams: dict[str, Path] = {}
        self.job: subprocess.Popen | None = None  # set and cleared on the event loop only
        self.job_error: str | None = None
        self.generation = 0  # which job's end still counts
        self.loaded_for: tuple | None = None  # (evaluation id, checkpoint identity) the list and maps are of

    def compose(self) -> ComposeResult:
        yield Static("reading the mistakes…", id="mistakes-head")
        with Horizontal(id="mistakes-body"):
            yield DataTable(id="mistakes", cursor_type="row")
            with Vertical(id="mistake-side"):
                yield Static("", id="mistake-caption")
                with Horizontal(id="mistake-pictures"):
                    yield CellImage(id="mistake-image")
                    yield CellImage(id="mistake-cam")

    def on_mount(self) -> None:
        refill(self.query_one("#mistakes", DataTable), COLUMNS, [])
        self.set_interval(WATCH_SECONDS, self._watch_maps)

    def on_unmount(self) -> None:
        self.stop_job()

    # -- the list -----------------------------------------------------------------------------

    def load(self, run: Run) -> None:
        self._read(run)

    @work(thread=True, exclusive=True, group="mistakes-read", exit_on_error=False)
    def _read(self, run: Run) -> None:
        db, workspace = self.app.db, self.app.workspace
        worker = get_current_worker()

        def hand(method, *args) -> None:  # a newer read took this one's place: it says nothing
            if not worker.is_cancelled:
                self.app.call_from_thread(method, *args)

        try:
            run = db.get_run(run.id)  # as it is now: its best epoch may have moved on
            evaluation = chosen_evaluation(db, run)
            if evaluation is None:
                hand(self._show_none, run)
                return
            found = mistakes_of(db, run, evaluation)
            cams = found.cam_paths(workspace)
        except Exception as exc:  # a busy database, a moved data folder, a damaged CSV: said in the pane
            hand(self._show_error, str(exc) or exc.__class__.__name__)
            return
        hand(self._show, found, cams)

    def _show_none(self, run: Run) -> None:
        self.mistakes = None
        self.query_one("#mistakes-head", Static).update(Text(
            "No recorded evaluation of the best checkpoint yet: the worker records one at each new best epoch; "
            f"`leuktui mistakes {run.id}` records it for a run that has a checkpoint.", style="dim"))
        refill(self.query_one("#mistakes", DataTable), COLUMNS, [])
        self._show_pictures()

    def _show_error(self, message: str) -> None:
        self.query_one("#mistakes-head", Static).update(plain(message, style="red"))

    def _show(self, found: Mistakes, cams: dict[str, Path]) -> None:
        identity = (found.evaluation.id, next(iter(cams.values())).parent if cams else None)
        same = identity == self.loaded_for
        self.mistakes, self.cams, self.loaded_for = found, cams, identity
        if not found.of(self.kind) and found.of(self._other()):
            self.kind = self._other()
        self._fill(keep_cursor=same)
        if not same:
            self.stop_job()
            self.job_error = None
            drawn = [m.id for kind in (FALSE_NEGATIVES, FALSE_POSITIVES) for m in found.of(kind)[:MAPS_DRAWN]]
            if any(i in cams and not cams[i].is_file() for i in drawn):
                self._draw_maps(found)

    def _other(self) -> str:
        return FALSE_POSITIVES if self.kind == FALSE_NEGATIVES else FALSE_NEGATIVES

    def flip(self) -> None:
        if self.mistakes is None:
            return
        self.kind = self._other()
        self._fill(keep_cursor=False)

    def _fill(self, *, keep_cursor: bool) -> None:
        found = self.mistakes
        if found is None:
            return
        table = self.query_one("#mistakes", DataTable)
        row = table.cursor_row if keep_cursor else 0
        items = found.of(self.kind)
        refill(table, COLUMNS, [(str(rank), f"{m.probability:.3f}", Path(m.id).name) for rank, m in enumerate(items, start=1)])
        if items:
            table.move_cursor(row=min(row, len(items) - 1))
        self._update_head()
        self._show_pictures()

    def _update_head(self) -> None:
        found = self.mistakes
        if found is None:
            return
        evaluation = found.evaluation
        other = self._other()
        maps = sum(path.is_file() for path in self.cams.values())
        if self.job_error:
            drawing = Text(f"  Grad-CAM: {self.job_error}", style="red")
        elif self.job is not None:
            drawing = Text(f"  drawing Grad-CAM maps {maps}/{len(self.cams)}…", style="yellow")
        else:
            drawing = Text("")
        self.query_one("#mistakes-head", Static).update(Text.assemble(
            (counted(len(found.of(self.kind)), self.kind), "bold"),
            f" ({'ALL called HEM' if self.kind == FALSE_NEGATIVES else 'HEM called ALL'}), most confident first · ",
            (f"f: {counted(len(found.of(other)), other)}", "dim"), (" · z: larger", "dim"),
            (f"\n{evaluation.checkpoint} checkpoint, epoch {evaluation.epoch}, {view_label(evaluation.tta)}, "
             f"{evaluation.n} validation images", "dim"),
            drawing,
        ))

    def current(self) -> Mistake | None:
        if self.mistakes is None:
            return None
        items = self.mistakes.of(self.kind)
        row = self.query_one("#mistakes", DataTable).cursor_row
        return items[row] if items and 0 <= row < len(items) else None

    @on(DataTable.RowHighlighted, "#mistakes")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self._show_pictures()

    @on(DataTable.RowSelected, "#mistakes")
    def _selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.zoom()

    def _show_pictures(self) -> None:
        mistake = self.current()
        image, cam = self.query_one("#mistake-image", CellImage), self.query_one("#mistake-cam", CellImage)
        if mistake is None:
            self.query_one("#mistake-caption", Static).update(Text("no mistakes of this kind" if self.mistakes is not None else "", style="dim"))
            image.show(None, "", "")
            cam.show(None, "", "")
            return
        self.query_one("#mistake-caption", Static).update(caption(mistake))
        image.show(mistake.image, Text("the cell", style="dim"),
                   "" if mistake.image else f"{visible(mistake.id)}: not in the run's valid split any more")
        self._show_cam(mistake)

    def _show_cam(self, mistake: Mistake) -> None:
        cam = self.query_one("#mistake-cam", CellImage)
        path = self.cams.get(mistake.id)
        title = Text.assemble(("Grad-CAM of ", "dim"), ("ALL" if mistake.predicted == 1 else "HEM", "bold"))
        if path is not None and path.is_file():
            cam.show(path, title)
            return
        ranked = self.mistakes.of(mistake.kind).index(mistake) if self.mistakes is not None else 0
        why = (f"no map: {self.job_error}" if self.job_error else "drawing the map…" if self.job is not None
               else "no map: the checkpoint is gone" if not self.cams
               else f"no map: maps are drawn for the {MAPS_DRAWN} most confident of each kind" if ranked >= MAPS_DRAWN
               else "no map: its image could not be read" if mistake.image is None or not mistake.image.is_file() else "no map yet")
        cam.show(None, title, why)

    # -- the maps -----------------------------------------------------------------------------

    def _draw_maps(self, found: Mistakes) -> None:
        """``leuktui mistakes RUN --cam`` in the worker's environment (the app never imports
        torch), started here on the event loop and waited for in a thread."""
        command = [sys.executable, "-m", "leuktui", "--home", str(self.app.workspace.home), "mistakes", str(found.run_id),
                   "--checkpoint", found.evaluation.checkpoint, "--tta", found.evaluation.tta, "--cam", "--json",
                   "--limit", str(MAPS_DRAWN)]
        self.generation += 1
        try:
            self.job = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        except OSError as exc:
            self.job, self.job_error = None, f"the job could not start ({exc.strerror or exc})"
            return
        self._wait_for_job(self.job, self.generation)

    @work(thread=True, group="mistakes-cam", exit_on_error=False)
    def _wait_for_job(self, job: subprocess.Popen, generation: int) -> None:
        _, err = job.communicate()
        self.app.call_from_thread(self._job_done, job, generation, err or "")

    def _job_done(self, job: subprocess.Popen, generation: int, err: str) -> None:
        if generation != self.generation:  # stopped: a newer list took its place
            return
        self.job = None
        if job.returncode != 0:
            lines = [line for line in err.splitlines() if line.strip()]
            self.job_error = lines[-1].removeprefix("leuktui: error: ") if lines else f"the job ended with status {job.returncode}"
        self._watch_maps(force=True)

    def stop_job(self) -> None:
        self.generation += 1
        job, self.job = self.job, None
        if job is not None and job.poll() is None:
            job.terminate()

    def _watch_maps(self, force: bool = False) -> None:
        """While the job draws (and once when it ends): the maps it has written so far."""
        if self.mistakes is None or not (force or self.job is not None):
            return
        self._update_head()
        mistake = self.current()
        if mistake is not None:
            self._show_cam(mistake)

    def zoom(self) -> None:
        mistake = self.current()
        if mistake is not None:
            self.app.push_screen(CellViewScreen(mistake, self.cams.get(mistake.id)))


class CellViewScreen(ModalScreen):
    """One mistake as large as the terminal allows: the image and its Grad-CAM map."""

    BINDINGS = bindings("cell")
    DEFAULT_CSS = """
    CellViewScreen { align: center middle; }
    CellViewScreen > Vertical { width: 96%; height: 94%; border: round $accent; background: $surface; padding: 0 1; }
    CellViewScreen #cell-view-caption { height: auto; }
    CellViewScreen Horizontal { height: 1fr; }
    """

    def __init__(self, mistake: Mistake, cam: Path | None) -> None:
        super().__init__()
        self.mistake, self.cam = mistake, cam

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(caption(self.mistake), id="cell-view-caption")
            with Horizontal():
                yield CellImage(id="cell-view-image")
                yield CellImage(id="cell-view-cam")
        yield KeyBar()

    def on_mount(self) -> None:
        self.query_one("#cell-view-image", CellImage).show(self.mistake.image, "the image", "" if self.mistake.image else "not in the valid split")
        cam_there = self.cam is not None and self.cam.is_file()
        self.query_one("#cell-view-cam", CellImage).show(self.cam if cam_there else None, "Grad-CAM of the class predicted", "" if cam_there else "no map yet")
