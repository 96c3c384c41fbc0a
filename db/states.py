"""The only writer of a run's status.

Every change is compare-and-set against the statuses that may lead to the target (the table in
``db.vocabulary.TRANSITIONS``): two processes racing to move one run cannot both win, and no
caller can make a move the table does not allow. The scheduler, the worker, the CLI and the app
all call ``move``; a test fails if any other module writes ``status``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from db.api import Database
from db.errors import LeuktuiError
from db.vocabulary import FINISHED_STATUSES, RUN_STATUSES, RUNNING, TRANSITIONS, sources_of


class TransitionError(LeuktuiError, ValueError):
    """A move the state table does not allow at all (a bug in the caller, not a race)."""


def move(db: Database, run_id: int, to: str, *, only_from: Iterable[str] | None = None, **values: Any) -> bool:
    """Set run ``run_id`` to status ``to`` with ``values`` if its status allows it right now.

    ``only_from`` narrows the allowed sources further (every one must be a legal source).
    Returns False, changing nothing, when the run's current status is not one of them.
    """
    if to not in RUN_STATUSES:
        raise TransitionError(f"{to!r} is not a run status")
    legal = sources_of(to)
    sources = legal if only_from is None else tuple(only_from)
    illegal = [source for source in sources if to not in TRANSITIONS.get(source, ())]
    if illegal:
        raise TransitionError(f"a run cannot go from {', '.join(illegal)} to {to}")
    if to in FINISHED_STATUSES:
        values.setdefault("finished_at", time.time())
    return db.compare_and_set_status(run_id, sources, to, **values)


def finish(db: Database, run_id: int, to: str, *, error: str | None = None, **values: Any) -> bool:
    """End a running run as ``to`` (completed, failed, cancelled or interrupted)."""
    if to not in FINISHED_STATUSES:
        raise TransitionError(f"{to!r} is not a final status")
    return move(db, run_id, to, only_from=(RUNNING,), error=error, pid=None, phase=None, **values)
