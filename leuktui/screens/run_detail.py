"""Run detail: live loss/accuracy charts, the confusion matrix, evaluations, config, log, the
mistakes, timing."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Header, RichLog, Static, TabbedContent, TabPane
from textual.worker import get_current_worker

from db import NotFound
from db.models import Epoch, Evaluation, Run
from db.vocabulary import (
    EVAL_MODE_BY_KEY,
    FINISHED_STATUSES,
    METRICS,
    MULTI_VIEW_MODES,
    RUNNING,
    epoch_metrics,
)
from leuktui.actions import bindings
from leuktui.cells import plain, refill, status_cell
from leuktui.feed import DetailFeed
from leuktui.formatting import percent, visible
from leuktui.messages import DetailData, RunGone
from leuktui.results import interval_text
from leuktui.screens.mistakes import MistakesPane
from leuktui.widgets.charts import MetricChart, charted, downsample
from leuktui.widgets.confusion import ConfusionMatrix
from leuktui.widgets.keybar import KeyBar

REDRAW_SECONDS = 0.3
MAX_STEPS_KEPT = 8_000  # step points held for the chart; more are folded into bucket means
EVALUATION_COLUMNS = ("id", "origin", "checkpoint", "epoch", "split", "tta", "n", *(m.title for m in METRICS), "acc 95% CI", "file")


# The keys that act on one tab, and that tab.
TAB_KEYS = {"cycle_chart": "tab-charts", "previous_source": "tab-confusion", "next_source": "tab-confusion",
            "flip_mistakes": "tab-mistakes", "zoom_mistake": "tab-mistakes"}
STEP_PHASE = re.compile(r"epoch (\d+)/\d+ step (\d+)/(\d+)")


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def early_rate(run: Run, now: float) -> tuple[float, float] | None:
    """Before the first epoch ends: (images/s, seconds left) from the steps done since training
    started, read off the run's phase (``epoch 1/6 step 10/40``); None until a few steps are done."""
    match = STEP_PHASE.search(run.phase or "")
    if run.status != RUNNING or match is None or run.started_at is None:
        return None
    epoch, step, steps = (int(g) for g in match.groups())
    done = (epoch - 1) * steps + step
    elapsed = now - run.started_at
    if step < 3 or elapsed <= 0:
        return None
    total = int(run.config.get("epochs") or 0) * steps
    per_step = elapsed / done
    return done * int(run.config.get("batch_size") or 0) / elapsed, max(0, total - done) * per_step


def eta_text(run: Run, epochs: list[Epoch], now: float) -> str:
    total = int(run.config.get("epochs") or 0)
    if run.status != RUNNING:
        return "-"
    if not epochs:
        early = early_rate(run, now)
        return _duration(early[1]) if early else "-"
    seconds = sum(e.seconds or 0 for e in epochs[-3:]) / len(epochs[-3:])
    return _duration(max(0, total - run.epochs_done) * seconds)


