"""A worker process: ``python -m engine.worker RUN_ID --home DIR`` trains one queued run.

Light at import (torch loads inside ``main``), so the CLI's foreground runs share its heartbeat.

Started by the scheduler. It reads its config from the database, beats a heartbeat every two
seconds, continues from the run's ``last`` checkpoint when there is one, and on SIGTERM finishes
the current step, marks the run cancelled and exits 0. Output goes to the run's log file.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from db import Database, Workspace
from engine.errors import UserError

HEARTBEAT_SECONDS = 2.0


def heartbeat(db: Database, run_id: int, done: threading.Event, stop: threading.Event) -> None:
    """Beat every two seconds until ``done``; a cancel request in the database sets ``stop``."""
    while not done.wait(HEARTBEAT_SECONDS):
        try:
            db.heartbeat(run_id)
            if db.get_run(run_id).cancel_requested_at:
                stop.set()
        except Exception as exc:  # a missed beat is not worth killing the run for
            print(f"heartbeat failed: {exc}", file=sys.stderr, flush=True)


def start_heartbeat(db: Database, run_id: int, stop: threading.Event) -> threading.Event:
    """Start the heartbeat thread; set the returned event to end it."""
    done = threading.Event()
    threading.Thread(target=heartbeat, args=(db, run_id, done, stop), daemon=True, name="heartbeat").start()
    return done


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.worker")
    parser.add_argument("run_id", type=int)
    parser.add_argument("--home", required=True)
    args = parser.parse_args(argv)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

    workspace = Workspace.resolve(args.home)
    db = Database(workspace.db_url)
    db.update_run(args.run_id, pid=os.getpid())
    done = start_heartbeat(db, args.run_id, stop)
    try:
        import torch

        from engine.train import Trainer

        threads = os.environ.get("LEUKTUI_THREADS")
        if threads:
            torch.set_num_threads(int(threads))
        record = db.get_run(args.run_id)
        device = device_for_worker(str(record.config.get("device", "auto")))
        resume = workspace.checkpoint_path(args.run_id, "last").is_file()
        print(f"worker {os.getpid()}: run {args.run_id}, device {device or 'from config'}, "
              f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')!r}, resume={resume}", flush=True)
        status = Trainer(db, workspace, args.run_id, stop=stop, device=device).run(resume=resume)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        done.set()
    return 0 if status in ("completed", "cancelled") else 1


if __name__ == "__main__":
    sys.exit(main())
