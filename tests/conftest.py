"""Shared fixtures: a tiny synthetic dataset, a fresh workspace, and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from db import Database, Workspace
from engine.synth import make_dataset

TINY = {"n_train": 48, "n_valid": 24, "n_test": 16, "size": 40, "seed": 7}


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A small dataset in the lab's layout, made once per test session (read-only by convention)."""
    return make_dataset(tmp_path_factory.mktemp("data") / "tiny", **TINY)


@pytest.fixture
def workspace(tmp_path) -> Workspace:
    return Workspace(tmp_path / "home").ensure()


@pytest.fixture
def db(workspace):
    database = Database(workspace.db_url)
    yield database
    database.close()


def tiny_config(data_dir: Path, **overrides):
    from engine.config import RunConfig

    values = {"data_dir": str(data_dir), "image_size": 32, "batch_size": 16, "epochs": 2, "rotation": 10, "workers": 1}
    values.update(overrides)
    return RunConfig.from_dict(values)


def run_cli(*args: str, home: Path | None = None, check: bool = True, env: dict | None = None, timeout: float = 300):
    """Run ``python -m leuktui ARGS`` in a real subprocess and return the CompletedProcess."""
    command = [sys.executable, "-m", "leuktui"]
    if home is not None:
        command += ["--home", str(home)]
    command += list(args)
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    full_env.pop("LEUKTUI_HOME", None)
    full_env.pop("LEUKTUI_DB", None)
    result = subprocess.run(command, capture_output=True, text=True, env=full_env, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def wait_for(predicate, timeout: float, message: str, interval: float = 0.1):
    """Poll ``predicate`` until it returns something true, and return that; fail after ``timeout``."""
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for: {message}")


@pytest.fixture
def home(tmp_path):
    """A workspace whose scheduler and running workers are killed when the test ends."""
    import contextlib
    import signal

    from engine import scheduler

    workspace = Workspace(tmp_path / "home").ensure()
    yield workspace
    pid = scheduler.running_pid(workspace)
    if pid and pid > 0:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    database = Database(workspace.db_url)
    for run in database.list_runs(statuses=["running"]):
        if run.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(run.pid, signal.SIGCONT)
                os.kill(run.pid, signal.SIGKILL)
    database.close()
