"""The scheduler daemon: works the queue of one workspace.

One per workspace (a file lock), detached in its own session with its own log, so it and its
workers outlive the terminal, the SSH session and the app. Each pass it reaps finished workers,
stops runs whose cancel was requested, fails runs that stopped heartbeating, and starts queued
runs on free devices. On start it reconciles: a run marked running whose process is gone becomes
``interrupted`` (resumable); one whose worker still lives is adopted. It exits after an idle
period and is started again on demand. The database is its only channel to everything else.

Where runs go is its backend: local subprocesses, or Slurm batch jobs (``engine.slurm``). With a
shared database (PostgreSQL) each host runs its own scheduler and a run is supervised by exactly
one: the one that moved it from queued to running (compare-and-set) — for a local worker the
scheduler of the run's ``host``, for a batch job the one the job names as its submitter. A run
whose host died is ended ``interrupted`` by any other scheduler once its heartbeat is
``HOST_DEAD_SECONDS`` old.

Light: no torch here; workers (``python -m engine.worker RUN_ID``) import it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from sqlalchemy.exc import DBAPIError

from db import Database, DatabaseError, Workspace, states
from db.dialect import sqlite_path
from db.models import Run
from db.workspace import apply_file_mode, file_permissions
from engine.errors import UserError
from engine.files import atomic_write
from engine.processes import is_alive, is_worker, process_start_time

LOCK_FILE = "scheduler.lock"
LOG_FILE = "scheduler.log"
OPTIONS_FILE = "scheduler.json"
POLL_SECONDS = 0.5
HEARTBEAT_STALE_SECONDS = 12.0   # workers beat every 2 s; a killed worker is failed within 15 s
STARTUP_GRACE_SECONDS = 120.0    # importing torch and decoding data come before the first beat
CANCEL_GRACE_SECONDS = 20.0      # SIGTERM, then SIGKILL after this long
LOG_TAIL_LINES = 8
# A running run not beating for this long while its supervising host is elsewhere: that host is gone.
HOST_DEAD_SECONDS = 60.0

log = logging.getLogger("leuktui.scheduler")


@dataclass
class Options:
    max_parallel: int = 1        # concurrent runs on a host without GPUs (and CPU runs beside GPUs)
    per_gpu: int = 1             # concurrent runs per GPU (small models can share)
    idle_timeout: float = 300.0  # exit after this long with nothing queued or running
    backend: str = "local"       # where runs go: local subprocesses, or Slurm batch jobs
    partition: str | None = None  # the Slurm partition (default: the cluster's default)
    sbatch_args: list[str] = field(default_factory=list)  # more sbatch options, e.g. --time=2:00:00

    def save(self, workspace: Workspace) -> None:
        with atomic_write(workspace.home / OPTIONS_FILE, "w") as out:
            out.write(json.dumps(asdict(self)))

    @classmethod
    def load(cls, workspace: Workspace) -> Options:
        try:
            return cls(**json.loads((workspace.home / OPTIONS_FILE).read_text()))
        except (OSError, ValueError, TypeError):
            return cls()


def detect_gpus() -> list[int]:
    """GPU indices: ``$LEUKTUI_GPUS`` (e.g. ``0,1``; empty for none), else NVML, else nvidia-smi."""
    override = os.environ.get("LEUKTUI_GPUS")
    if override is not None:
        try:
            gpus = [int(part) for part in override.split(",") if part.strip()]
        except ValueError:
            raise UserError(f"LEUKTUI_GPUS={override!r}: expected GPU indices such as 0,1 (or empty for none)") from None
        if any(gpu < 0 for gpu in gpus):
            raise UserError(f"LEUKTUI_GPUS={override!r}: GPU indices are 0 or more")
        return gpus
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return list(range(pynvml.nvmlDeviceGetCount()))
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no NVML library, no driver: fall through to nvidia-smi
        pass
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10).stdout
            return [i for i, line in enumerate(line for line in listing.splitlines() if line.startswith("GPU "))]
        except (OSError, subprocess.SubprocessError):
            pass
    return []


# -- dispatch backends ------------------------------------------------------------------------------


@dataclass
class Handle:
    run_id: int
    pid: int
    device: str
    started: float
    process: subprocess.Popen | None = None  # None for a worker adopted after a restart
    pid_started_at: float | None = None
    term_sent: float | None = None
    kill_sent: bool = False
    job_id: str | None = None    # the batch system's id for it
    backend: str = "local"
    waiting: bool = False        # queued in the batch system: no worker, no heartbeat yet
    detail: str = ""             # the batch system's word on it (state, node)
    end_status: str | None = None  # set by a backend that knows how the run should end, and why
    end_reason: str | None = None


class Backend(Protocol):
    """Where workers run: local subprocesses (``LocalBackend``) or Slurm jobs (``engine.slurm``)."""

    name: str

    def supervisor(self, job_id: str) -> str | None:
        """For a batch system: the host whose scheduler submitted the job; None if it is gone."""

    def start(self, run_id: int, device: str, env: dict[str, str]) -> Handle: ...

    def poll(self, handle: Handle) -> int | None:
        """The exit status once the worker has ended (-signal if killed), else None."""

    def cancel(self, handle: Handle, *, force: bool = False) -> None:
        """Ask the worker to stop after its current step; ``force`` kills it."""

    def reap(self, handle: Handle) -> None:
        """Wait briefly for a killed worker to be gone, so no zombie is left behind."""


class LocalBackend:
    """Workers as local subprocesses: an argument list (never a shell), output to the run's log."""

    name = "local"

    def __init__(self, workspace: Workspace):
        self.workspace = workspace

    def start(self, run_id: int, device: str, env: dict[str, str]) -> Handle:
        log_path = self.workspace.log_path(run_id)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "engine.worker", str(run_id), "--home", str(self.workspace.home)]
        with log_path.open("ab") as output:
            process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                env={**clean_env(), **env}, cwd=log_path.parent, start_new_session=True, close_fds=True,
            )
        return Handle(run_id, process.pid, device, time.time(), process, pid_started_at=process_start_time(process.pid))

    def poll(self, handle: Handle) -> int | None:
        if handle.process is not None:
            return handle.process.poll()
        return None if is_alive(handle.pid, handle.pid_started_at) else -signal.SIGKILL

    def cancel(self, handle: Handle, *, force: bool = False) -> None:
        if handle.process is None and not is_alive(handle.pid, handle.pid_started_at):
            return  # an adopted worker that is gone: its pid may be someone else's by now
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(handle.pid, signal.SIGKILL if force else signal.SIGTERM)

    def reap(self, handle: Handle) -> None:
        if handle.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                handle.process.wait(timeout=5)


