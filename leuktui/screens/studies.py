"""Studies: an Optuna search's trials with their state, parameters and value, the best so far, each
trial's value per epoch as curves, and which parameters matter (Optuna's importances).

The poll reads leuktui's own tables (``runner.studies.overview``) every two seconds; Optuna is
imported only in the poll's thread, for the importances, and only when a trial has completed since
they were last worked out, so opening the app never loads it.
"""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import DataTable, Header, Static
from textual.worker import get_current_worker

from db.vocabulary import COMPLETED, PRUNED, STUDY_FINISHED, STUDY_STOPPED, STUDY_STOPPING, metric
from leuktui.actions import bindings
from leuktui.cells import STATUS_STYLES, plain, refill
from leuktui.messages import PollFailed, StudiesState
from leuktui.widgets.charts import MetricChart
from leuktui.widgets.keybar import KeyBar

POLL_SECONDS = 2.0
MORE_TRIALS = 5
CURVES = 10  # trials drawn at once: the best and the newest


def param_text(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def head_text(summary: dict) -> str:
    best = summary["best"]
    chosen = metric(summary["metric"])
    counts = ", ".join(f"{n} {status}" for status, n in sorted(summary["counts"].items()))
    line = (f"study '{summary['name']}' {summary['state']}: {len(summary['trials'])}/{summary['trials_wanted']} trials "
            f"({counts or 'none yet'}), {summary['parallel']} at once; {summary['sampler']} sampler, {summary['pruner']} pruner, "
            f"{summary['direction']} {summary['metric']}\nspace: {summary['space']}\n")
    if best:
        params = ", ".join(f"{k}={param_text(v)}" for k, v in best["params"].items())
        line += f"best: trial {best['trial']} (run {best['run_id']}) {chosen.format(best['value'])} at epoch {best['best_epoch']}: {params}"
    else:
        line += "best: no completed trial yet"
    return line


def curves(summary: dict) -> list[tuple[str, list[float], list[float]]]:
    """The best trial's curve and the newest others', each trial's value per epoch."""
    trials = [t for t in summary["trials"] if t["curve"]]
    best = summary["best"]
    chosen = [t for t in trials if best and t["trial"] == best["trial"]]
    chosen += [t for t in reversed(trials) if t not in chosen][: CURVES - len(chosen)]
    series = []
    for trial in sorted(chosen, key=lambda t: t["trial"]):
        points = [(x, y) for x, y in trial["curve"] if y is not None]
        series.append((f"#{trial['trial']} {trial['status']}", [x for x, _ in points], [y for _, y in points]))
    return series


class StudiesScreen(Screen):
    BINDINGS = bindings("studies")

    def __init__(self, study_id: int | None = None) -> None:
        super().__init__()
        self.study_id = study_id
        self.summaries: list[dict] = []
        self._shown: tuple | None = None
        self._importances: dict[int, tuple[int, dict | None]] = {}
        self._keyed: int | None = None  # the number of studies the key bar and the panes were set for

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("reading the studies…", id="study-head")
        yield DataTable(id="study-trials", cursor_type="row", zebra_stripes=True)
        with Horizontal(classes="chart-row", id="study-charts"):
            yield MetricChart("each trial's value per epoch", id="study-curves", markers=True)
            yield Static("", id="study-importances")
        yield KeyBar()

    def on_mount(self) -> None:
        self.query_one("#study-trials", DataTable).focus()
        self.poll()

    @work(thread=True, exclusive=True, group="studies-poll", exit_on_error=False)
    def poll(self) -> None:
        from runner.studies import overview

        worker = get_current_worker()
        while not worker.is_cancelled:
            try:
                db = self.app.db
                summaries = [overview(db, sweep) for sweep in db.studies()]
                self.post_message(StudiesState(summaries, self.importances_of(summaries)))
            except Exception as exc:  # shown, then tried again
                self.post_message(PollFailed(str(exc)))
            self.app.nap(POLL_SECONDS)

    def importances_of(self, summaries: list[dict]) -> dict[int, dict | None]:
        """Each study's importances, worked out again only when its completed trials changed."""
        out = {}
        for summary in summaries:
            completed = summary["counts"].get(COMPLETED, 0)
            known = self._importances.get(summary["id"])
            if known is None or known[0] != completed:
                from runner.studies import find_study, importances

                try:
                    ranked = importances(self.app.workspace, find_study(self.app.db, str(summary["id"])))
                except Exception as exc:  # Optuna's storage: said, not fatal
                    ranked = {"error": str(exc)}
                self._importances[summary["id"]] = known = (completed, ranked)
            out[summary["id"]] = known[1]
        return out

    def on_studies_state(self, message: StudiesState) -> None:
        self.summaries = message.summaries
        self.show(message.importances)

    def summary(self) -> dict | None:
        if not self.summaries:
            return None
        ids = [s["id"] for s in self.summaries]
        if self.study_id not in ids:
            self.study_id = ids[-1]  # the newest study
        return self.summaries[ids.index(self.study_id)]

    def show(self, importances: dict) -> None:
        summary = self.summary()
        head = self.query_one("#study-head", Static)
        if len(self.summaries) != self._keyed:  # the keys offered follow how many studies there are
            self._keyed = len(self.summaries)
            self.query_one(KeyBar).refresh()
            self.query_one("#study-charts").display = self.query_one("#study-trials").display = summary is not None
        if summary is None:
            head.update(plain("no studies yet: `leuktui study create NAME --space 'lr=log:1e-4:1e-1' --trials 20`, "
                              "or a new sweep (g) in search mode", newlines=True))
            return
        position = [s["id"] for s in self.summaries].index(summary["id"]) + 1
        others = f"  [study {position} of {len(self.summaries)}: [ and ] for the others]" if len(self.summaries) > 1 else ""
        head.update(plain(head_text(summary) + others, newlines=True))
        ranked = importances.get(summary["id"])
        if ranked is None:
            importance = "importance: none yet (it takes two completed trials that tried different values and scored differently)"
        elif "error" in ranked:
            importance = f"importance: not available ({ranked['error']})"
        else:
            importance = "importance (fANOVA):\n" + "\n".join(f"{name[:14]:<14} {value:4.2f} {'█' * round(16 * value)}"
                                                              for name, value in ranked.items())
        self.query_one("#study-importances", Static).update(plain(importance, newlines=True))
        names = list(summary["trials"][0]["params"]) if summary["trials"] else []
        chosen = metric(summary["metric"])
        rows = [
            (str(t["trial"]), str(t["run_id"]), plain(t["status"], style=STATUS_STYLES.get(t["status"], "")),
             *(param_text(t["params"][n]) for n in names), chosen.format(t["value"]), f"{t['epochs_done']}/{t['epochs']}")
            for t in summary["trials"]
        ]
        picture = (summary["id"], tuple(tuple(str(c) for c in row) for row in rows))
        if picture != self._shown:
            self._shown = picture
            table = self.query_one("#study-trials", DataTable)
            cursor = table.cursor_row
            # A trial's value is at its best epoch, a pruned one's at its last (what Optuna was told): the Runs
            # screen's best accuracy of that run can differ, and the header says why.
            value = summary["metric"] + (" (pruned: last epoch)" if any(t["status"] == PRUNED for t in summary["trials"]) else "")
            refill(table, ("trial", "run", "status", *names, value, "epochs done"), rows, keys=[row[1] for row in rows])
            if rows:
                table.move_cursor(row=min(cursor, len(rows) - 1))
            self.query_one("#study-curves", MetricChart).replot(curves(summary), title=f"{summary['metric']} per epoch, each trial")

    def key_shown(self, action: str) -> bool:
        """The key bar offers a study's keys once there is one, and [ and ] once there are two."""
        if action in ("previous_study", "next_study"):
            return len(self.summaries) > 1
        return action not in ("stop_study", "more_trials") or bool(self.summaries)

    @on(DataTable.RowSelected, "#study-trials")
    def _open(self, event: DataTable.RowSelected) -> None:
        self.app.open_run(int(event.row_key.value))

    def _step(self, by: int) -> None:
        if len(self.summaries) < 2:
            return
        ids = [s["id"] for s in self.summaries]
        self.study_id = ids[(ids.index(self.summary()["id"]) + by) % len(ids)]
        self._shown = None
        self.show({k: v[1] for k, v in self._importances.items()})

    def action_previous_study(self) -> None:
        self._step(-1)

    def action_next_study(self) -> None:
        self._step(1)

    def action_stop_study(self) -> None:
        summary = self.summary()
        if summary is None:
            return
        if summary["state"] in (STUDY_FINISHED, STUDY_STOPPED, STUDY_STOPPING):  # nothing it would still give to stop
            self.notify(f"study '{summary['name']}' is {summary['state']}: it gives no new trials (+ adds more)", title="stop study")
            return
        from leuktui.screens.dialogs import ConfirmScreen

        def stop(yes: bool) -> None:
            if not yes:
                return
            from runner.studies import find_study, stop_study

            self.app.run_task("stop study", lambda: stop_study(self.app.db, find_study(self.app.db, str(summary["id"]))),
                              done=lambda _r, app=self.app: app.notify(f"study '{summary['name']}': no new trials; waiting ones cancelled"))

        self.app.push_screen(ConfirmScreen(f"Stop study '{summary['name']}'? It gives no new trials; waiting ones are "
                                           "cancelled, running ones finish."), stop)

    def action_more_trials(self) -> None:
        summary = self.summary()
        if summary is None:
            return
        from runner.studies import find_study, more_trials

        def done(settings) -> None:
            self.notify(f"study '{summary['name']}': {settings['trials']} trials in all")
            if self.app.start_scheduler:
                self.app.ensure_scheduler()

        self.app.run_task("more trials", lambda: more_trials(self.app.db, find_study(self.app.db, str(summary["id"])), MORE_TRIALS),
                          done=done)
