"""Faults, tried many times: what each loses (it must be nothing) and how long its detection takes.

    .venv/bin/python bench/faults.py [--kills 12] [--stops 3]

1. A worker killed (SIGKILL) at a random moment, then resumed, again and again over one run:
   the finished run must have every epoch and every step row exactly once, and its best epoch
   must be the best of the recorded epochs.
2. A worker killed under the scheduler: seconds until the run is failed.
3. A worker stopped (SIGSTOP) under the scheduler: seconds until the run is failed and the
   process reaped.
4. The scheduler killed under a running worker, then started again: seconds until the worker is
   adopted; the run must complete.
The reference is the scheduler's silence limit (12 s), against which detection is compared.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from db import Database, Workspace, states  # noqa: E402
from db.vocabulary import COMPLETED, FAILED, INTERRUPTED, RUNNING, metric  # noqa: E402
from engine.config import RunConfig  # noqa: E402
from engine.synth import make_dataset  # noqa: E402
from runner import control, daemon, scheduler
from runner.options import Options  # noqa: E402

STEPS_PER_EPOCH = 96 // 8


def config(data: Path, epochs: int) -> RunConfig:
    return RunConfig.from_dict({"data_dir": str(data), "image_size": 16, "batch_size": 8, "epochs": epochs, "rotation": 0,
                                "workers": 1, "amp": "off", "best_metric": "val_loss"})


def wait_for(predicate, timeout: float) -> float:
    started = time.time()
    while time.time() - started < timeout:
        if predicate():
            return time.time() - started
        time.sleep(0.05)
    raise TimeoutError(f"not within {timeout:.0f} s")


def kills_and_resumes(data: Path, root: Path, kills: int) -> dict:
    workspace = Workspace(root / "kills").ensure()
    db = Database(workspace.db_url)
    (run,), _ = control.queue_runs(db, config(data, epochs=8))
    landed = 0
    rng = random.Random(0)
    while landed < kills:
        assert states.move(db, run.id, RUNNING)
        worker = subprocess.Popen([sys.executable, "-m", "engine.worker", str(run.id), "--home", str(workspace.home)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(2.0, 9.0))  # start-up (importing torch, decoding) to several epochs in
        if worker.poll() is not None:
            break
        worker.kill()
        worker.wait()
        landed += 1
        assert states.finish(db, run.id, INTERRUPTED)
    if db.get_run(run.id).status != COMPLETED:
        if db.get_run(run.id).status != RUNNING:
            assert states.move(db, run.id, RUNNING)
        subprocess.run([sys.executable, "-m", "engine.worker", str(run.id), "--home", str(workspace.home)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    epochs = db.epochs(run.id)
    steps = [s for s, _ in db.steps(run.id)]
    expected_steps = list(range(1, 8 * STEPS_PER_EPOCH + 1))
    by_loss = metric("val_loss")
    best = epochs[0]
    for epoch in epochs[1:]:
        best = epoch if by_loss.better(epoch.val_loss, best.val_loss) else best
    return {
        "tries": landed,
        "epochs lost": len(set(range(1, 9)) - {e.epoch for e in epochs}),
        "epochs twice": len(epochs) - len({e.epoch for e in epochs}),
        "steps lost": len(set(expected_steps) - set(steps)),
        "steps twice": len(steps) - len(set(steps)),
        "best consistent": db.get_run(run.id).best_epoch == best.epoch,
        COMPLETED: db.get_run(run.id).status == COMPLETED,
    }


def under_the_scheduler(data: Path, root: Path, name: str, fault: signal.Signals) -> float:
    workspace = Workspace(root / name).ensure()
    db = Database(workspace.db_url)
    (run,), _ = control.queue_runs(db, config(data, epochs=500))
    daemon.start_detached(workspace, Options(idle_timeout=20))
    wait_for(lambda: db.get_run(run.id).epochs_done >= 1, 120)
    pid = db.get_run(run.id).pid
    os.kill(pid, fault)
    detected = wait_for(lambda: db.get_run(run.id).status == FAILED, 60)
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), 10)
    daemon.stop(workspace)
    return detected


def scheduler_killed(data: Path, root: Path) -> tuple[float, bool]:
    workspace = Workspace(root / "scheduler").ensure()
    db = Database(workspace.db_url)
    (run,), _ = control.queue_runs(db, config(data, epochs=5))
    first = daemon.start_detached(workspace, Options(idle_timeout=20))
    wait_for(lambda: db.get_run(run.id).epochs_done >= 1, 120)
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: daemon.running_pid(workspace) is None, 10)
    started = time.time()
    daemon.start_detached(workspace, Options(idle_timeout=20))
    log = workspace.home / "scheduler.log"
    wait_for(lambda: "adopted run" in log.read_text(), 30)
    adopted = time.time() - started
    wait_for(lambda: db.get_run(run.id).status == COMPLETED, 240)
    epochs = [e.epoch for e in db.epochs(run.id)]
    daemon.stop(workspace)
    return adopted, epochs == [1, 2, 3, 4, 5]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kills", type=int, default=12)
    parser.add_argument("--stops", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        data = make_dataset(root / "cells", n_train=96, n_valid=16, n_test=8, size=16, seed=3)
        result = kills_and_resumes(data, root, args.kills)
        print(f"kill -9 at random moments, resumed: {result}")
        killed = [under_the_scheduler(data, root, f"kill{i}", signal.SIGKILL) for i in range(args.stops)]
        print(f"kill -9 under the scheduler: failed after {', '.join(f'{s:.1f}' for s in killed)} s")
        stopped = [under_the_scheduler(data, root, f"stop{i}", signal.SIGSTOP) for i in range(args.stops)]
        print(f"SIGSTOP under the scheduler: failed and reaped after {', '.join(f'{s:.1f}' for s in stopped)} s "
              f"(limit 20 s; silence limit {scheduler.HEARTBEAT_STALE_SECONDS:.0f} s, ratio "
              f"{max(stopped) / scheduler.HEARTBEAT_STALE_SECONDS:.2f}x)")
        adopted, complete = scheduler_killed(data, root)
        print(f"scheduler killed under a worker: adopted {adopted:.1f} s after the restart; run completed with every epoch once: {complete}")


if __name__ == "__main__":
    main()
