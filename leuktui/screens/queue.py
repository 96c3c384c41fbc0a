"""The queue: running and waiting work in order, its devices, and the machine's load."""

from __future__ import annotations

import time
from dataclasses import dataclass

from textual import on, work
from textual.app import ComposeResult
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Header, Static
from textual.worker import get_current_worker

from engine import control
from leuktui.actions import bindings
from leuktui.app import PollFailed
from leuktui.cells import progress_cell, refill, status_cell
from leuktui.formatting import age
from leuktui.widgets.device_strip import DeviceStrip
from leuktui.widgets.keybar import KeyBar

SLURM_POLL_SECONDS = 3.0


def device_cell(run, job) -> str:
    """Where a run trains: its device, or for a Slurm job Slurm's state and node."""
    if job is not None:
        from engine.slurm import job_cell

        return f"slurm {job_cell(job)}"
    return run.device or "-"


COLUMNS = ("#", "id", "name", "status", "device", "epoch", "priority", "age")


@dataclass
class QueueState(Message):
    """The queue, the scheduler's pid and the devices, as last read; only the newest matters."""

    runs: list
    pid: int | None
    devices: object
    jobs: dict  # Slurm's word on the runs that are batch jobs

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, QueueState)


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
        from engine.scheduler import running_pid

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
            time.sleep(1.0)

    def on_queue_state(self, message: QueueState) -> None:
        self.show(message.runs, message.pid, message.devices, message.jobs)

    def batch_jobs(self, runs) -> dict:
        """Slurm's state of the runs that are Slurm jobs; asked at most every few seconds."""
        if not any(run.backend == "slurm" for run in runs):
            return {}
        if time.monotonic() - self._jobs_at > SLURM_POLL_SECONDS:
            from engine.slurm import states_of_runs

            self._jobs, self._jobs_at = states_of_runs(runs), time.monotonic()
        return self._jobs

    def show(self, runs, pid, devices, jobs=None) -> None:
        self.query_one("#devices", DeviceStrip).update(devices)
        self.query_one("#scheduler-state", Static).update(
            f"scheduler running (pid {pid})" if pid else "scheduler not running — it starts when work is queued"
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
        self._operate("cancel")
