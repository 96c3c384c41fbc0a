"""The base of the dialogs that run one background job (export, report): fields, a go button,
a progress bar while the job runs in a thread, the result or the error, and a close button."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.screen import ModalScreen
from textual.widgets import Button, ProgressBar, Static

from db import NotFound
from db.errors import UserError
from leuktui.cells import plain
from leuktui.formatting import visible
from leuktui.messages import JobFinished, JobProgress
from leuktui.widgets.keybar import KeyBar


class JobDialog(ModalScreen):
    """Subclasses set ``prefix`` (widget ids ``PREFIX-go``, ``PREFIX-progress``, ...), ``go_label``
    and ``working``; compose their fields then ``yield from self.job_widgets(hint)``; and
    implement ``parameters`` (read on the event loop), ``perform`` (in a thread; ``report`` posts
    progress) and ``finished`` (the line that says what was done)."""

    prefix: ClassVar[str]
    go_label: ClassVar[str] = "Go (ctrl+s)"
    working: ClassVar[str] = "working…"

    def job_widgets(self, hint: str = "") -> ComposeResult:
        yield ProgressBar(id=f"{self.prefix}-progress", show_eta=False)
        yield Static(plain(hint, newlines=True), id=f"{self.prefix}-result")  # it may name the user's files
        with Horizontal(classes="dialog-buttons"):
            yield Button(self.go_label, variant="primary", id=f"{self.prefix}-go", compact=True)
            yield Button("Close", id=f"{self.prefix}-close", compact=True)

    def on_mount(self) -> None:
        self.query_one(f"#{self.prefix}-progress").display = False
        self.mount(KeyBar())  # the dialog's own keys on the bottom line, not the screen's beneath it

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        if event.button.id == f"{self.prefix}-close":
            self.dismiss()
        elif event.button.id == f"{self.prefix}-go":
            self.start_job()

    def start_job(self) -> None:
        button = self.query_one(f"#{self.prefix}-go", Button)
        if button.disabled:
            return
        parameters = self.parameters()
        button.disabled = True
        progress = self.query_one(f"#{self.prefix}-progress", ProgressBar)
        progress.display = True
        progress.update(total=None, progress=0)
        self.query_one(f"#{self.prefix}-result", Static).update(self.working)
        self._run(parameters)

    @work(thread=True, exclusive=True, group="job-dialog", exit_on_error=False)
    def _run(self, parameters: dict[str, Any]) -> None:
        try:
            result = self.perform(parameters, lambda done, total, what="": self.post_message(JobProgress(done, total, what)))
        except (UserError, NotFound, OSError) as exc:
            self.post_message(JobFinished(error=str(exc)))
            return
        self.post_message(JobFinished(result))

    def on_job_progress(self, message: JobProgress) -> None:
        self.query_one(f"#{self.prefix}-progress", ProgressBar).update(total=message.total, progress=message.done)
        if message.what:
            self.query_one(f"#{self.prefix}-result", Static).update(plain(f"{message.what}…"))

    def on_job_finished(self, message: JobFinished) -> None:
        result = self.query_one(f"#{self.prefix}-result", Static)
        self.query_one(f"#{self.prefix}-go", Button).disabled = False
        self.query_one(f"#{self.prefix}-progress").display = False
        title = self.prefix
        if message.error:
            result.update(plain(message.error, style="red", newlines=True))
            self.notify(message.error, title=title, severity="error")
            return
        done, where = self.finished(message.result)
        result.update(Text.assemble((done, "green"), f" {visible(where)}"))
        self.notify(f"{done} {where}", title=title, timeout=10)

    def parameters(self) -> dict[str, Any]:
        raise NotImplementedError

    def perform(self, parameters: dict[str, Any], report) -> Any:
        raise NotImplementedError

    def finished(self, result: Any) -> tuple[str, str]:
        raise NotImplementedError