def make_backend(workspace: Workspace, options: Options, host: str) -> Backend:
    if options.backend == "slurm":
        from engine.slurm import SlurmBackend

        return SlurmBackend(workspace, partition=options.partition, sbatch_args=options.sbatch_args, host=host)
    return LocalBackend(workspace)


# -- the scheduler ------------------------------------------------------------------------------------


def clean_env() -> dict[str, str]:
    """The environment for our own child processes: they start in a folder of the workspace, and
    with PYTHONSAFEPATH neither that folder nor the user's one can put a ``db/`` or ``engine/``
    package before ours on ``sys.path``."""
    return {**os.environ, "PYTHONSAFEPATH": "1"}


def file_time(path: Path) -> float:
    """A file's modification time, or 0 if it is not there."""
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 16384))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class Scheduler:
    workspace: Workspace
    db: Database
    options: Options = field(default_factory=Options)
    backend: Backend | None = None
    gpus: list[int] = field(default_factory=detect_gpus)
    handles: dict[int, Handle] = field(default_factory=dict)
    host: str = field(default_factory=socket.gethostname)
    stopping: bool = False

    def __post_init__(self) -> None:
        self.backend = self.backend or make_backend(self.workspace, self.options, self.host)
        self.backends: dict[str, Backend] = {self.backend.name: self.backend}

    def backend_named(self, name: str | None) -> Backend:
        """The backend that runs (or ran) a run; adopted Slurm jobs keep Slurm's even after a switch."""
        name = name or "local"
        if name not in self.backends:
            self.backends[name] = make_backend(self.workspace, Options(backend=name), self.host)
        return self.backends[name]

    # -- devices ----------------------------------------------------------------------------

    def slots(self) -> dict[str, int]:
        """Free capacity per device name."""
        if self.backend.name == "slurm":
            return {"slurm": sys.maxsize}  # Slurm queues the jobs and places them
        free = {f"cuda:{gpu}": self.options.per_gpu for gpu in self.gpus}
        free["cpu"] = self.options.max_parallel
        for handle in self.handles.values():
            free[handle.device] = free.get(handle.device, 0) - 1
        return free

    def place(self, run: Run, free: dict[str, int]) -> str | None:
        wanted = str(run.config.get("device", "auto"))
        if "slurm" in free:
            return wanted
        if wanted == "cpu" or not self.gpus:
            return "cpu" if free["cpu"] > 0 else None
        if wanted.startswith("cuda:"):
            return wanted if free.get(wanted, 0) > 0 else None
        gpu_slots = {name: n for name, n in free.items() if name != "cpu" and n > 0}
        return max(gpu_slots, key=lambda name: (gpu_slots[name], -int(name.split(":")[1]))) if gpu_slots else None

    def worker_env(self, device: str) -> dict[str, str]:
        if device == "cpu":
            threads = max(1, (os.cpu_count() or 1) // max(1, self.options.max_parallel))
            env = {"LEUKTUI_DEVICE": "cpu", "LEUKTUI_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
            if self.gpus:
                env["CUDA_VISIBLE_DEVICES"] = ""
            return env
        return {"LEUKTUI_DEVICE": "cuda", "CUDA_VISIBLE_DEVICES": device.split(":")[1]}

    # -- one pass ---------------------------------------------------------------------------

    def reconcile(self) -> None:
        """Adopt live workers of this host; runs whose process is gone become interrupted."""
        for run in self.db.list_runs(statuses=["running"]):
            if run.backend not in (None, "local") and run.job_id:
                self.adopt_job(run)
                continue
            if run.host not in (None, self.host):
                continue  # another machine's run in a shared database
            if is_worker(run.pid, run.id, run.pid_started_at):
                self.handles[run.id] = Handle(run.id, run.pid, run.device or "cpu", run.started_at or time.time(),
                                              pid_started_at=run.pid_started_at)
                log.info("adopted run %d (pid %d)", run.id, run.pid)
            elif is_alive(run.pid, run.pid_started_at):
                log.info("run %d trains in the foreground (pid %d); leaving it be", run.id, run.pid)
            else:
                states.finish(self.db, run.id, "interrupted",
                              error="the worker was gone when the scheduler started; resume to continue")
                log.info("run %d was running without a worker: interrupted", run.id)

    def adopt_job(self, run: Run) -> None:
        """Supervise a batch job again if this host's scheduler submitted it; a forgotten job's run
        is interrupted."""
        supervisor = self.backend_named(run.backend).supervisor(run.job_id)
        if supervisor is None:
            states.finish(self.db, run.id, "interrupted",
                          error=f"{run.backend} job {run.job_id} was gone when the scheduler started; resume to continue")
            log.info("run %d: %s job %s gone: interrupted", run.id, run.backend, run.job_id)
        elif supervisor.split(".")[0] == self.host.split(".")[0]:
            self.handles[run.id] = Handle(run.id, 0, run.device or run.backend, time.time(), job_id=run.job_id, backend=run.backend)
            log.info("adopted run %d (%s job %s)", run.id, run.backend, run.job_id)

    def reap(self) -> None:
        for run_id, handle in list(self.handles.items()):
            code = self.backend_named(handle.backend).poll(handle)
            if code is None:
                continue
            del self.handles[run_id]
            run = self.db.get_run(run_id)
            if run.status != "running":
                if run.status == "cancelled" and handle.end_reason and not run.cancel_requested_at and not run.error:
                    # Stopped from outside (scancel, a time limit): the worker saw only SIGTERM.
                    self.db.update_run(run_id, when_status=("cancelled",), error=handle.end_reason)
                log.info("run %d ended: %s", run_id, run.status)
                continue
            now = time.time()
            if handle.term_sent is not None:
                states.finish(self.db, run_id, "cancelled", finished_at=now)
                log.info("run %d cancelled (worker ended with %s)", run_id, code)
                continue
            if handle.end_reason is not None:
                to = handle.end_status or "failed"
                reason = handle.end_reason if handle.end_status else f"{handle.end_reason}, without ending the run"
            else:
                to = "failed"
                reason = "worker " + (f"killed by signal {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}")
            tail = log_tail(self.workspace.log_path(run_id)) if to == "failed" else ""
            states.finish(self.db, run_id, to, finished_at=now, error=reason + (f"\n{tail}" if tail else ""))
            log.info("run %d %s: %s", run_id, to, reason)

    def enforce(self) -> None:
        """Stop cancelled runs (SIGTERM, then SIGKILL) and fail runs that stopped heartbeating."""
        now = time.time()
        for run in self.db.list_runs(statuses=["running"]):
            handle = self.handles.get(run.id)
            if handle is None:
                self.expire(run, now)
                continue
            backend = self.backend_named(handle.backend)
            if run.cancel_requested_at and handle.term_sent is None:
                backend.cancel(handle)
                handle.term_sent = now
                log.info("run %d: cancel requested, SIGTERM sent", run.id)
            elif handle.term_sent is not None and not handle.kill_sent and now - handle.term_sent > CANCEL_GRACE_SECONDS:
                backend.cancel(handle, force=True)
                handle.kill_sent = True
                log.info("run %d: no exit %.0f s after SIGTERM, SIGKILL sent", run.id, CANCEL_GRACE_SECONDS)
            if handle.waiting:
                # Queued in the batch system: this scheduler vouches for the run until its worker beats.
                handle.started = now
                if now - (run.heartbeat_at or 0) > HEARTBEAT_STALE_SECONDS / 2:
                    self.db.update_run(run.id, when_status=("running",), heartbeat_at=now, phase=f"waiting in {handle.backend}: {handle.detail}")
                continue
            if run.phase and run.phase.startswith("waiting in "):  # the batch system started it
                self.db.update_run(run.id, when_status=("running",), phase="starting")
            # The database's beat, or the file the worker touches (which no slow write can delay).
            beat = max(run.heartbeat_at or 0.0, file_time(self.workspace.heartbeat_path(run.id)))
            started_beating = beat > handle.started + 0.001
            limit = HEARTBEAT_STALE_SECONDS if started_beating else STARTUP_GRACE_SECONDS
            silent = now - max(beat, handle.started)
            if handle.term_sent is None and silent > limit:
                backend.cancel(handle, force=True)
                backend.reap(handle)
                del self.handles[run.id]
                states.finish(self.db, run.id, "failed", finished_at=now,
                              error=f"no heartbeat for {silent:.0f} s (stopped, hung, or its training stalled); worker killed")
                log.info("run %d failed: no heartbeat for %.0f s", run.id, silent)

    def expire(self, run: Run, now: float) -> None:
        """End, as interrupted, a run of another host that stopped beating: that host is gone."""
        if run.host in (None, self.host):
            return
        silent = now - (run.heartbeat_at or run.started_at or now)
        if silent < HOST_DEAD_SECONDS:
            return
        if states.finish(self.db, run.id, "interrupted",
                         error=f"no heartbeat for {silent:.0f} s from host {run.host}, whose scheduler supervised it; resume to continue"):
            log.info("run %d of host %s interrupted: no heartbeat for %.0f s", run.id, run.host, silent)
            if run.backend not in (None, "local") and run.job_id:
                with contextlib.suppress(Exception):  # the job may be long gone with its host
                    self.backend_named(run.backend).cancel(Handle(run.id, 0, run.device or "", now, job_id=run.job_id, backend=run.backend))

    def dispatch(self) -> None:
        free = self.slots()
        for run in self.db.queue():
            if run.status != "queued":
                continue
            device = self.place(run, free)
            if device is None:
                continue
            now = time.time()
            if not states.move(self.db, run.id, "running", only_from=("queued",), device=device, host=self.host,
                               started_at=now, heartbeat_at=now, finished_at=None, error=None, cancel_requested_at=None,
                               phase="starting"):
                continue  # cancelled or held between the read and now
            try:
                handle = self.backend.start(run.id, device, self.worker_env(device) if self.backend.name == "local" else {})
            except (OSError, UserError) as exc:
                states.finish(self.db, run.id, "failed", error=f"could not start the worker: {exc}")
                log.info("run %d failed to start: %s", run.id, exc)
                continue
            handle.started = now
            self.handles[run.id] = handle
            recorded = {"backend": handle.backend, "job_id": handle.job_id, "device": handle.device}
            if handle.pid:
                recorded.update(pid=handle.pid, pid_started_at=handle.pid_started_at)
            self.db.update_run(run.id, **recorded)
            free[handle.device if handle.device in free else device] -= 1
            log.info("run %d started on %s (%s)", run.id, handle.device,
                     f"{handle.backend} job {handle.job_id}" if handle.job_id else f"pid {handle.pid}")

    def tick(self) -> None:
        self.reap()
        self.enforce()
        if not self.stopping:
            self.dispatch()

    def has_work(self) -> bool:
        return bool(self.handles) or any(run.status == "queued" for run in self.db.queue())

    def serve(self) -> None:
        self.reconcile()
        idle_since = time.time()
        while not self.stopping:
            try:
                self.tick()
            except DatabaseError as exc:  # a stopped process holding the write lock
                log.warning("%s; trying again", exc)
                time.sleep(POLL_SECONDS)
                continue
            except DBAPIError as exc:
                if not exc.connection_invalidated:
                    raise
                # A database server that restarted: the pool reconnects on the next pass.
                log.warning("lost the database connection (%s); trying again", " ".join(str(exc.orig).split()))
                time.sleep(POLL_SECONDS)
                continue
            if self.has_work():
                idle_since = time.time()
            elif time.time() - idle_since > self.options.idle_timeout:
                log.info("idle for %.0f s; exiting", self.options.idle_timeout)
                return
            time.sleep(POLL_SECONDS)
        log.info("stopping; %d worker(s) keep running and will be adopted on the next start", len(self.handles))


# -- the single instance ------------------------------------------------------------------------------


def lock_path(workspace: Workspace) -> Path:
    """One scheduler per workspace; with a shared database server, one per host of it."""
    if sqlite_path(workspace.db_url) is not None:
        return workspace.home / LOCK_FILE
    return workspace.home / f"scheduler.{socket.gethostname()}.lock"


def pid_path(workspace: Workspace) -> Path:
    """Beside its lock: with a shared database server, one per host."""
    return lock_path(workspace).with_suffix(".pid")


def running_pid(workspace: Workspace) -> int | None:
    """The live scheduler's pid (-1 if it has not written it yet), or None. The lock, not the pid
    file, is the truth."""
    from filelock import FileLock, Timeout  # here, not at the top: off the app's start-up path

    probe = FileLock(lock_path(workspace), mode=file_permissions())
    try:
        probe.acquire(timeout=0)
    except Timeout:
        try:
            text = pid_path(workspace).read_text().strip()
        except OSError:
            return -1
        return int(text) if text.isdigit() else -1
    probe.release()
    return None


def start_detached(workspace: Workspace, options: Options | None = None, *, wait: float = 10.0) -> int:
    """Start the scheduler in its own session unless one is running; return its pid."""
    pid = running_pid(workspace)
    if pid:
        return pid
    workspace.ensure()
    if options is not None:
        options.save(workspace)
    argv = [sys.executable, "-m", "engine.scheduler", "--home", str(workspace.home)]
    with (workspace.home / LOG_FILE).open("ab") as output:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                                   env=clean_env(), cwd=workspace.home,
                                   start_new_session=True, close_fds=True)
    deadline = time.time() + wait
    while time.time() < deadline:
        pid = running_pid(workspace)
        if pid:
            return pid
        if process.poll() is not None:  # lost a race with another starter, or failed
            pid = running_pid(workspace)
            if pid:
                return pid
            raise RuntimeError(f"the scheduler exited at once; see {workspace.home / LOG_FILE}")
        time.sleep(0.05)
    raise RuntimeError(f"the scheduler did not start within {wait:.0f} s; see {workspace.home / LOG_FILE}")


def stop(workspace: Workspace, *, wait: float = 10.0) -> int | None:
    """Ask the running scheduler to exit; workers keep running. Returns the pid it had."""
    pid = running_pid(workspace)
    if not pid or pid < 0:
        return None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.time() + wait
    while time.time() < deadline and running_pid(workspace):
        time.sleep(0.05)
    return pid


def serve(workspace: Workspace, options: Options) -> int:
    """Run the scheduler in this process while holding the workspace lock."""
    from filelock import FileLock, Timeout

    workspace.ensure()
    lock = FileLock(lock_path(workspace), mode=file_permissions())
    try:
        # A status probe holds the lock for a moment; only a lock held for a second is a scheduler.
        lock.acquire(timeout=1.0, poll_interval=0.05)
    except Timeout:
        log.info("another scheduler holds %s; exiting", lock_path(workspace))
        return 0
    try:
        with atomic_write(pid_path(workspace), "w") as out:
            out.write(str(os.getpid()))
        scheduler = Scheduler(workspace, Database(workspace.db_url), options)

        def request_stop(signum, _frame) -> None:
            scheduler.stopping = True

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        log.info("scheduler %d on %s (%s): backend %s, gpus %s, max_parallel %d, per_gpu %d, idle %.0f s",
                 os.getpid(), workspace.home, scheduler.host, scheduler.backend.name, scheduler.gpus or "none",
                 options.max_parallel, options.per_gpu, options.idle_timeout)
        scheduler.serve()
    finally:
        pid_path(workspace).unlink(missing_ok=True)
        lock.release()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.scheduler", description="leuktui's queue scheduler")
    parser.add_argument("--home", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stdout)
    apply_file_mode()
    workspace = Workspace.resolve(args.home)
    return serve(workspace, Options.load(workspace))


if __name__ == "__main__":
    sys.exit(main())
