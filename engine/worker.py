"""A worker process: ``python -m engine.worker RUN_ID --home DIR`` trains one queued run.

``execute`` is the one way a run trains: the scheduler's workers and ``leuktui run`` in the
foreground both call it. It records the process (pid and start time), beats a heartbeat every
two seconds that carries the run's phase ("decoding train images 340/600", "epoch 1 step
12/40"), obeys cancel requests from the database, and continues from the run's ``last``
checkpoint when there is one. On SIGTERM the worker finishes the current step, marks the run
cancelled and exits 0. Light at import: torch loads inside ``execute``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from db import Database, Workspace
from db.settings import number_setting, usable_cpus
from db.vocabulary import CANCELLED, COMPLETED, PRUNED, RUNNING
from db.workspace import apply_file_mode
from engine.errors import UserError

HEARTBEAT_SECONDS = 2.0
# A run whose training has not moved (no image decoded, no step, no batch evaluated) for this long
# stops beating, so the scheduler fails it as hung; $LEUKTUI_STALL_SECONDS overrides it.
STALL_SECONDS = 120.0


class Pulse:
    """What the run is doing now, and when it last moved. The trainer sets it many times a second
    (attribute writes only); the heartbeat threads read it."""

    def __init__(self, phase: str = "starting"):
        self.phase = phase
        self.moved_at = time.monotonic()
        self.stall_limit = number_setting("LEUKTUI_STALL_SECONDS", STALL_SECONDS)

    def set(self, phase: str) -> None:
        self.phase = phase
        self.moved_at = time.monotonic()

    def moving(self) -> bool:
        return time.monotonic() - self.moved_at < self.stall_limit


def heartbeat(db: Database, run_id: int, pulse: Pulse, done: threading.Event, stop: threading.Event) -> None:
    """Every two seconds until ``done``, while training moves: beat in the database with the
    phase when it changed. A cancel request, or the run no longer running (the scheduler gave it
    up), sets ``stop``."""
    written = None
    while not done.wait(HEARTBEAT_SECONDS):
        try:
            if pulse.moving():
                phase = pulse.phase
                db.heartbeat(run_id, phase=phase if phase != written else None)
                written = phase
            run = db.get_run(run_id)
            if run.cancel_requested_at or run.status != RUNNING:
                stop.set()
        except Exception as exc:  # a missed beat is not worth killing the run for
            print(f"heartbeat failed: {exc}", file=sys.stderr, flush=True)


def touch_heartbeat(path: Path, pulse: Pulse, done: threading.Event) -> None:
    """Every two seconds until ``done``, while training moves: touch the heartbeat file. It never
    waits on the database, so a slow write elsewhere does not make a healthy worker look silent."""
    while True:
        if pulse.moving():
            with contextlib.suppress(OSError):
                path.touch()
        if done.wait(HEARTBEAT_SECONDS):
            return


def device_for_worker(config_device: str) -> str | None:
    """The scheduler's device choice (``$LEUKTUI_DEVICE``), when this machine can honour it.

    With ``CUDA_VISIBLE_DEVICES`` set to the assigned GPU, that GPU is ``cuda`` in here.
    """
    assigned = os.environ.get("LEUKTUI_DEVICE")
    if assigned is None:
        return None
    if assigned == "cuda":
        import torch

        if not torch.cuda.is_available():
            return None if config_device == "auto" else config_device
    return assigned


def execute(
    db: Database,
    workspace: Workspace,
    run_id: int,
    *,
    stop: threading.Event,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    resume: bool | None = None,
) -> str:
    """Train run ``run_id`` in this process and return its final status.

    ``resume`` defaults to whether the run has a ``last`` checkpoint.
    """
    import psutil

    from engine.distributed import Ranks

    pid = os.getpid()
    pulse = Pulse()
    done = threading.Event()
    ranks = Ranks.from_env()
    if ranks is None or ranks.main:  # rank 0 of a DDP run speaks for all of them
        # With the start time, the scheduler never takes another process that reuses the pid for this worker.
        if not db.update_run(run_id, when_status=(RUNNING,), pid=pid, pid_started_at=psutil.Process(pid).create_time()):
            raise UserError(f"run {run_id} is {db.get_run(run_id).status}, not running; nothing to train")
        record = db.get_run(run_id)
        aside = workspace.claim_run_dir(run_id, record.owner, fresh=record.epochs_done == 0)
        if aside is not None:
            print(f"the folder of another run record with id {run_id} was moved to {aside}; this run starts its own", flush=True)
        threading.Thread(target=heartbeat, args=(db, run_id, pulse, done, stop), daemon=True, name="heartbeat").start()
        threading.Thread(target=touch_heartbeat, args=(workspace.heartbeat_path(run_id), pulse, done), daemon=True,
                         name="heartbeat-file").start()
    if ranks is not None and ranks.local_rank == 0:  # each node's torchrun has made its folders, owner-only
        workspace.share_torchrun_dir(run_id)
    try:
        pulse.set("importing torch")
        import torch

        from engine.train import Trainer

        threads = int(number_setting("LEUKTUI_THREADS", 0, whole=True))
        if ranks is not None:  # the threads this run was given, shared between its processes
            threads = max(1, (threads or usable_cpus()) // ranks.world)
        if threads:
            torch.set_num_threads(threads)
        record = db.get_run(run_id)
        device = device_for_worker(str(record.config.get("device", "auto")))
        if resume is None:
            resume = workspace.checkpoint_path(run_id, "last").is_file()
        where = f" rank {ranks.rank}/{ranks.world}" if ranks is not None else ""
        print(f"worker {pid}{where}: run {run_id}, device {device or 'from config'}, "
              f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')!r}, resume={resume}", flush=True)
        trainer = Trainer(db, workspace, run_id, stop=stop, device=device, on_event=on_event, on_phase=pulse.set)
        return trainer.run(resume=resume)
    finally:
        done.set()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.worker")
    parser.add_argument("run_id", type=int)
    parser.add_argument("--home", required=True)
    args = parser.parse_args(argv)
    apply_file_mode()

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

    workspace = Workspace.resolve(args.home)
    # The run's own writes wait their turn however long it takes (the fastest way under many
    # writers); if another process holds the lock for good, the heartbeat file stops with the
    # training and the scheduler ends this worker. Its heartbeats' database writes stay bounded.
    db = Database(workspace.db_url, write_wait=None)
    try:
        status = execute(db, workspace, args.run_id, stop=stop)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0 if status in (COMPLETED, CANCELLED, PRUNED) else 1


if __name__ == "__main__":
    sys.exit(main())
