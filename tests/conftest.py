"""Shared fixtures: a tiny synthetic dataset, a fresh workspace, a CLI runner, and the databases
the database tests run on (SQLite, and the PostgreSQL server tests/services/postgres.sh starts)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from db import Database, Workspace

# Printed by tests/services/up.sh; `make test` passes it on.
PG_URL_VARIABLE = "LEUKTUI_TEST_PG_URL"

TINY = {"n_train": 48, "n_valid": 24, "n_test": 16, "size": 40, "seed": 7}

# The network of the tests of processes rather than of learning (tests/support/leuktui_test_nets.py):
# a user's plug-in, allowed and importable in every process a test starts.
SUPPORT = Path(__file__).resolve().parent / "support"
TINY_NET_MODULE = "leuktui_test_nets"
TINY_NET = f"{TINY_NET_MODULE}:tiny"



@contextlib.contextmanager
def fixed_folders(*folders: Path):
    """Hold ``folders`` (fixed paths under /tmp that a picture shows) for this test process: a
    second suite on the same machine (two checkouts, a fresh clone beside a working tree) waits
    here for its turn instead of emptying them under the first one's tests."""
    import fcntl

    with contextlib.ExitStack() as stack:
        for folder in sorted(folders):
            handle = stack.enter_context(open(f"{folder}.lock", "a"))  # noqa: SIM115 (held while inside)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def pytest_configure(config):
    """Under pytest-xdist (``make test`` runs ``-n`` one worker a CPU), each worker and every
    process its tests start keep to a share of the CPUs of their own, with one torch thread a CPU.
    Trainings of two workers side by side on the same cores would each spin OpenMP threads waiting
    for a core the other holds, and cost both of them time (measured: bench/README, make test).
    It runs before numpy or torch is imported here (this module imports neither at its top), so
    their thread pools take the share's size; with more workers than CPUs, workers share a CPU.

    Every process a test starts can also import and run ``TINY_NET`` (the tests' own network), as a
    user's allowed plug-in would be."""
    if str(SUPPORT) not in sys.path:
        sys.path.insert(0, str(SUPPORT))
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join([str(SUPPORT), *(p for p in paths if p != str(SUPPORT))])
    allowed = [m.strip() for m in os.environ.get("LEUKTUI_MODELS", "").split(",") if m.strip()]
    os.environ["LEUKTUI_MODELS"] = ",".join([*(m for m in allowed if m != TINY_NET_MODULE), TINY_NET_MODULE])
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if worker is None or count < 2 or not hasattr(os, "sched_setaffinity"):
        return
    cpus = sorted(os.sched_getaffinity(0))
    index = int(worker.removeprefix("gw"))
    share = set(cpus[index % count::count]) if len(cpus) >= count else {cpus[index % len(cpus)]}
    os.sched_setaffinity(0, share)
    os.environ["OMP_NUM_THREADS"] = str(len(share))  # torch and OpenBLAS read it when they load; children inherit it


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A small dataset in the lab's layout, made once per test session (read-only by convention)."""
    from engine.synth import make_dataset

    return make_dataset(tmp_path_factory.mktemp("data") / "tiny", **TINY)


@pytest.fixture
def workspace(tmp_path) -> Workspace:
    return Workspace(tmp_path / "home").ensure()


@pytest.fixture
def db(workspace):
    database = Database(workspace.db_url)
    yield database
    database.close()


def tiny_config(data_dir: Path, *, fast: bool = False, **overrides):
    """The one tiny run config of the tests: 32 px, batch 16, 2 epochs. ``fast``: 16 px, batch 8,
    no rotation, fp32, NCHW, for the tests of processes rather than of learning."""
    from engine.config import RunConfig

    values = {"data_dir": str(data_dir), "image_size": 32, "batch_size": 16, "epochs": 2, "rotation": 10, "workers": 1}
    if fast:  # channels-last is slower on a CPU at these sizes (a ResNet18 step at 16 px: 230 ms against 180)
        values.update(image_size=16, batch_size=8, rotation=0, amp="off", channels_last=False)
    values.update(overrides)
    return RunConfig.from_dict(values)


