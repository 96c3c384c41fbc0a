"""Database load: N writer processes log step metrics in batches into one database while a
reader polls for new rows, as workers and the app do.

    .venv/bin/python bench/db_load.py                  # 8 writers, batches of 25 rows (the engine's flush)
    .venv/bin/python bench/db_load.py --writers 4 --batch 100
    .venv/bin/python bench/db_load.py --db postgresql+psycopg://user:pw@host:5432/db   # beside SQLite's

SQLite (a fresh file) always runs; ``--db URL`` runs the same load against that database too and
prints it beside SQLite's (its bench runs are deleted afterwards).

Prints rows/s, the worst and 99th-percentile write latency, the rows the reader saw and the rows
lost (must be 0). As in the trainer, batches inside an epoch skip PostgreSQL's wait for the disk and
an epoch's last batch waits (``Database.add_steps``). The reference, measured in the same run, is the
same writers committing one row per step, each waiting for the disk (what a worker without
batching would do). Target: >= 50,000 step rows/s with 8 writers.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy.engine import make_url  # noqa: E402

from db import Database  # noqa: E402


def writer(url: str, run_id: int, rows: int, batch: int, epoch_steps: int, start_at: float, results) -> None:
    db = Database(url, migrate=False, write_wait=None)  # as a worker writes
    latencies = []
    while time.time() < start_at:
        time.sleep(0.001)
    begun = time.perf_counter()
    for first in range(1, rows + 1, batch):
        chunk = [(step, "train_loss", 1.0 / step) for step in range(first, min(first + batch, rows + 1))]
        last = chunk[-1][0]
        # As the trainer writes them: an epoch's last batch (and the run's) waits for the disk.
        durable = batch == 1 or last == rows or (last // epoch_steps) != ((first - 1) // epoch_steps)
        t0 = time.perf_counter()
        db.add_steps(run_id, chunk, durable=durable)
        latencies.append(time.perf_counter() - t0)
    results.put((run_id, time.perf_counter() - begun, latencies))
    db.close()


def scenario(url: str, run_ids: list[int], rows: int, batch: int, epoch_steps: int) -> dict:
    db = Database(url)
    context = mp.get_context("spawn")
    results = context.Queue()
    start_at = time.time() + 1.5  # let every process import and connect first
    processes = [context.Process(target=writer, args=(url, run_id, rows, batch, epoch_steps, start_at, results)) for run_id in run_ids]
    for process in processes:
        process.start()

    seen = dict.fromkeys(run_ids, 0)
    last = dict.fromkeys(run_ids, 0)
    polls = 0
    done = threading.Event()

    def reader() -> None:
        nonlocal polls
        reader_db = Database(url, migrate=False)
        while not done.is_set():
            for run_id in run_ids:
                new = reader_db.steps(run_id, after=last[run_id])
                if new:
                    seen[run_id] += len(new)
                    last[run_id] = new[-1][0]
            polls += 1
            time.sleep(0.05)
        for run_id in run_ids:  # a last poll after the writers finished
            new = reader_db.steps(run_id, after=last[run_id])
            seen[run_id] += len(new)

    thread = threading.Thread(target=reader)
    thread.start()
    outcomes = [results.get() for _ in processes]
    for process in processes:
        process.join()
    done.set()
    thread.join()

    wall = max(seconds for _, seconds, _ in outcomes)
    latencies = sorted(latency for _, _, values in outcomes for latency in values)
    stored = sum(db.count_steps(run_id) for run_id in run_ids)
    expected = rows * len(run_ids)
    return {
        "rows_per_s": stored / wall,
        "worst_ms": 1000 * latencies[-1],
        "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
        "lost": expected - stored,
        "reader_seen": sum(seen.values()),
        "expected": expected,
        "polls": polls,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--rows", type=int, default=20000, help="step rows per writer")
    parser.add_argument("--batch", type=int, default=25, help="rows per commit (the engine flushes every 25 steps)")
    parser.add_argument("--epoch-steps", type=int, default=333,
                        help="steps per epoch: an epoch's last batch is written durably (333: C-NMC's 10,661 training images at batch 32)")
    parser.add_argument("--reference-rows", type=int, default=1000, help="rows per writer for the one-row-per-commit reference")
    parser.add_argument("--db", metavar="URL", help="also load this database (e.g. a PostgreSQL server) and print it beside SQLite")
    args = parser.parse_args()

    def load(url: str) -> tuple[dict, dict]:
        db = Database(url)
        made: list[int] = []

        def make() -> list[int]:
            ids = [db.create_run(config={}, config_hash="bench", model="resnet18", name=f"bench w{i}").id for i in range(args.writers)]
            made.extend(ids)
            return ids

        try:
            return scenario(url, make(), args.rows, args.batch, args.epoch_steps), scenario(url, make(), args.reference_rows, 1, args.epoch_steps)
        finally:
            for run_id in made:
                db.delete_run(run_id)
            db.close()

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["SQLite"] = load(f"sqlite:///{Path(tmp) / 'load.db'}")
    if args.db:
        results[make_url(args.db).get_backend_name()] = load(args.db)

    print(f"{args.writers} writers x {args.rows:,} rows (reference {args.reference_rows:,}), a reader polling every 50 ms")
    lost = False
    for name, (batched, reference) in results.items():
        for label, result, batch in (("batched", batched, args.batch), ("reference, one row per commit", reference, 1)):
            print(
                f"{name:<10} {label:<31} batch {batch:>4}: {result['rows_per_s']:>10,.0f} rows/s  worst write {result['worst_ms']:7.1f} ms  "
                f"p99 {result['p99_ms']:6.1f} ms  lost {result['lost']}  reader saw {result['reader_seen']:,}/{result['expected']:,} "
                f"in {result['polls']} polls"
            )
        print(f"{name:<10} ratio batched / reference: {batched['rows_per_s'] / reference['rows_per_s']:.1f}x")
        lost = lost or bool(batched["lost"] or reference["lost"] or batched["reader_seen"] != batched["expected"])
    if lost:
        sys.exit("rows were lost")


if __name__ == "__main__":
    main()
