"""The run screen's Mistakes tab: on a trained run (Pilot, and a real terminal through tmux), and
its picture on a fixed workspace (snapshots at 80x24 and 120x40)."""

from __future__ import annotations

import json
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import cli, fixed_folders
from db import Database, Workspace
from engine.datasets import load_split
from engine.synth import make_dataset
from tui.conftest import make_app, wait_until


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_data) -> Path:
    """One run of one epoch at 64 px (its last block's Grad-CAM map is 2x2, so maps differ)."""
    home = tmp_path_factory.mktemp("mistakes") / "home"
    cli("run", "--data-dir", str(tiny_data), "--image-size", "64", "--batch-size", "8", "--rotation", "0", "--amp", "off",
        "--epochs", "1", "--workers", "1", "--name", "looked-at", home=home)
    return home


async def open_the_tab(app, pilot):
    """The only run's screen, its Mistakes tab, once its list is read."""
    from leuktui.screens.mistakes import MistakesPane

    await wait_until(pilot, lambda: app.loaded and app.screen.query_one("#runs").row_count == 1)
    await pilot.press("enter")
    await wait_until(pilot, lambda: type(app.screen).__name__ == "RunDetailScreen" and app.screen.run is not None)
    await pilot.press("6")
    pane = app.screen.query_one(MistakesPane)
    await wait_until(pilot, lambda: pane.mistakes is not None, message="the list")
    return pane


async def test_the_tab_lists_the_mistakes_draws_their_maps_and_flips_between_kinds(trained, monkeypatch):
    from leuktui.screens.mistakes import CellViewScreen

    monkeypatch.setenv("LEUKTUI_IMAGES", "blocks")
    monkeypatch.setenv("COLORTERM", "truecolor")  # blocks need true colour
    expected = json.loads(cli("mistakes", "1", "--json", home=trained).stdout)
    (tn, fp), (fn, tp) = expected["confusion"]
    assert fn + fp > 0
    workspace = Workspace(trained)
    shutil.rmtree(workspace.run_dir(1) / "cam", ignore_errors=True)  # the tab's job draws them
    app = make_app(workspace)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_the_tab(app, pilot)
        first = "false_negatives" if fn else "false_positives"
        table = pane.query_one("#mistakes")
        assert table.row_count == len(expected[first])
        assert [m.id for m in pane.mistakes.of(pane.kind)] == [item["id"] for item in expected[first]]
        image = pane.query_one("#mistake-image")
        assert image.path == Path(expected[first][0]["image"]), (image.shown, app.console.color_system)  # the most confident mistake, shown
        # The maps: drawn by `leuktui mistakes --cam` in the background, shown as they appear.
        await wait_until(pilot, lambda: pane.cams and all(p.is_file() for p in pane.cams.values()) and pane.job is None,
                         timeout=120, message="the Grad-CAM job")
        await wait_until(pilot, lambda: pane.query_one("#mistake-cam").path is not None, message="the map on screen")
        shown_map = pane.query_one("#mistake-cam").path
        assert shown_map == pane.cams[expected[first][0]["id"]] and Image.open(shown_map).size == (64, 64)
        assert pane.job_error is None
        drawn = json.loads(cli("mistakes", "1", "--cam", "--json", home=trained).stdout)
        assert drawn[first][0]["cam"] == str(shown_map), "the CLI finds the tab's maps in the cache"
        if fn and fp:
            await pilot.press("f")
            assert table.row_count == fp and image.path == Path(expected["false_positives"][0]["image"])
            await pilot.press("f")
            assert table.row_count == fn
        if len(expected[first]) > 1:
            await pilot.press("down")
            await pilot.pause(0.1)
            assert image.path == Path(expected[first][1]["image"])
        await pilot.press("z")
        assert isinstance(app.screen, CellViewScreen)
        assert app.screen.query_one("#cell-view-cam").path == pane.cams[app.screen.mistake.id]
        await pilot.press("escape")
        assert not isinstance(app.screen, CellViewScreen)


# -- a fixed workspace for the picture --------------------------------------------------------------

SNAPSHOT_HOME = Path("/tmp/leuktui-snapshots-mistakes/home")
FOLLOW_HOME = Path("/tmp/leuktui-mistakes-follow/home")
# Fixed folders (this one, and the followed run's): the tests here run one after another, on one
# pytest-xdist worker.
pytestmark = pytest.mark.xdist_group("mistakes")