@dataclass
class CliResult:
    """What ``leuktui ARGS`` did: its exit status and what it printed."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str


def cli(*args: str, home: Path | None = None, check: bool = True, env: dict | None = None) -> CliResult:
    """Run ``leuktui ARGS`` in this process through ``main(argv)``, as the command does; for the
    tests where no process boundary is under test (``run_cli`` starts a real one)."""
    import io
    import signal

    from leuktui.cli import main

    argv = (["--home", str(home)] if home is not None else []) + list(args)
    saved_env = dict(os.environ)
    saved_umask = os.umask(0o077)
    os.umask(saved_umask)
    saved_signals = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    out, err = io.StringIO(), io.StringIO()
    os.environ.pop("LEUKTUI_HOME", None)
    os.environ.pop("LEUKTUI_DB", None)
    os.environ.update(env or {})
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exc:  # --help, --version
                code = exc.code if isinstance(exc.code, int) else 0
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        os.umask(saved_umask)
        for number, handler in saved_signals.items():
            signal.signal(number, handler)
    result = CliResult(argv, code, out.getvalue(), err.getvalue())
    if check and code != 0:
        raise AssertionError(f"leuktui {' '.join(argv)} exited {code}\n{result.stdout}\n{result.stderr}")
    return result


def run_cli(*args: str, home: Path | None = None, check: bool = True, env: dict | None = None, timeout: float = 300):
    """Run ``python -m leuktui ARGS`` in a real subprocess and return the CompletedProcess."""
    command = [sys.executable, "-m", "leuktui"]
    if home is not None:
        command += ["--home", str(home)]
    command += list(args)
    full_env = {**os.environ, "COLUMNS": "200"}
    full_env.pop("LEUKTUI_HOME", None)
    full_env.pop("LEUKTUI_DB", None)
    full_env.update(env or {})
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


@pytest.fixture(autouse=True)
def no_process_outlives_its_test(tmp_path):
    """Kill what a test started and left running (a scheduler, a worker training on after the app
    that queued it quit, as it should): every process whose command line names the test's own
    folder. A worker left behind would train for minutes beside the tests that follow."""
    import psutil

    yield
    mark = str(tmp_path)
    me = os.getpid()
    for process in psutil.process_iter(["cmdline"]):
        if process.pid != me and any(mark in part for part in process.info["cmdline"] or ()):
            with contextlib.suppress(psutil.Error):
                process.resume()  # a stopped worker dies only once it runs
                process.kill()


@pytest.fixture
def home(tmp_path):
    """A workspace in the test's folder: its scheduler and workers, whose command lines name it,
    are killed when the test ends (``no_process_outlives_its_test``)."""
    return Workspace(tmp_path / "home").ensure()


def service_missing(message: str) -> None:
    """A test service is not there: skip with a line naming it, or fail where ``$CI`` is set."""
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI never skips these tests)", pytrace=False)
    pytest.skip(message)


def postgres_server() -> str:
    """The test server's URL (its ``postgres`` database), or skip/fail naming what is missing."""
    url = os.environ.get(PG_URL_VARIABLE)
    if not url:
        service_missing(f"PostgreSQL test server not available: run tests/services/up.sh and set {PG_URL_VARIABLE}")
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import SQLAlchemyError

    try:
        engine = create_engine(url)
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        engine.dispose()
    except (SQLAlchemyError, ModuleNotFoundError) as exc:
        service_missing(f"PostgreSQL test server at {PG_URL_VARIABLE} not reachable: {' '.join(str(exc).split())[:200]}")
    return url


@pytest.fixture
def pg_url():
    """A fresh, empty database on the PostgreSQL test server, dropped after the test."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    server = postgres_server()
    name = f"leuktui_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """The URL of a new database, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'leuktui.db'}"
    return request.getfixturevalue("pg_url")


def train_trial(db: Database, workspace: Workspace, run_id: int, values, *, end: str | None = None) -> bool:
    """What a worker does for a trial, without the training: claim the run, record each epoch,
    report it to the trial through the worker's own reporter; True if it won the claim."""
    import logging

    from db import states
    from db.vocabulary import COMPLETED, QUEUED, RUNNING
    from engine.studies import TrialReporter

    end = end or COMPLETED
    if not states.move(db, run_id, RUNNING, only_from=(QUEUED,)):
        return False
    run = db.get_run(run_id)
    reporter = TrialReporter(workspace, db.get_sweep(run.sweep_id).study, run.trial, logging.getLogger("test"))
    best = None
    for epoch, value in enumerate(values, start=len(db.epochs(run_id)) + 1):
        row = {"train_loss": 0.5, "train_acc": 0.5, "val_acc": value, "val_loss": 1 - value, "confusion": [[1, 0], [0, 1]]}
        improved = best is None or value > best["val_acc"]
        if improved:
            best = {"epoch": epoch, "val_acc": value}
        db.add_epoch(run_id, epoch, epoch, row, best=best if improved else None)
        reporter.report(epoch, row)
    states.finish(db, run_id, end)
    return True
