"""Every key of the app in one registry: id, default key, screen, and what it does.

The screens take their bindings from here; the help screen and the README's key table are made
from it; ``keymap.json`` is checked against it (an unknown id or two actions on one key give a
warning naming them, and the app starts with the rest). ``python -m leuktui.actions`` prints
the README's block.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from textual.binding import Binding

# Screens in the order the help and the README list them, with their titles.
SCREENS = {
    "runs": "Runs (home)",
    "detail": "Run detail",
    "form": "New run / sweep",
    "compare": "Compare",
    "ablation": "Ablation",
    "queue": "Queue",
    "studies": "Studies",
    "cell": "A mistake, larger (dialog)",
    "export": "Export (dialog)",
    "report": "Report (dialog)",
    "app": "Everywhere",
    "help": "Help",
    "confirm": "Confirm (dialog)",
    "tags": "Tags and notes (dialog)",
}
# What a screen's keys do not say.
NOTES = {
    "detail": "The tabs: live loss and (m) any metric or the learning rate per epoch, loss per step, the confusion matrix, evaluations, "
              "config, log, and the mistakes (the best checkpoint's false negatives or positives, most confident first, each image "
              "beside the Grad-CAM map of the class predicted: kitty graphics or sixel where the terminal has them, half-cell "
              "blocks elsewhere); images/s and ETA in the head.",
    "form": "Tab between fields; errors show under the field. A sweep takes factors "
            "`model=resnet18,resnet50; hist_eq=false,true` and shows how many runs it queues; the again box queues a "
            "config a run already completed (as `--force`).",
    "ablation": "Rows one factor, columns another or the eval mode (single / 5-crop / 10-crop, from evaluations of "
                "existing checkpoints); pick rows and columns at the top. A table holds only runs that agree on every "
                "other field (runs that differ elsewhere get their own table); a cell is mean ± std (n) of its seed "
                "replicates with a 95% interval; a row's best is highlighted only where it is significantly better.",
    "compare": "A validation metric (m: any of the registry, or the learning rate) and the loss overlaid, every metric at "
               "each run's best epoch with its 95% interval, the last-5 mean, only the config fields that differ, and for "
               "each pair McNemar's test with the accuracy difference (Holm-adjusted over the pairs).",
    "queue": "Running and waiting work in order, with devices and GPU utilisation/memory (NVML) or CPU/RAM; "
             "`enter` opens the run.",
    "studies": "An Optuna study's trials (state, parameters, value at the best epoch, a pruned trial's at its last, "
               "epochs), the best so far, each trial's value per epoch as curves, and the parameters' importances "
               "(fANOVA, after two completed trials that scored differently); "
               "`enter` opens a trial's run.",
    "export": "Checkpoint, test-time views, test CSV (the run's own, else its model's) and output path; several marked "
              "runs make an ensemble (runs that predict different test CSVs leave the choice to you); runs in the "
              "background with progress.",
    "report": "The runs, the output folder, and what to do first (evaluate runs with no validation predictions for "
              "their ROC curves; draw the mistakes' Grad-CAM maps), as `report --evaluate --cam`; builds in the "
              "background with progress and names the folder when done.",
}


@dataclass(frozen=True)
class Action:
    id: str
    key: str
    action: str
    description: str  # the key bar's word or two
    screen: str
    help: str = ""  # a longer line for the help screen and the README, when the description is not enough
    show: bool = True  # in the key bar
    key_display: str | None = None

    @property
    def explained(self) -> str:
        return self.help or self.description.lower()

    def binding(self, key: str | None = None) -> Binding:
        return Binding(key or self.key, self.action, self.description, show=self.show, key_display=self.key_display, id=self.id)


ACTIONS: tuple[Action, ...] = (
    # Runs (home)
    # In the key bar's order: the keys a new user needs first (at 80 columns the first few fit).
    Action("open-run", "enter", "open_run", "Open", "runs", "open the run"),
    Action("new-run", "n", "new_run", "New run", "runs", "new run"),
    Action("mark", "space", "toggle_mark", "Mark", "runs",
           "mark / unmark the run, then step to the next (compare, ablation, export, report, cancel and delete act on the "
           "marked runs; marks are kept when the app closes, and a plain `leuktui report` reports on them)"),
    Action("compare", "c", "compare", "Compare", "runs", "compare marked runs"),
    Action("ablation", "a", "ablation", "Ablation", "runs", "ablation table (marked runs, the run's sweep, or the runs shown)"),
    Action("export", "e", "export", "Export", "runs", "export the Kaggle submission (several marked runs: an ensemble)"),
    Action("report", "r", "report", "Report", "runs", "the lab report (marked runs, else the runs shown): tables, figures, submissions"),
    Action("filter", "slash", "filter", "Filter", "runs",
           "filter: text, `model=resnet50 status=completed acc>0.95 mcc>0.8 hist_eq=true tag=demo`", key_display="/"),
    Action("clear-filter", "escape", "clear_filter", "Clear filter", "runs", "clear the filter", show=False),
    Action("sort", "s", "cycle_sort", "Sort", "runs", "cycle the sort (newest, best acc, val F1, status, model)"),
    Action("unmark-all", "u", "unmark_all", "Unmark all", "runs", "unmark every run"),
    Action("new-sweep", "g", "new_sweep", "New sweep", "runs", "new sweep"),
    Action("cancel-run", "x", "cancel_run", "Cancel", "runs", "cancel (a running run checkpoints, then stops)"),
    Action("resume-retry", "R", "resume_or_retry", "Resume/retry", "runs",
           "resume an interrupted/cancelled/failed run, retry a finished one"),
    Action("tags", "t", "tags", "Tags/notes", "runs", "tags and notes of the run under the cursor (marks are not used)"),
    Action("finalize", "F", "finalize", "Final fit", "runs",
           "final fit: retrain the run's config on train + valid for its best epoch count with 3 seeds (asks first); "
           "once they finish, F again exports their ensemble as the submission"),
    Action("delete", "d", "delete", "Delete", "runs", "delete runs and their files (asks first)"),
    # Run detail
    Action("back", "escape", "app.pop_screen", "Back", "detail", "back to the runs"),
    # The keys of one tab (each opens its tab from any other) are in the key bar on their tab only.
    Action("detail-chart", "m", "cycle_chart", "Chart", "detail",
           "chart another metric per epoch (F1, AUC, sensitivity, specificity, MCC, balanced accuracy, the learning rate)"),
    Action("prev-matrix", "left_square_bracket", "previous_source", "Prev", "detail",
           "the previous epoch or evaluation in the confusion matrix", key_display="["),
    Action("next-matrix", "right_square_bracket", "next_source", "Next", "detail",
           "the next epoch or evaluation in the confusion matrix", key_display="]"),
    Action("mistakes-flip", "f", "flip_mistakes", "FN/FP", "detail", "the mistakes tab: false negatives or false positives"),
    Action("mistakes-zoom", "z", "zoom_mistake", "Larger", "detail", "the mistakes tab: the image and its map, larger"),
    Action("detail-export", "e", "export", "Export", "detail", "export the Kaggle submission"),
    Action("evaluate", "v", "evaluate", "Eval 5/10-crop", "detail", "evaluate the best checkpoint with five- and ten-crop"),
    Action("detail-cancel", "x", "cancel_run", "Cancel", "detail", "cancel the run"),
    *(Action(f"detail-{tab}", str(number), f"show_tab('{tab}')", f"{tab.removeprefix('tab-').title()} tab", "detail",
             f"the {tab.removeprefix('tab-')} tab", show=False)
      for number, tab in enumerate(("tab-charts", "tab-confusion", "tab-evaluations", "tab-config", "tab-log", "tab-mistakes"), start=1)),
    Action("cell-back", "escape", "app.pop_screen", "Back", "cell", "back to the list"),
    # New run / sweep
    Action("submit", "ctrl+s", "submit", "Queue", "form", "queue the run or the sweep"),
    Action("cancel-form", "escape", "app.pop_screen", "Cancel", "form", "back without queueing"),
    # Compare
    Action("compare-back", "escape", "app.pop_screen", "Back", "compare", "back"),
    Action("compare-report", "r", "report", "Report", "compare", "the lab report of these runs"),
    Action("compare-chart", "m", "cycle_chart", "Chart", "compare", "overlay another validation metric (every metric of the registry, the learning rate)"),
    # Ablation
    Action("ablation-back", "escape", "app.pop_screen", "Back", "ablation", "back"),
    Action("metric", "m", "cycle_metric", "Metric", "ablation", "next metric (every metric of the registry)"),
    Action("next-table", "t", "next_table", "Next table", "ablation", "the next table (runs that differ in other fields)"),
    Action("selection", "l", "toggle_selection", "Best/last-5", "ablation",
           "the value at the best epoch, or the mean of the last 5 epochs"),
    Action("save-markdown", "y", "save_markdown", "Copy/save Markdown", "ablation", "copy the table as Markdown and save it to `exports/`"),
    Action("evaluate-missing", "v", "evaluate_missing", "Eval 5/10-crop", "ablation", "evaluate missing five-/ten-crop checkpoints"),
    Action("ablation-report", "r", "report", "Report", "ablation", "the lab report of these runs"),
    # Queue
    Action("queue-back", "escape", "app.pop_screen", "Back", "queue", "back"),
    Action("hold", "h", "hold", "Hold", "queue", "hold a queued run"),
    Action("release", "u", "release", "Release", "queue", "release a held run"),
    Action("prioritize", "p", "prioritize", "To front", "queue", "move to the front of the queue"),
    Action("queue-cancel", "x", "cancel_run", "Cancel", "queue", "cancel"),
    # Studies
    Action("studies-back", "escape", "app.pop_screen", "Back", "studies", "back"),
    Action("stop-study", "x", "stop_study", "Stop study", "studies", "stop the study: no new trials, waiting ones cancelled (asks first)"),
    Action("more-trials", "plus", "more_trials", "5 more", "studies", "give the study five more trials", key_display="+"),
    Action("previous-study", "left_square_bracket", "previous_study", "Prev study", "studies", "the previous study", key_display="["),
    Action("next-study", "right_square_bracket", "next_study", "Next study", "studies", "the next study", key_display="]"),
    # Export
    Action("close-export", "escape", "dismiss", "Close", "export", "close"),
    Action("export-now", "ctrl+s", "export", "Export", "export", "write the submission"),
    # Report
    Action("close-report", "escape", "dismiss", "Close", "report", "close"),
    Action("build-report", "ctrl+s", "build", "Build report", "report", "build the report"),
    # Everywhere
    Action("quit", "q", "quit", "Quit", "app", "quit"),
    Action("help", "question_mark", "help", "Help", "app", "this help", key_display="?"),
    Action("queue", "w", "queue_screen", "Queue", "app", "the queue"),
    Action("studies", "o", "studies_screen", "Studies", "app", "the Optuna studies"),
    # Help and the dialogs
    Action("help-back", "escape", "app.pop_screen", "Back", "help", "back"),
    Action("help-close", "question_mark", "app.pop_screen", "Back", "help", "back", show=False, key_display="?"),
    Action("confirm-no", "escape", "dismiss(False)", "No", "confirm", "no"),
    Action("confirm-yes", "y", "dismiss(True)", "Yes", "confirm", "yes"),
    Action("tags-cancel", "escape", "dismiss", "Cancel", "tags", "close without saving"),
    Action("tags-save", "ctrl+s", "save", "Save", "tags", "save the tags and notes"),
)
ACTION_BY_ID = {action.id: action for action in ACTIONS}
# Screens whose keys the app's own keys ("Everywhere") share the keyboard with.
WITH_APP_KEYS = ("runs", "detail", "compare", "ablation", "queue", "studies")


def bindings(screen: str) -> list[Binding]:
    """The default bindings of a screen (``app`` for the app's own)."""
    return [action.binding() for action in ACTIONS if action.screen == screen]


def screen_of(node: object) -> str | None:
    """The registry's name of the screen ``node`` (its bindings came from ``bindings(name)``)."""
    return next((ACTION_BY_ID[b.id].screen for b in getattr(node, "BINDINGS", ()) if getattr(b, "id", None) in ACTION_BY_ID), None)


def _keys(text: str) -> list[str]:
    return [key.strip() for key in text.split(",") if key.strip()]


def validate_keymap(keymap: object, source: str = "keymap.json") -> tuple[dict[str, str], list[str]]:
    """The usable part of a user's keymap (``{binding id: key}``) and a warning per problem.

    Refused, each with a warning naming it: an unknown id, a key that is not text, and a key
    that two actions of one screen would then share (the app's own keys count on every screen).
    """
    warnings: list[str] = []
    if not isinstance(keymap, dict):
        return {}, [f"{source}: expected an object of binding ids and keys, e.g. {{\"new-run\": \"N\"}}"]
    usable: dict[str, str] = {}
    for binding_id, key in keymap.items():
        if binding_id not in ACTION_BY_ID:
            warnings.append(f"{source}: unknown binding id {binding_id!r} (ids are listed by `?`)")
        elif not isinstance(key, str) or not _keys(key) or not all(name.isprintable() and not name.isspace() for name in _keys(key)):
            # A control character would reach the terminal in the key bar (a shared workspace's file may hold one).
            warnings.append(f"{source}: the key for {binding_id!r} must be a key name such as \"N\" or \"ctrl+n\"")
        else:
            usable[binding_id] = key
    for binding_id in list(usable):
        action = ACTION_BY_ID[binding_id]
        for screen in (("app", *WITH_APP_KEYS) if action.screen == "app" else (action.screen,)):
            clash = _clash(action, screen, usable)
            if clash is not None:
                warnings.append(f"{source}: {usable[binding_id]!r} for {binding_id!r} is already the key of "
                                f"{clash.id!r} on the {SCREENS[screen]} screen; keeping {action.key_display or action.key!r}")
                del usable[binding_id]
                break
    return usable, warnings


def _clash(action: Action, screen: str, keymap: dict[str, str]) -> Action | None:
    """Another action that the remapped ``action`` would share a key with on ``screen``."""
    mine = set(_keys(keymap[action.id]))
    shares = {screen, "app"} if screen in ("app", *WITH_APP_KEYS) else {screen}
    for other in ACTIONS:
        if other.id != action.id and other.screen in shares and mine & set(_keys(keymap.get(other.id, other.key))):
            return other
    return None


_DISPLAY = {"slash": "/", "question_mark": "?", "left_square_bracket": "[", "right_square_bracket": "]", "escape": "esc"}


def display(action: Action, keymap: dict[str, str] | None = None) -> str:
    key = (keymap or {}).get(action.id)
    if key is None and action.key_display:
        return action.key_display
    return " / ".join(_DISPLAY.get(k, k) for k in _keys(key or action.key))


def help_markdown(keymap: dict[str, str] | None = None) -> str:
    """The help screen: every key of every screen, as remapped by ``keymap``."""
    lines = [
        "# leuktui keys",
        "",
        "Every action is also in the command palette (**ctrl+p**). Remap keys with `keymap.json` in the",
        'workspace by binding id: `{"new-run": "N", "compare": "C"}`.',
    ]
    for screen, title in SCREENS.items():
        lines += ["", f"## {title}"]
        if screen in NOTES:
            lines += [NOTES[screen], ""]
        lines += ["| key | action | id |", "|---|---|---|"]
        for action in ACTIONS:
            if action.screen == screen:
                lines.append(f"| {display(action, keymap).replace('|', '&#124;')} | {action.explained} | `{action.id}` |")
    return "\n".join(lines) + "\n"


README_START = "<!-- keys: made by `python -m leuktui.actions`; edit leuktui/actions.py, not this table -->"
README_END = "<!-- end of keys -->"


def readme_block() -> str:
    """The README's table of keys, one row a screen."""
    lines = [README_START, "", "| screen | keys (binding id) |", "| --- | --- |"]
    for screen, title in SCREENS.items():
        keys = " · ".join(f"`{display(a)}` {a.explained} ({a.id})" for a in ACTIONS if a.screen == screen)
        if screen in NOTES:
            keys = f"{NOTES[screen]} {keys}"
        lines.append(f"| **{title}** | {keys.replace('|', '&#124;')} |")
    return "\n".join([*lines, "", README_END])


def readme_with_block(readme: str) -> str:
    """``readme`` with its key table replaced by the registry's."""
    start, end = readme.index(README_START), readme.index(README_END) + len(README_END)
    return readme[:start] + readme_block() + readme[end:]


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        path = Path(__file__).resolve().parent.parent / "README.md"
        path.write_text(readme_with_block(path.read_text()))
    else:
        print(readme_block())
