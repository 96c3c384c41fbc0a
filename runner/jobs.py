"""What the backends say about their runs' jobs, for ``queue ls`` and the Queue screen."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from db import Workspace
from db.errors import UserError
from runner.backends import make_backend
from runner.options import Options


def describe_jobs(workspace: Workspace, runs: Sequence[Any]) -> dict[int, str]:
    """``{run id: words}`` from each backend (``Backend.describe``) of the runs given; a backend
    that cannot be loaded or asked says so in its runs' cells instead."""
    by_backend: dict[str, list[Any]] = {}
    for run in runs:
        if run.backend and run.backend != "local":
            by_backend.setdefault(run.backend, []).append(run)
    if not by_backend:
        return {}
    try:
        options = Options.load(workspace)
    except UserError:
        options = Options()
    cells: dict[int, str] = {}
    for name, its_runs in by_backend.items():
        try:
            backend = make_backend(workspace, name, options.settings if options.backend == name else {})
            cells.update(backend.describe(its_runs))
        except UserError as exc:
            cells.update({run.id: f"unknown ({exc})" for run in its_runs})
    return cells
