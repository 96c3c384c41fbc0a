"""App latency on a large workspace: 10,000 runs and 1,000,000 step rows.

    .venv/bin/python bench/tui_latency.py

Measures, each against a target:
  start-up    process start -> first painted Runs screen, -> the newest runs in the table (<= 1.0 s),
              and -> all runs loaded;
              reference: a bare Textual app with a 10-row DataTable, started the same way
  open run    enter on a run with 50,000 steps -> its three charts drawn with its data (<= 150 ms)
  redraw      one redraw of the three charts of that run (<= 30 ms)
  live epoch  a worker commits an epoch -> it is on the open run's screen (<= 1.5 s)
  idle CPU    the app doing nothing for 10 s, CPU time / wall time, on the Runs screen and with a
              long run open (< 5% of one core)
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RUNS = 10_000
LONG_RUNS = 10
LONG_STEPS = 50_000
SHORT_STEPS = (1_000_000 - LONG_RUNS * LONG_STEPS) // (RUNS - LONG_RUNS)


def build_workspace(home: Path) -> None:
    from sqlalchemy import insert

    from db import Database, Workspace
    from db.models import Epoch, Run, StepMetric
    from db.vocabulary import COMPLETED
    from engine.config import RunConfig

    workspace = Workspace(home).ensure()
    db = Database(workspace.db_url)
    now = time.time()
    models = ("resnet18", "resnet50", "resnet152")
    run_rows, epoch_rows = [], []
    for i in range(1, RUNS + 1):
        config = RunConfig.from_dict({"model": models[i % 3], "hist_eq": i % 2 == 0, "epochs": 10, "data_dir": "/data/lab3"}).to_dict()
        acc = 0.85 + 0.1 * ((i * 7919) % 1000) / 1000
        run_rows.append({
            "id": i, "name": f"run-{i}", "status": COMPLETED, "config": config, "config_hash": f"{i:016x}", "model": config["model"],
            "priority": 0, "created_at": now - i, "updated_at": now - i, "notes": "", "tags": ["bench"], "environment": {},
            "epochs_done": 10, "best_epoch": 10, "best_val_acc": acc, "best_val_f1": acc - 0.01, "best_val_auc": 0.97,
            "last_step": LONG_STEPS if i > RUNS - LONG_RUNS else SHORT_STEPS, "summary": {},
        })
        for epoch in range(1, 11):
            epoch_rows.append({"run_id": i, "epoch": epoch, "step": epoch, "train_loss": 0.5 / epoch, "train_acc": acc, "val_loss": 0.4,
                               "val_acc": acc, "f1": acc, "auc": 0.97, "confusion": [[30, 2], [3, 65]], "lr": 1e-3, "seconds": 10.0,
                               "images_per_s": 100.0, "created_at": now})
    with db.engine.begin() as connection:
        connection.execute(insert(Run.__table__), run_rows)
        connection.execute(insert(Epoch.__table__), epoch_rows)
        for run_id in range(1, RUNS + 1):
            steps = LONG_STEPS if run_id > RUNS - LONG_RUNS else SHORT_STEPS  # the newest runs are the long ones
            connection.execute(insert(StepMetric.__table__), [
                {"run_id": run_id, "key": "train_loss", "step": s, "value": 0.7 * math.exp(-s / 5000) + 0.05} for s in range(1, steps + 1)
            ])
    db.close()


# -- start-up, in a fresh process ------------------------------------------------------------------------

STARTUP_CHILD = r"""
import os, sys, time, json
t0 = float(os.environ["BENCH_T0"])
sys.path.insert(0, os.environ["BENCH_ROOT"])
marks = {}
if os.environ["BENCH_KIND"] == "bare":
    from textual.app import App
    from textual.widgets import DataTable, Footer, Header
    class Bare(App):
        def compose(self):
            yield Header(); yield DataTable(); yield Footer()
        def on_mount(self):
            table = self.query_one(DataTable)
            table.add_columns("a", "b", "c")
            for i in range(10):
                table.add_row(str(i), "x", "y")
            self.call_after_refresh(self.done)
        def done(self):
            marks["paint"] = marks["rows"] = marks["all"] = time.time() - t0
            self.exit()
    Bare().run(headless=True, size=(120, 40))
else:
    from db import Workspace
    from leuktui.app import LeuktuiApp
    from leuktui.screens.runs import RunsScreen
    class Timed(LeuktuiApp):
        # Textual calls the base class's handlers of a message as well: no super() calls here.
        def on_mount(self):
            self.call_after_refresh(lambda: marks.setdefault("paint", time.time() - t0))
        def on_runs_updated(self, message):
            self.call_after_refresh(self.done)
        def done(self):
            if isinstance(self.screen, RunsScreen) and self.screen.query_one("#runs").row_count:  # the first rows on screen
                marks.setdefault("rows", time.time() - t0)
                if self.loaded:
                    marks.setdefault("all", time.time() - t0)
                    self.exit()
    Timed(Workspace.resolve(os.environ["BENCH_HOME"]), start_scheduler=False).run(headless=True, size=(120, 40))
