"""The queue: running and waiting work in order, its devices, and the machine's load."""

from __future__ import annotations

import time

from textual import on, work
from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import DataTable, Header, Static
from textual.worker import get_current_worker

from db.vocabulary import RUNNING
from leuktui.actions import bindings
from leuktui.cells import progress_cell, refill, status_cell
from leuktui.formatting import age
from leuktui.messages import PollFailed, QueueState
from leuktui.widgets.device_strip import DeviceStrip
from leuktui.widgets.keybar import KeyBar
from runner import control

# How often the backends are asked about their jobs (a batch system's commands are slow).
JOBS_POLL_SECONDS = 3.0


def device_cell(run, job: str | None) -> str:
    """Where a run trains: its device, or for a backend's job that backend's word on it."""
    if job:
        return f"{run.backend} {job}"
    return run.device or "-"


COLUMNS = ("#", "id", "name", "status", "device", "epoch", "priority", "age")


class QueueScreen(Screen):
    BINDINGS = bindings("queue")

    def __init__(self) -> None:
        super().__init__()
        self._shown: list[tuple] | None = None
        self._jobs: dict = {}
        self._jobs_at = 0.0

    def compose(self) -> ComposeResult:
        yield Header()
        yield DeviceStrip(id="devices")
        yield Static("", id="scheduler-state")
        yield DataTable(id="queue", cursor_type="row", zebra_stripes=True)
        yield KeyBar()

    def on_mount(self) -> None:
        table = self.query_one("#queue", DataTable)
        refill(table, COLUMNS, [])
        table.focus()
        self.poll()

    @work(thread=True, exclusive=True, group="queue-poll", exit_on_error=False)
    def poll(self) -> None:
        from runner.daemon import running_pid

        worker = get_current_worker()
        strip = self.query_one("#devices", DeviceStrip)
        while not worker.is_cancelled:
            try:
                runs = self.app.db.queue()
                pid = running_pid(self.app.workspace)
                devices = (self.app.device_reader or strip.sample)()
                self.post_message(QueueState(runs, pid, devices, self.batch_jobs(runs)))
            except Exception as exc:  # shown, then tried again
                self.post_message(PollFailed(str(exc)))
            self.app.nap(1.0)

    def on_queue_state(self, message: QueueState) -> None:
        self.show(message.runs, message.pid, message.devices, message.jobs)

    def batch_jobs(self, runs) -> dict:
        """The backends' word on their runs; asked at most every few seconds."""
        if not any(run.backend not in (None, "local") for run in runs):
            return {}
        if time.monotonic() - self._jobs_at > JOBS_POLL_SECONDS:
            from runner.jobs import describe_jobs

            self._jobs, self._jobs_at = describe_jobs(self.app.workspace, runs), time.monotonic()
        return self._jobs

    def show(self, runs, pid, devices, jobs=None) -> None:
        self.query_one("#devices", DeviceStrip).update(devices)
        self.query_one("#scheduler-state", Static).update(
            (f"scheduler running (pid {pid})" if pid else "scheduler not running — it starts when work is queued")
            + ("" if runs else "\nnothing queued or running: a new run (n on the runs screen) or `leuktui queue` adds one")
        )
        jobs = jobs or {}
        rows = [
            (str(position), str(run.id), run.name, status_cell(run), device_cell(run, jobs.get(run.id)), progress_cell(run),
             str(run.priority), age(run.created_at, self.app.clock()))
            for position, run in enumerate(runs, start=1)
        ]
        if rows == self._shown:
            return  # the same picture: no repaint every second
        self._shown = rows
        table = self.query_one("#queue", DataTable)
        current, cursor = self.current(), table.cursor_row
        refill(table, COLUMNS, rows, keys=[row[1] for row in rows])
        if rows:  # the cursor stays on its run when the order changes, else on its row
            ids = [row[1] for row in rows]
            table.move_cursor(row=ids.index(str(current)) if str(current) in ids else min(cursor, len(rows) - 1))

    @on(DataTable.RowSelected, "#queue")
    def _open(self, event: DataTable.RowSelected) -> None:
        self.app.open_run(int(event.row_key.value))

    def current(self) -> int | None:
        table = self.query_one("#queue", DataTable)
        if not table.row_count:
            return None
        return int(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

    def _operate(self, name: str) -> None:
        run_id = self.current()
        if run_id is None:
            return
        operation = getattr(control, name)
        self.app.run_task(name, lambda: operation(self.app.db, run_id), done=lambda _r: self.notify(f"run {run_id}: {name}"))

    def action_hold(self) -> None:
        self._operate("hold")

    def action_release(self) -> None:
        self._operate("release")

    def action_prioritize(self) -> None:
        self._operate("prioritize")

    def action_cancel_run(self) -> None:
        """A waiting run is cancelled at once; a running one after a yes (it checkpoints, then stops)."""
        run_id = self.current()
        run = self.app.runs.get(run_id) if run_id is not None else None
        if run is not None and run.status == RUNNING:
            from leuktui.screens.dialogs import ConfirmScreen

            self.app.push_screen(ConfirmScreen(f"Stop run {run_id}? It checkpoints, then stops."),
                                 lambda yes: yes and self._operate("cancel"))
        else:
            self._operate("cancel")
