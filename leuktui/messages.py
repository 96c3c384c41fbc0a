"""Every message the app's threads post to its screens and widgets, in one module: a poll's
news, a failed poll, and a background job's progress and result."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from textual.message import Message

from db.models import Epoch, Evaluation, Run


@dataclass
class RunsUpdated(Message):
    """Runs created or changed since the last poll, and ids that disappeared."""

    changed: list[Run]
    removed: set[int] = field(default_factory=set)
    initial: bool = False
    partial: bool = False  # the newest runs only, shown while the rest load


@dataclass
class PollFailed(Message):
    """A poll could not read; it is shown, and the poll tries again."""

    error: str


@dataclass
class QueueState(Message):
    """The queue, the scheduler's pid and the devices, as last read; only the newest matters."""

    runs: list
    pid: int | None
    devices: object
    jobs: dict  # the backends' word on their runs (``Backend.describe``)

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, QueueState)


@dataclass
class StudiesState(Message):
    """Every study's overview (``runner.studies.overview``) and importances, as last read."""

    summaries: list
    importances: dict

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, StudiesState)


@dataclass
class DetailData(Message):
    """What changed for the open run since the last poll."""

    run: Run
    epochs: list[Epoch] = field(default_factory=list)
    steps: list[tuple[int, float]] = field(default_factory=list)
    evaluations: list[Evaluation] | None = None
    log_lines: list[str] = field(default_factory=list)
    reset: bool = False


class RunGone(Message):
    """The open run no longer exists."""


@dataclass
class JobProgress(Message):
    """A dialog's background job moved: ``done`` of ``total`` (None: not known yet), doing ``what``."""

    done: int
    total: int | None
    what: str = ""


@dataclass
class JobFinished(Message):
    """A dialog's background job ended: its result, or the one-line error that stopped it."""

    result: Any = None
    error: str | None = None