@pytest.fixture(scope="module", autouse=True)
def one_suite_at_a_time():
    with fixed_folders(SNAPSHOT_HOME.parent, FOLLOW_HOME.parent):
        yield


def mistakes_workspace(home: Path) -> Workspace:
    """A run whose best epoch's recorded predictions get two ALL and one HEM cell wrong, a best
    checkpoint file and the maps already cached for it (so no job runs)."""
    shutil.rmtree(home.parent, ignore_errors=True)
    data = make_dataset(home.parent / "data", n_train=8, n_valid=12, n_test=2, size=48, seed=3)
    workspace = Workspace(home).ensure()
    db = Database(workspace.db_url)
    from engine.config import RunConfig

    config = RunConfig.from_dict({"data_dir": str(data), "epochs": 2, "image_size": 48})
    run = db.create_run(config=config.to_dict(), config_hash=config.config_hash(), model="resnet18", name="wrong-ones",
                        status="completed")
    best = {"epoch": 2, "val_acc": 0.75, "val_loss": 0.5, "train_loss": 0.4, "train_acc": 0.8}
    db.add_epoch(run.id, 1, 10, {**best, "val_acc": 0.6})
    db.add_epoch(run.id, 2, 20, best, best=best)
    samples = load_split(data, "valid").samples
    wrong_all = [s for s in samples if s.label == 1][:2]
    wrong_hem = [s for s in samples if s.label == 0][:1]
    probabilities = {wrong_all[0].ident: 0.08, wrong_all[1].ident: 0.31, wrong_hem[0].ident: 0.93}
    predictions = []
    for sample in samples:
        p = probabilities.get(sample.ident, 0.9 if sample.label == 1 else 0.1)
        predictions.append((sample.ident, p, int(p >= 0.5), sample.label))
    wrong = len(probabilities)
    db.add_evaluation(run.id, checkpoint="best", epoch=2, split="valid", tta="single", n=len(samples), origin="training",
                      metrics={"acc": 1 - wrong / len(samples), "confusion": [[5, 1], [2, 4]]}, predictions=predictions)
    checkpoint = workspace.checkpoint_path(run.id, "best")
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.write_bytes(b"a checkpoint")
    folder = workspace.cam_folder(run.id, "best")
    folder.mkdir(parents=True)
    for sample in wrong_all + wrong_hem:
        pixels = np.asarray(Image.open(sample.path).convert("RGB")).astype(np.float32)
        pixels[..., 0] = np.minimum(255, pixels[..., 0] * 0.5 + 127)  # a warm overlay
        Image.fromarray(pixels.astype(np.uint8)).save(folder / workspace.cam_name(sample.ident, 1 - sample.label))
    db.close()
    return workspace


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_mistakes_tab(snap_compare, size, monkeypatch):
    from leuktui.screens.mistakes import MistakesPane

    monkeypatch.setenv("LEUKTUI_IMAGES", "blocks")
    monkeypatch.setenv("COLORTERM", "truecolor")  # blocks need true colour
    app = make_app(mistakes_workspace(SNAPSHOT_HOME))

    async def steps(pilot):
        await open_the_tab(app, pilot)
        await wait_until(pilot, lambda: app.screen.query_one("#mistake-cam").path is not None)
        assert app.screen.query_one(MistakesPane).job is None, "the maps were cached: no job"
        await pilot.pause(0.3)

    try:
        assert snap_compare(app, terminal_size=size, run_before=steps)
    finally:
        shutil.rmtree(SNAPSHOT_HOME.parent, ignore_errors=True)