class RunDetailScreen(Screen):
    BINDINGS = bindings("detail")

    def __init__(
        self,
        run_id: int,
        *,
        opened: tuple[DetailFeed, DetailData] | None = None,
        on_first_picture: Callable[[], None] | None = None,
    ) -> None:
        """``opened``: a feed and its first read, when the opener has them, for the first picture;
        otherwise the poll worker reads them. ``on_first_picture`` is called once the run's data
        has been painted."""
        super().__init__()
        self.run_id = run_id
        self.run: Run | None = None
        self.feed, self._first = opened or (None, None)
        self._on_first_picture = on_first_picture
        self.epochs: list[Epoch] = []
        self.steps: list[tuple[int, float]] = []
        self.evaluations: list[Evaluation] = []
        self.source_index = -1  # -1: follow the newest epoch
        self.chart_index = 0  # which of charted() the second chart shows (m cycles)
        self._dirty = False
        self._redrawn_at = 0.0
        self._config_shown = False
        self._head: Text | None = None
        self._mistakes_shown = False  # the Mistakes tab has been opened: it follows the evaluations from then on
        self._mistakes_best: int | None = None  # the best epoch its list is of

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="detail-head")
        with TabbedContent(id="detail-tabs"):
            with TabPane("Charts", id="tab-charts"), Vertical():
                with Horizontal(classes="chart-row"):
                    yield MetricChart("loss per epoch", id="chart-loss")
                    yield MetricChart("accuracy per epoch", id="chart-acc")
                yield MetricChart("training loss per step", x_label="step", id="chart-steps")
            with TabPane("Confusion", id="tab-confusion"):
                yield ConfusionMatrix(id="confusion")
            with TabPane("Evaluations", id="tab-evaluations"):
                yield Static("", id="evaluations-hint")
                yield DataTable(id="evaluations", cursor_type="row")
            with TabPane("Config", id="tab-config"):
                yield Static("", id="config")
            with TabPane("Log", id="tab-log"):
                yield RichLog(id="log", max_lines=2000, wrap=True, markup=False, highlight=False)  # long lines wrap
            with TabPane("Mistakes", id="tab-mistakes"):
                yield MistakesPane(id="mistakes-pane")
        yield KeyBar()

    def on_mount(self) -> None:
        refill(self.query_one("#evaluations", DataTable), EVALUATION_COLUMNS, [])
        if self._first is not None:
            self.on_detail_data(self._first)
            self._first = None
        self.set_interval(REDRAW_SECONDS, self._redraw_if_dirty)
        self.poll()

    @work(thread=True, exclusive=True, group="detail-poll", exit_on_error=False)
    def poll(self) -> None:
        worker = get_current_worker()
        if self.feed is None:
            self.feed = DetailFeed(self.app.db, self.app.workspace.log_path(self.run_id), self.run_id)
        else:
            self.app.nap(self.app.poll_seconds)  # the opener read it a moment ago
        while not worker.is_cancelled:
            try:
                data = self.feed.read()
            except NotFound:  # deleted by another process or another screen
                self.post_message(RunGone())
                return
            except Exception:  # a locked or busy database: try again; the run stays shown
                data = None
            if data is not None and not worker.is_cancelled:
                self.post_message(data)
            self.app.nap(self.app.poll_seconds)

    def on_run_gone(self, message: RunGone) -> None:
        self.notify(f"run {self.run_id} was deleted", severity="warning")
        if self.app.screen is self:
            self.dismiss()

    def on_detail_data(self, message: DetailData) -> None:
        if self.run is None or self.run.status != message.run.status:
            self.query_one(KeyBar).refresh()  # x Cancel goes when the run ends
        self.run = message.run
        if message.reset:
            self.epochs, self.steps = [], []
        self.epochs.extend(message.epochs)
        self.steps.extend(message.steps)
        if len(self.steps) > MAX_STEPS_KEPT:  # a long watch: keep redraws cheap, as the overview does
            xs, ys = downsample([s for s, _ in self.steps], [v for _, v in self.steps], MAX_STEPS_KEPT // 4)
            self.steps = list(zip(xs, ys, strict=True))
        if message.evaluations is not None:
            self.evaluations = message.evaluations
        self._update_head()
        if message.epochs or message.steps or message.reset:
            self._dirty = True
        if message.reset or time.monotonic() - self._redrawn_at >= REDRAW_SECONDS:
            self._redraw_if_dirty()  # at once, unless the charts were redrawn a moment ago
        if self._on_first_picture is not None:
            self.call_after_refresh(self._on_first_picture)
            self._on_first_picture = None
        # The other tabs are filled once the charts are painted: they are not on screen, and
        # filling them lays the screen out again.
        self.call_after_refresh(self._fill_tabs, message)

    def _fill_tabs(self, message: DetailData) -> None:
        if message.evaluations is not None:
            self._fill_evaluations()
        if message.log_lines:
            log = self.query_one("#log", RichLog)
            for line in message.log_lines:
                log.write(plain(line))
        self._fill_config()
        if message.epochs or message.evaluations is not None or message.reset:
            self._show_confusion()
        # The worker records a new best epoch's evaluation, then the run's best epoch: either
        # change is a new list of mistakes.
        if self._mistakes_shown and self.run is not None and (message.evaluations is not None or self.run.best_epoch != self._mistakes_best):
            self._mistakes_best = self.run.best_epoch
            self.query_one(MistakesPane).load(self.run)

    def key_shown(self, action: str) -> bool:
        """Whether the key bar shows ``action``'s key: a tab's own keys on that tab only (they work
        on every tab, opening theirs)."""
        if action == "cancel_run":  # a finished run has nothing to cancel
            return self.run is None or self.run.status not in FINISHED_STATUSES
        tab = TAB_KEYS.get(action)
        return tab is None or self.query_one("#detail-tabs", TabbedContent).active == tab

    @on(TabbedContent.TabActivated, "#detail-tabs")
    def _tab_shown(self, event: TabbedContent.TabActivated) -> None:
        self.query_one(KeyBar).refresh()
        if event.pane.id != "tab-mistakes":
            return
        self.query_one("#mistakes", DataTable).focus()  # up and down step through the mistakes
        if not self._mistakes_shown and self.run is not None:
            self._mistakes_shown, self._mistakes_best = True, self.run.best_epoch
            self.query_one(MistakesPane).load(self.run)

    def action_flip_mistakes(self) -> None:
        self.action_show_tab("tab-mistakes")
        self.query_one(MistakesPane).flip()

    def action_zoom_mistake(self) -> None:
        self.action_show_tab("tab-mistakes")
        self.query_one(MistakesPane).zoom()

    def action_cycle_chart(self) -> None:
        tabs = self.query_one("#detail-tabs", TabbedContent)
        if tabs.active != "tab-charts":  # from another tab: the charts, as they were
            tabs.active = "tab-charts"
            return
        self.chart_index = (self.chart_index + 1) % len(charted())
        self._dirty = True
        self._redraw_if_dirty()

    def _redraw_if_dirty(self) -> None:
        """Charts redraw at most a few times a second, however fast rows arrive."""
        if not self._dirty:
            return
        self._dirty = False
        self._redrawn_at = time.monotonic()
        xs = [e.epoch for e in self.epochs]
        with self.app.batch_update():
            self.query_one("#chart-loss", MetricChart).replot([
                ("train", xs, [e.train_loss or 0 for e in self.epochs]),
                ("val", xs, [e.val_loss or 0 for e in self.epochs]),
            ])
            key, label, column = charted()[self.chart_index]
            known = [(e.epoch, getattr(e, column)) for e in self.epochs if getattr(e, column) is not None]  # a missing value is no point
            series = [("val" if key != "lr" else "lr", [x for x, _ in known], [y for _, y in known])]
            if key == "acc":
                series.insert(0, ("train", xs, [e.train_acc or 0 for e in self.epochs]))
            self.query_one("#chart-acc", MetricChart).replot(series, title=f"{label} per epoch")
            self.query_one("#chart-steps", MetricChart).replot([("loss", [s for s, _ in self.steps], [v for _, v in self.steps])])

    def _update_head(self) -> None:
        run = self.run
        if run is None:
            return
        last = self.epochs[-1] if self.epochs else None
        now = self.app.clock()
        early = early_rate(run, now) if last is None else None
        speed = f"{last.images_per_s:.0f} img/s" if last and last.images_per_s else f"{early[0]:.0f} img/s" if early else "- img/s"
        # A running run's phase already says its epoch ("epoch 2/6 step 2/19"): said once.
        progress = "" if run.status == RUNNING and STEP_PHASE.search(run.phase or "") else f"  epoch {run.epochs_done}/{run.config.get('epochs')}"
        text = Text.assemble(
            (f"run {run.id} ", "bold"), f"{visible(run.name)}  ", status_cell(run),
            f"{progress}  {speed}  ETA {eta_text(run, self.epochs, now)}",
            f"  best {percent(run.best_val_acc)} (epoch {run.best_epoch or '-'})  device {run.device or '-'}",
        )
        if run.error:
            text.append(f"\n{visible(run.error.splitlines()[0])}", style="red")
        if text == self._head:
            return
        head = self.query_one("#detail-head", Static)
        # Lay the screen out again only if the head's height changes (a new error line, a wrap).
        width = head.content_region.width

        def height(content: Text) -> int:
            return len(content.wrap(self.app.console, width))

        head.update(text, layout=self._head is None or not width or height(text) != height(self._head))
        self._head = text

    def _fill_config(self) -> None:
        """Once: a run's config never changes."""
        if self.run is None or self._config_shown:
            return
        self._config_shown = True
        table = Table(box=None, show_header=False, pad_edge=False)
        table.add_column(style="bold")
        table.add_column()
        for key, value in sorted(self.run.config.items()):
            table.add_row(key, plain(value))
        env = self.run.environment or {}
        if env:
            table.add_row("", "")
            for key in ("host", "device_name", "precision", "torch", "cuda", "leuktui"):
                if env.get(key) is not None:
                    table.add_row(f"ran with {key}", plain(env[key]))
        self.query_one("#config", Static).update(table)

    def _fill_evaluations(self) -> None:
        hint = self.query_one("#evaluations-hint", Static)
        hint.display = not self.evaluations
        if not self.evaluations:
            hint.update("No evaluations yet: the worker records the best epoch's validation predictions as it trains; "
                        "press v to evaluate the best checkpoint with five- and ten-crop too.")
        refill(self.query_one("#evaluations", DataTable), EVALUATION_COLUMNS,
               [(str(e.id), e.origin, e.checkpoint, str(e.epoch), plain(e.split), e.tta, str(e.n),
                 *(m.format(getattr(e, m.key)) for m in METRICS), interval_text("acc", e.interval("acc")) or "-",
                 plain(e.output_path or "")) for e in self.evaluations])

    # -- the confusion matrix's source --------------------------------------------------------

    def sources(self) -> list[tuple[str, list | None, dict]]:
        out = [(f"epoch {e.epoch}" + (" (best)" if self.run and e.epoch == self.run.best_epoch else ""),
                e.confusion, epoch_metrics(e))
               for e in self.epochs]
        out += [(f"evaluation {e.id}: {e.checkpoint} checkpoint, {e.tta}, {e.split}",
                 e.confusion, {m.key: getattr(e, m.key) for m in METRICS})
                for e in self.evaluations if e.confusion]
        return out

    def _show_confusion(self) -> None:
        sources = self.sources()
        widget = self.query_one("#confusion", ConfusionMatrix)
        if not sources:
            widget.show(None)
            return
        index = self.source_index if 0 <= self.source_index < len(sources) else len(self.epochs) - 1 if self.epochs else len(sources) - 1
        title, confusion, metrics = sources[index]
        widget.show(confusion, metrics, f"{title}   ([ and ] to choose, {index + 1}/{len(sources)})")

    def _step_source(self, delta: int) -> None:
        sources = self.sources()
        if not sources:
            return
        current = self.source_index if self.source_index >= 0 else (len(self.epochs) - 1 if self.epochs else 0)
        self.source_index = (current + delta) % len(sources)
        self.query_one("#detail-tabs", TabbedContent).active = "tab-confusion"
        self._show_confusion()

    def action_previous_source(self) -> None:
        self._step_source(-1)

    def action_next_source(self) -> None:
        self._step_source(1)

    def action_show_tab(self, tab: str) -> None:
        self.query_one("#detail-tabs", TabbedContent).active = tab

    # -- actions ---------------------------------------------------------------------------------

    def action_evaluate(self) -> None:
        if self.run is None or self.run.best_epoch is None:
            self.notify("this run has no checkpoint yet", severity="warning")
            return

        def evaluate() -> list[str]:
            from engine.predict import evaluate_run

            done = []
            for mode in MULTI_VIEW_MODES:
                evaluation, metrics = evaluate_run(self.app.db, self.app.workspace, self.run_id, tta=mode)
                done.append(f"{EVAL_MODE_BY_KEY[mode].label} {percent(metrics['acc'])}")
            return done

        self.notify("evaluating the best checkpoint with five- and ten-crop…")
        self.app.run_task("evaluate", evaluate, done=lambda done: self.notify(", ".join(done), title=f"run {self.run_id}"))

    def action_export(self) -> None:
        from leuktui.screens.export import ExportScreen

        if self.run:
            self.app.push_screen(ExportScreen(self.run))

    def action_cancel_run(self) -> None:
        """Cancel the run; a running one is asked about first (it checkpoints, then stops)."""
        from runner import control

        def cancel() -> None:
            self.app.run_task("cancel", lambda: control.cancel(self.app.db, self.run_id),
                              done=lambda outcome: self.notify(f"run {self.run_id} {outcome}"))

        if self.run is not None and self.run.status == RUNNING:
            from leuktui.screens.dialogs import ConfirmScreen

            self.app.push_screen(ConfirmScreen(f"Stop run {self.run_id}? It checkpoints, then stops; R on the Runs screen resumes it."),
                                 lambda yes: yes and cancel())
        else:
            cancel()
