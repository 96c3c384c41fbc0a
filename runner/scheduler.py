"""The scheduler loop: works the queue of one workspace (``runner.daemon`` runs it detached).

Each pass it reaps finished workers, stops runs whose cancel
was requested, fails runs that stopped heartbeating, and starts queued runs on free devices. On start it reconciles: a run marked running whose process is gone becomes
``interrupted`` (resumable); one whose worker still lives is adopted. It exits after an idle
period and is started again on demand. The database is its only channel to everything else.

Where runs go is its backend (``runner.backends``): local subprocesses, Slurm batch jobs, or a
backend a third party registered; the loop knows no more of it than the backend declares. With
a shared database (PostgreSQL) each host runs its own scheduler and a run is supervised by exactly
one: the one that moved it from queued to running (compare-and-set) — for a local worker the
scheduler of the run's ``host``, for a batch job the one the job names as its submitter. A run
whose host died is ended ``interrupted`` by any other scheduler once its heartbeat is
``HOST_DEAD_SECONDS`` old.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.exc import DBAPIError

from db import Database, DatabaseError, Workspace, states
from db.errors import UserError
from db.files import open_regular
from db.models import Run
from db.settings import usable_cpus
from db.vocabulary import CANCELLED, FAILED, INTERRUPTED, QUEUED, RUNNING
from runner.backends import Backend, Handle, make_backend
from runner.backends.base import NODES_VARIABLE, NPROC_VARIABLE
from runner.gpus import detect_gpus
from runner.options import Options
from runner.processes import is_alive, is_worker
from runner.studies import StudyDriver

POLL_SECONDS = 0.5
HEARTBEAT_STALE_SECONDS = 12.0   # workers beat every 2 s; a killed worker is failed within 15 s
STARTUP_GRACE_SECONDS = 120.0    # importing torch and decoding data come before the first beat
CANCEL_GRACE_SECONDS = 20.0      # SIGTERM, then SIGKILL after this long
LOG_TAIL_LINES = 8
# A running run not beating for this long while its supervising host is elsewhere: that host is gone.
HOST_DEAD_SECONDS = 60.0

log = logging.getLogger("leuktui.scheduler")


def devices_of(device: str) -> list[str]:
    """``cuda:0,1`` (a run of two processes) -> ``["cuda:0", "cuda:1"]``; ``cpu`` -> ``["cpu"]``."""
    kind, _, numbers = device.partition(":")
    return [f"{kind}:{n}" for n in numbers.split(",")] if numbers else [device]


def file_time(path: Path) -> float:
    """A file's modification time, or 0 if it is not there."""
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with open_regular(path, "rb") as handle:
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
        self.backend = self.backend or make_backend(self.workspace, self.options.backend, self.options.settings, self.host)
        self.backends: dict[str, Backend] = {self.backend.name: self.backend}
        self.studies = StudyDriver(self.db, self.workspace)

    def backend_named(self, name: str | None) -> Backend:
        """The backend that runs (or ran) a run; adopted batch jobs keep theirs even after a switch."""
        name = name or "local"
        if name not in self.backends:
            self.backends[name] = make_backend(self.workspace, name, host=self.host)
        return self.backends[name]

    # -- devices ----------------------------------------------------------------------------

    def slots(self) -> dict[str, int]:
        """Free capacity per device name."""
        if not self.backend.assigns_devices:
            return {self.backend.name: sys.maxsize}  # the batch system queues the jobs and places them
        free = {f"cuda:{gpu}": self.options.per_gpu for gpu in self.gpus}
        free["cpu"] = self.options.max_parallel
        for handle in self.handles.values():
            if handle.device == "cpu":
                free["cpu"] -= handle.slots
            else:
                for name in devices_of(handle.device):  # a DDP run's GPUs: "cuda:0,1"
                    free[name] = free.get(name, 0) - 1
        return free

    def cpu_slots(self, run: Run) -> int:
        """The CPU slots a run takes: one per process, at most all of them (it can run alone)."""
        return max(1, min(int(run.config.get("nproc", 1) or 1), self.options.max_parallel))

    def place(self, run: Run, free: dict[str, int]) -> str | None:
        """Where a run can start now: ``cpu``, ``cuda:N``, or for a run of several processes
        ``cuda:N,M,...`` (that many free GPUs, one per process); None when it must wait."""
        wanted = str(run.config.get("device", "auto"))
        if not self.backend.assigns_devices:
            return wanted
        nproc = int(run.config.get("nproc", 1) or 1)
        if wanted == "cpu" or not self.gpus:
            return "cpu" if free["cpu"] >= self.cpu_slots(run) else None
        if wanted.startswith("cuda:") and nproc == 1:
            return wanted if free.get(wanted, 0) > 0 else None
        gpu_slots = {name: n for name, n in free.items() if name != "cpu" and n > 0}
        if len(gpu_slots) < nproc:
            return None
        chosen = sorted(gpu_slots, key=lambda name: (-gpu_slots[name], int(name.split(":")[1])))[:nproc]
        return "cuda:" + ",".join(str(i) for i in sorted(int(name.split(":")[1]) for name in chosen))

    def batch_env(self, run: Run) -> dict[str, str]:
        """What a batch system's backend is told of a run's processes (it places them itself)."""
        nproc, nodes = int(run.config.get("nproc", 1) or 1), int(run.config.get("nodes", 1) or 1)
        return {NPROC_VARIABLE: str(nproc), NODES_VARIABLE: str(nodes)} if nproc * nodes > 1 else {}

    def worker_env(self, device: str, run: Run | None = None) -> dict[str, str]:
        nproc = int(run.config.get("nproc", 1) or 1) if run is not None else 1
        env = {NPROC_VARIABLE: str(nproc)} if nproc > 1 else {}
        if device == "cpu":
            slots = self.cpu_slots(run) if run is not None else 1
            threads = max(1, usable_cpus() * slots // max(1, self.options.max_parallel))
            env.update({"LEUKTUI_DEVICE": "cpu", "LEUKTUI_THREADS": str(threads), "OMP_NUM_THREADS": str(max(1, threads // nproc))})
            if self.gpus:
                env["CUDA_VISIBLE_DEVICES"] = ""
            return env
        return {**env, "LEUKTUI_DEVICE": "cuda", "CUDA_VISIBLE_DEVICES": device.split(":")[1]}

    # -- one pass ---------------------------------------------------------------------------

    def reconcile(self) -> None:
        """Adopt live workers of this host; runs whose process is gone become interrupted."""
        for run in self.db.list_runs(statuses=[RUNNING]):
            if run.job_id:
                self.adopt_job(run)
                continue
            if run.host not in (None, self.host):
                continue  # another machine's run in a shared database
            if is_worker(run.pid, run.id, run.pid_started_at):
                self.handles[run.id] = Handle(run.id, run.pid, run.device or "cpu", run.started_at or time.time(),
                                              pid_started_at=run.pid_started_at, slots=self.cpu_slots(run))
                log.info("adopted run %d (pid %d)", run.id, run.pid)
            elif is_alive(run.pid, run.pid_started_at):
                log.info("run %d trains in the foreground (pid %d); leaving it be", run.id, run.pid)
            elif run.cancel_requested_at:  # its cancel was asked for: there is nothing left to stop
                states.finish(self.db, run.id, CANCELLED, finished_at=time.time())
                log.info("run %d was cancelling without a worker: cancelled", run.id)
            else:
                states.finish(self.db, run.id, INTERRUPTED,
                              error="the worker was gone when the scheduler started; resume to continue")
                log.info("run %d was running without a worker: interrupted", run.id)

    def adopt_job(self, run: Run) -> None:
        """Supervise a batch job again if this host's scheduler submitted it; a job its backend
        says is gone has its run interrupted. A backend that cannot be asked now (not installed
        here, its commands slow or missing) leaves the run as it is: its heartbeat decides."""
        try:
            supervisor = self.backend_named(run.backend).supervisor(run.job_id)
        except UserError as exc:
            log.warning("run %d: %s job %s not checked (%s); left as it is", run.id, run.backend, run.job_id, exc)
            return
        if supervisor is None:
            if run.host not in (None, self.host):
                return  # another host's job: its own scheduler, or expire(), decides
            states.finish(self.db, run.id, INTERRUPTED,
                          error=f"{run.backend} job {run.job_id} was gone when the scheduler started; resume to continue")
            log.info("run %d: %s job %s gone: interrupted", run.id, run.backend, run.job_id)
            return
        submitter = supervisor or run.host or ""  # "": the backend does not know; the run's host does
        if submitter.split(".")[0] == self.host.split(".")[0]:
            self.handles[run.id] = Handle(run.id, 0, run.device or run.backend, time.time(), job_id=run.job_id, backend=run.backend)
            log.info("adopted run %d (%s job %s)", run.id, run.backend, run.job_id)

    def reap(self) -> None:
        for run_id, handle in list(self.handles.items()):
            code = self.backend_named(handle.backend).poll(handle)
            if code is None:
                continue
            del self.handles[run_id]
            run = self.db.get_run(run_id)
            if run.status != RUNNING:
                if run.status == CANCELLED and handle.end_reason and not run.cancel_requested_at and not run.error:
                    # Stopped from outside (scancel, a time limit): the worker saw only SIGTERM.
                    self.db.update_run(run_id, when_status=(CANCELLED,), error=handle.end_reason)
                log.info("run %d ended: %s", run_id, run.status)
                continue
            now = time.time()
            if handle.term_sent is not None:
                states.finish(self.db, run_id, CANCELLED, finished_at=now)
                log.info("run %d cancelled (worker ended with %s)", run_id, code)
                continue
            if handle.end_reason is not None:
                to = handle.end_status or FAILED
                reason = handle.end_reason if handle.end_status else f"{handle.end_reason}, without ending the run"
            else:
                to = FAILED
                reason = "worker " + (f"killed by signal {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}")
            tail = log_tail(self.workspace.log_path(run_id)) if to == FAILED else ""
            states.finish(self.db, run_id, to, finished_at=now, error=reason + (f"\n{tail}" if tail else ""))
            log.info("run %d %s: %s", run_id, to, reason)

    def enforce(self) -> None:
        """Stop cancelled runs (SIGTERM, then SIGKILL) and fail runs that stopped heartbeating."""
        now = time.time()
        for run in self.db.list_runs(statuses=[RUNNING]):
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
                    self.db.update_run(run.id, when_status=(RUNNING,), heartbeat_at=now, phase=f"waiting in {handle.backend}: {handle.detail}")
                continue
            if run.phase and run.phase.startswith("waiting in "):  # the batch system started it
                self.db.update_run(run.id, when_status=(RUNNING,), phase="starting")
            # The database's beat, or the file the worker touches (which no slow write can delay).
            beat = max(run.heartbeat_at or 0.0, file_time(self.workspace.heartbeat_path(run.id)))
            started_beating = beat > handle.started + 0.001
            limit = HEARTBEAT_STALE_SECONDS if started_beating else STARTUP_GRACE_SECONDS
            silent = now - max(beat, handle.started)
            if handle.term_sent is None and silent > limit:
                backend.cancel(handle, force=True)
                backend.reap(handle)
                del self.handles[run.id]
                states.finish(self.db, run.id, FAILED, finished_at=now,
                              error=f"no heartbeat for {silent:.0f} s (stopped, hung, or its training stalled); worker killed")
                log.info("run %d failed: no heartbeat for %.0f s", run.id, silent)

    def expire(self, run: Run, now: float) -> None:
        """End, as interrupted, a run of another host that stopped beating: that host is gone."""
        if run.host in (None, self.host):
            return
        silent = now - (run.heartbeat_at or run.started_at or now)
        if silent < HOST_DEAD_SECONDS:
            return
        if states.finish(self.db, run.id, INTERRUPTED,
                         error=f"no heartbeat for {silent:.0f} s from host {run.host}, whose scheduler supervised it; resume to continue"):
            log.info("run %d of host %s interrupted: no heartbeat for %.0f s", run.id, run.host, silent)
            if run.job_id:
                with contextlib.suppress(Exception):  # the job may be long gone with its host
                    self.backend_named(run.backend).cancel(Handle(run.id, 0, run.device or "", now, job_id=run.job_id, backend=run.backend))

    def dispatch(self) -> None:
        free = self.slots()
        for run in self.db.queue():
            if run.status != QUEUED:
                continue
            device = self.place(run, free)
            if device is None:
                continue
            if run.trial is not None:
                try:
                    run = self.studies.prepare(run)  # a resumed trial continues as a new Optuna trial, which it must know
                except (DatabaseError, DBAPIError):
                    raise
                except Exception:  # the study's storage: the run trains, unpruned, and the log says why
                    log.exception("run %d: its study's Optuna trial could not be checked", run.id)
            now = time.time()
            if not states.move(self.db, run.id, RUNNING, only_from=(QUEUED,), device=device, host=self.host,
                               started_at=now, heartbeat_at=now, finished_at=None, error=None, cancel_requested_at=None,
                               phase="starting"):
                continue  # cancelled or held between the read and now
            try:
                aside = self.workspace.claim_run_dir(run.id, run.owner, fresh=run.epochs_done == 0)
                if aside is not None:
                    log.info("run %d: the folder of another run record with this id was moved to %s", run.id, aside)
                env = self.worker_env(device, run) if self.backend.assigns_devices else self.batch_env(run)
                handle = self.backend.start(run.id, device, env)
            except (OSError, UserError) as exc:
                states.finish(self.db, run.id, FAILED, error=f"could not start the worker: {exc}")
                log.info("run %d failed to start: %s", run.id, exc)
                continue
            handle.started = now
            handle.slots = self.cpu_slots(run) if device == "cpu" else 1
            self.handles[run.id] = handle
            recorded = {"backend": handle.backend, "job_id": handle.job_id, "device": handle.device}
            if handle.pid:
                recorded.update(pid=handle.pid, pid_started_at=handle.pid_started_at)
            self.db.update_run(run.id, **recorded)
            if self.backend.assigns_devices:
                if device == "cpu":
                    free["cpu"] -= handle.slots
                else:
                    for name in devices_of(device):
                        free[name] -= 1
            log.info("run %d started on %s (%s)", run.id, handle.device,
                     f"{handle.backend} job {handle.job_id}" if handle.job_id else f"pid {handle.pid}")

    def tick(self) -> None:
        self.reap()
        self.enforce()
        if not self.stopping:
            self.studies.tick()
            self.dispatch()

    def has_work(self) -> bool:
        return bool(self.handles) or any(run.status == QUEUED for run in self.db.queue()) or self.studies.wants_trials()

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