# -- a real terminal ----------------------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
@pytest.mark.parametrize("colours", ["truecolor", "256"])
def test_the_tab_draws_the_cell_in_half_blocks_in_tmux_and_says_why_not_in_256_colours(tmp_path, colours):
    from e2e.test_terminal import Terminal

    home = tmp_path / "home"
    mistakes_workspace(home)
    said = cli("mistakes", "1", home=home).stdout
    assert "2 false negatives (ALL called HEM), 1 false positive (HEM called ALL)" in said, said
    colour_env = "COLORTERM=truecolor" if colours == "truecolor" else "-u COLORTERM"
    command = (f"env {colour_env} TERM=xterm-256color {shlex.quote(sys.executable)} -m leuktui --home {shlex.quote(str(home))} "
               "--no-scheduler")
    terminal = Terminal(f"leuktui-cells-{colours}-{int(time.time())}", command, cwd=tmp_path, width=120, height=40)
    try:
        terminal.wait_for("wrong-ones", 30)
        terminal.keys("Enter")
        terminal.wait_for("loss per epoch", 15)
        terminal.keys("6")
        screen = terminal.wait_for("2 false negatives", 15)
        assert "f: 1 false positive ·" in screen, screen  # one, in the singular
        terminal.wait_for("Grad-CAM of", 10)
        deadline = time.time() + 10
        while True:  # the picture is mounted a moment after its title, and drawn over a few frames
            screen = terminal.screen()
            blocks = sum(line.count("▀") + line.count("▄") for line in screen.splitlines())
            if blocks > 200 or "too few" in screen or time.time() > deadline:
                break
            time.sleep(0.2)
        if colours == "truecolor":
            assert blocks > 200, screen  # two 48 px cells, 24 rows of half-cell blocks each
            assert "48;2;" in terminal.screen(escapes=True) or "38;2;" in terminal.screen(escapes=True)
        else:
            assert blocks == 0 and "256 colours are too few to show the cell" in screen, screen
            # The two panes' lines (each names its file) never run into each other.
            lines = screen.splitlines()
            top = next(i for i, line in enumerate(lines) if "Grad-CAM of" in line)
            right = lines[top].index("Grad-CAM of")
            beside = [line for line in lines[top + 1:-1] if len(line) > right and line[right].strip()]  # not the key bar
            assert beside and all(line[right - 1] == " " for line in beside), "\n".join(beside)
        terminal.keys("q")
    finally:
        terminal.close()


async def test_the_tab_follows_a_new_best_epoch_and_says_a_damaged_image_in_a_line(monkeypatch):
    monkeypatch.setenv("LEUKTUI_IMAGES", "blocks")
    monkeypatch.setenv("COLORTERM", "truecolor")
    home = FOLLOW_HOME
    workspace = mistakes_workspace(home)
    db = Database(workspace.db_url)
    try:
        samples = load_split(db.get_run(1).config["data_dir"], "valid").samples
        app = make_app(workspace)
        async with app.run_test(size=(120, 40)) as pilot:
            pane = await open_the_tab(app, pilot)
            assert pane.mistakes.evaluation.epoch == 2 and len(pane.mistakes.false_negatives) == 2

            # Epoch 3 is a new best: the worker replaces its evaluation (same count), then moves the best epoch.
            wrong = next(s for s in samples if s.label == 1)
            predictions = [(s.ident, 0.2 if s is wrong else (0.9 if s.label == 1 else 0.1), 0 if s is wrong else s.label, s.label)
                           for s in samples]
            db.add_evaluation(1, checkpoint="best", epoch=3, split="valid", tta="single", n=len(samples), origin="training",
                              metrics={"acc": 1 - 1 / len(samples), "confusion": [[6, 0], [1, 5]]}, predictions=predictions,
                              replaces=True)
            best = {"epoch": 3, "val_acc": 0.92, "val_loss": 0.3, "train_loss": 0.3, "train_acc": 0.9}
            db.add_epoch(1, 3, 30, best, best=best)
            await wait_until(pilot, lambda: pane.mistakes.evaluation.epoch == 3, message="the new best epoch's mistakes")
            assert [m.id for m in pane.mistakes.false_negatives] == [wrong.ident] and not pane.mistakes.false_positives

            # A damaged image: one line in the pane, the app goes on.
            wrong.path.write_bytes(wrong.path.read_bytes()[:80])
            await pilot.press("f")
            await pilot.press("f")
            image = pane.query_one("#mistake-image")
            image.shown = None  # asked again: the file is read again
            pane._show_pictures()
            await pilot.pause(0.2)
            assert image.path is None and str(wrong.path) in str(image.query_one(".cell-missing").render())
            assert app.is_running
    finally:
        db.close()
        shutil.rmtree(home.parent, ignore_errors=True)
