"""Small modal dialogs: confirm, and a run's tags and notes."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static, TextArea

from db.models import Run
from leuktui.actions import bindings
from leuktui.cells import plain
from leuktui.formatting import visible
from leuktui.widgets.keybar import KeyBar


class ConfirmScreen(ModalScreen[bool]):
    BINDINGS = bindings("confirm")

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(plain(self.question), classes="dialog-title")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Yes (y)", variant="error", id="yes", compact=True)
                yield Button("No (esc)", id="no", compact=True)
        yield KeyBar()  # the dialog's own keys on the bottom line, not the screen's beneath it

    @on(Button.Pressed, "#yes")
    def _yes(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#no")
    def _no(self) -> None:
        self.dismiss(False)


class TagsScreen(ModalScreen):
    BINDINGS = bindings("tags")

    def __init__(self, run: Run) -> None:
        super().__init__()
        self.run = run

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(plain(f"Tags and notes of run {self.run.id} ({self.run.name})"), classes="dialog-title")
            yield Label("tags (comma-separated)")
            # Shown as text (a control character as its escape, never sent to the terminal as it is).
            yield Input(value=self.shown_tags, id="tags-input", compact=True)
            yield Label("notes")
            yield TextArea(self.shown_notes, id="notes-input")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Save (ctrl+s)", variant="primary", id="tags-save", compact=True)
                yield Button("Cancel", id="tags-cancel", compact=True)
        yield KeyBar()

    @on(Button.Pressed, "#tags-save")
    def _save_pressed(self) -> None:
        self.action_save()

    @on(Button.Pressed, "#tags-cancel")
    def _cancel(self) -> None:
        self.dismiss()

    @on(Input.Submitted, "#tags-input")
    def _submitted(self) -> None:
        self.action_save()

    @property
    def shown_tags(self) -> str:
        return ", ".join(visible(tag) for tag in self.run.tags or [])

    @property
    def shown_notes(self) -> str:
        """The notes as text: lines kept, a control character (an older version's, or planted in
        the database) as its escape, never sent to the terminal."""
        return visible(self.run.notes or "", newlines=True)

    def action_save(self) -> None:
        value = self.query_one("#tags-input", Input).value
        # Unedited, the tags stay exactly as they were (the field shows them as text: a tag with a
        # comma or a control character would not come back the same); edited, each tag once.
        tags = list(self.run.tags or []) if value == self.shown_tags else list(dict.fromkeys(
            t.strip() for t in value.split(",") if t.strip()))
        notes = self.query_one("#notes-input", TextArea).text
        if notes == self.shown_notes:
            notes = self.run.notes or ""  # unedited: as they were, whatever they hold
        run_id = self.run.id
        from engine.config import ConfigError
        from runner.control import check_labels

        try:
            check_labels(None, tags, notes if notes != (self.run.notes or "") else "")
        except ConfigError as exc:
            self.notify(exc.message, title=exc.field, severity="error")
            return
        app = self.app  # the dialog is gone by the time the save is done
        app.run_task("tags", lambda: app.db.update_run(run_id, tags=tags, notes=notes),
                     done=lambda _r: app.notify(f"run {run_id}: tags and notes saved"))
        self.dismiss()
