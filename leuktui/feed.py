"""What the run screen shows, read from the database: ``DetailFeed`` reads what is new for one
run (its row, epochs, steps, evaluations, log lines) from a thread, and hands it over as one
``DetailData`` message. No widgets here; the opener and the screen's poll both use it.
"""

from __future__ import annotations

from pathlib import Path

from db import Database
from db.files import open_regular
from leuktui.messages import DetailData

LOG_TAIL_BYTES = 32_768


class DetailFeed:
    """What is new for one run since the last read: its row, epochs, steps, evaluations and log.

    Used from a thread only, never on the event loop: once to open the run before its screen is
    pushed, then by the screen's poll worker. The first read has everything (``reset``); a long
    run's steps come as an overview bucketed in SQL, then new steps one by one.
    """

    def __init__(self, db: Database, log_path: Path, run_id: int) -> None:
        self.db, self.log_path, self.run_id = db, log_path, run_id
        self.last_epoch = 0
        self.last_step = 0
        self.evaluation_ids: tuple[int, ...] | None = None  # a re-recorded evaluation is a new id, the count the same
        self.log_offset: int | None = None
        self.updated_at: float | None = None
        self.started = False

    def read(self) -> DetailData | None:
        """The changes since the last read, or None when nothing changed. Raises NotFound when
        the run is gone."""
        run = self.db.get_run(self.run_id)
        first = not self.started
        reset = first or run.epochs_done < self.last_epoch  # or resumed from an earlier checkpoint
        if reset:
            self.last_epoch, self.last_step = 0, 0
        epochs = self.db.epochs(self.run_id, after=self.last_epoch)
        steps = self.db.steps_overview(self.run_id) if self.last_step == 0 else self.db.steps(self.run_id, after=self.last_step)
        evaluations = self.db.evaluations(self.run_id)
        lines = self._read_log()
        ids = tuple(e.id for e in evaluations)
        changed_evaluations = evaluations if ids != self.evaluation_ids else None
        self.started = True
        if epochs:
            self.last_epoch = epochs[-1].epoch
        if steps:
            self.last_step = steps[-1][0]
        self.evaluation_ids = ids
        if not (reset or epochs or steps or lines or changed_evaluations is not None or run.updated_at != self.updated_at):
            return None
        self.updated_at = run.updated_at
        return DetailData(run, epochs, steps, changed_evaluations, lines, reset)

    def _read_log(self) -> list[str]:
        """Whole lines appended to the run's log since the last read (the last 32 KiB at first)."""
        try:
            size = self.log_path.stat().st_size
            if self.log_offset is None or size < self.log_offset:
                self.log_offset = max(0, size - LOG_TAIL_BYTES)
            if size <= self.log_offset:
                return []
            with open_regular(self.log_path, "rb") as handle:
                handle.seek(self.log_offset)
                chunk = handle.read(size - self.log_offset)
        except OSError:
            return []
        cut = chunk.rfind(b"\n") + 1
        self.log_offset += cut
        return chunk[:cut].decode("utf-8", "replace").splitlines()
