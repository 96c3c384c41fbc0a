"""The ? help screen: every key of every screen."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Header, Markdown

from leuktui.widgets.keybar import KeyBar

HELP = """\
# leuktui keys

Every action is also in the command palette (**ctrl+p**). Remap keys with `keymap.json` in the
workspace: `{"new-run": "N", "compare": "C"}` (binding ids are listed in the README).

## Runs (home)
| key | action |
|---|---|
| enter | open the run |
| / | filter: text, `model=resnet50 status=completed acc>0.95 hist_eq=true tag=demo` |
| esc | clear the filter |
| s | cycle the sort (newest, best acc, val F1, status, model) |
| space | mark / unmark (compare, ablation, cancel, delete act on marked runs) |
| n / g | new run / new sweep |
| c | compare marked runs |
| a | ablation table (marked runs, the run's sweep, or the runs shown) |
| e | export the Kaggle submission (several marked runs: an ensemble) |
| r | the lab report (marked runs, else the runs shown): tables, figures, submissions |
| x | cancel (a running run checkpoints, then stops) |
| R | resume an interrupted/cancelled/failed run, retry a finished one |
| t | tags and notes |
| d | delete runs and their files (asks first) |
| w | the queue |
| ? | this help · q quits |

## Run detail
charts, confusion matrix, evaluations, config and log in tabs (**1**–**5**, or ←/→ on the tabs) ·
**[** / **]** choose the epoch or evaluation shown in the confusion matrix · **v** evaluate the
best checkpoint with five- and ten-crop · **e** export · **x** cancel · **esc** back

## Ablation
**m** next metric · **y** copy the table as Markdown and save it to `exports/` · **v** evaluate
missing five-/ten-crop checkpoints · **r** the lab report on these runs · pick rows and columns at the top

## Compare
**r** the lab report on the compared runs · **esc** back

## Queue
**enter** open the run · **h** hold · **u** release · **p** move to front · **x** cancel · **esc** back

## New run / sweep
tab between fields, errors show under the field · **ctrl+s** queue · **esc** cancel
"""


class HelpScreen(Screen):
    BINDINGS = [Binding("escape", "app.pop_screen", "Back", id="help-back"), Binding("question_mark", "app.pop_screen", "Back", show=False)]

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll():
            yield Markdown(HELP)
        yield KeyBar()