marks["heavy"] = sorted(m for m in ("torch", "torchvision") if m in sys.modules)
print(json.dumps(marks))
"""


def startup(kind: str, home: Path) -> dict:
    env = {**os.environ, "BENCH_T0": repr(time.time()), "BENCH_KIND": kind, "BENCH_HOME": str(home),
           "BENCH_ROOT": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run([sys.executable, "-c", STARTUP_CHILD], env=env, capture_output=True, text=True, timeout=120)
    if result.returncode:
        raise RuntimeError(result.stderr)
    return json.loads(result.stdout.strip().splitlines()[-1])


# -- in-process measurements --------------------------------------------------------------------------------


def charts_drawn(screen) -> bool:
    """The open run's three charts have been drawn, by the compositor, with all its steps."""
    from leuktui.screens.run_detail import RunDetailScreen
    from leuktui.widgets.charts import MetricChart

    return (isinstance(screen, RunDetailScreen) and bool(screen.steps) and screen.steps[-1][0] == LONG_STEPS
            and all(chart._series and chart._plotted_width is not None for chart in screen.query(MetricChart)))


async def in_app(home: Path) -> dict:
    from db import Database, Workspace
    from leuktui.app import LeuktuiApp

    app = LeuktuiApp(Workspace.resolve(home), start_scheduler=False)
    out: dict = {}
    async with app.run_test(size=(120, 40)) as pilot:
        while not (app.loaded and app.screen.query_one("#runs").row_count):
            await pilot.pause(0.05)
        table = app.screen.query_one("#runs")
        opens = []
        opened = [RUNS - i for i in range(LONG_RUNS)]  # the first open also imports the run screen's modules
        for run_id in opened:
            table.move_cursor(row=table.get_row_index(str(run_id)))
            await pilot.pause(0.3)
            started = time.perf_counter()
            app.simulate_key("enter")  # as a terminal would send it; pilot.press would also wait for animations
            while not charts_drawn(app.screen):
                await asyncio.sleep(0.001)
            opens.append(time.perf_counter() - started)
            if run_id != opened[-1]:
                await pilot.press("escape")
                await pilot.pause(0.2)
        out["first_open_ms"] = 1000 * opens[0]
        out["open_ms"] = 1000 * statistics.median(opens[1:])
        out["open_worst_ms"] = 1000 * max(opens[1:])

        screen = app.screen
        redraws = []
        for _ in range(10):
            started = time.perf_counter()
            screen._dirty = True
            screen._redraw_if_dirty()
            for chart_id in ("#chart-loss", "#chart-acc", "#chart-steps"):
                screen.query_one(chart_id).render()
            redraws.append(time.perf_counter() - started)
        out["redraw_ms"] = 1000 * statistics.median(redraws)

        writer = Database(app.workspace.db_url)
        lags = []
        for epoch in range(11, 14):
            before = len(screen.epochs)
            committed = time.perf_counter()
            writer.add_epoch(opened[-1], epoch, 50_000, {"val_acc": 0.9, "confusion": [[1, 0], [0, 1]]})
            while len(screen.epochs) == before or screen._dirty:
                await pilot.pause(0.01)
            lags.append(time.perf_counter() - committed)
            await pilot.pause(0.3)
        out["live_epoch_s"] = max(lags)

        async def cpu_over(seconds: float) -> float:
            cpu0, wall0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            await pilot.pause(seconds)
            cpu1, wall1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            return 100 * ((cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)) / (wall1 - wall0)

        await pilot.pause(1.0)
        out["idle_open_cpu_pct"] = await cpu_over(10.0)  # the long run's screen open, polling
        await pilot.press("escape")
        await pilot.pause(1.0)
        out["idle_cpu_pct"] = await cpu_over(10.0)
    return out


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        started = time.time()
        build_workspace(home)
        print(f"workspace: {RUNS:,} runs, {LONG_RUNS * LONG_STEPS + (RUNS - LONG_RUNS) * SHORT_STEPS:,} step rows "
              f"(built in {time.time() - started:.0f} s)")
        bare = [startup("bare", home) for _ in range(3)]
        ours = [startup("app", home) for _ in range(3)]
        measured = asyncio.run(in_app(home))
    median = lambda rows, key: statistics.median(r[key] for r in rows)  # noqa: E731
    print(f"start-up, first paint: {median(ours, 'paint'):.2f} s  (bare Textual app {median(bare, 'paint'):.2f} s, "
          f"ratio {median(ours, 'paint') / median(bare, 'paint'):.2f}x)")
    print(f"start-up, the newest runs in the table: {median(ours, 'rows'):.2f} s   target <= 1.0 s")
    print(f"start-up, all {RUNS:,} runs loaded (filter and sort over all): {median(ours, 'all'):.2f} s")
    print(f"torch imported at start-up: {ours[0]['heavy'] or 'no'}")
    print(f"open a run with {LONG_STEPS:,} steps: {measured['open_ms']:.0f} ms (median of {LONG_RUNS - 1}, worst "
          f"{measured['open_worst_ms']:.0f} ms; the first open, importing the screen's modules: {measured['first_open_ms']:.0f} ms)"
          "   target <= 150 ms")
    print(f"redraw its three charts: {measured['redraw_ms']:.1f} ms   target <= 30 ms")
    print(f"epoch committed -> on screen: {measured['live_epoch_s']:.2f} s (worst of 3)   target <= 1.5 s")
    print(f"idle CPU: {measured['idle_cpu_pct']:.1f}% of one core on the Runs screen, "
          f"{measured['idle_open_cpu_pct']:.1f}% with a long run open   target < 5%")


if __name__ == "__main__":
    main()
