"""Which local process is which: a pid is taken for a run's worker only if its start time matches
the one recorded and it belongs to this user, so a reused pid or another user's process is never
adopted, signalled or waited on; and the environment our child processes start with. psutil, so
it is the same on Linux and macOS.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import psutil

START_TIME_TOLERANCE = 1.0  # seconds; the recorded and the observed start time of one process


def process_start_time(pid: int) -> float | None:
    """The process's start time (UNIX seconds), or None when there is no such process."""
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def _ours(process: psutil.Process) -> bool:
    return process.uids().real == os.getuid()


def is_alive(pid: int | None, started_at: float | None = None) -> bool:
    """A live (not zombie) process of this user with that pid and, when given, that start time."""
    if not pid:
        return False
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE or not _ours(process):
            return False
        return started_at is None or abs(process.create_time() - started_at) <= START_TIME_TOLERANCE
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def is_worker(pid: int | None, run_id: int, started_at: float | None = None) -> bool:
    """``is_alive`` and its command line is a worker of run ``run_id``."""
    if not is_alive(pid, started_at):
        return False
    try:
        argv = psutil.Process(pid).cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    return "engine.worker" in argv and str(run_id) in argv


def torchrun_ranks(pid: int) -> list[int]:
    """The ranks (worker processes) that torchrun ``pid`` started, or none when ``pid`` is not
    torchrun or has not started them yet: a cancel asks them, not torchrun, to stop, so that
    torchrun sees its ranks end well and exits quietly instead of printing a traceback."""
    try:
        process = psutil.Process(pid)
        if "torch.distributed.run" not in process.cmdline():
            return []
        children = process.children()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []
    ranks = []
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            if _ours(child) and "engine.worker" in child.cmdline():
                ranks.append(child.pid)
    return ranks


def clean_env() -> dict[str, str]:
    """The environment for our own child processes: they start in a folder of the workspace, and
    with PYTHONSAFEPATH neither that folder nor the user's one can put a ``db/`` or ``engine/``
    package before ours on ``sys.path``."""
    return {**os.environ, "PYTHONSAFEPATH": "1"}


def holds_open(pid: int | None, path: Path) -> bool:
    """``is_alive`` and the process has ``path`` open: how a scheduler is proven to be the one
    holding a workspace's lock, whatever its pid file says and however it was started."""
    if not is_alive(pid):
        return False
    with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied, OSError):
        target = os.path.realpath(path)
        return any(os.path.realpath(f.path) == target for f in psutil.Process(pid).open_files())
    return False
