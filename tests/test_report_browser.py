"""``report.html`` in a real headless browser (Debian's chromium): every figure loads and the page
logs no console message and raises no error."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from tui.seed import seed_workspace

from db import Workspace
from leuktui.report.build import build_report
from leuktui.report.data import select_runs

SERVICE = Path(__file__).parent / "services" / "chromium.sh"
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=15000",
]


def chromium() -> str:
    """The chromium binary, brought up by the service script where it can be (as root)."""
    if shutil.which("chromium") is None:
        subprocess.run(["bash", str(SERVICE)], capture_output=True, text=True)
    found = shutil.which("chromium")
    if found is None:
        message = "chromium is not installed (tests/services/chromium.sh installs it as root: apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def test_report_html_loads_every_figure_without_console_errors(tmp_path, tiny_data):
    browser = chromium()
    workspace = Workspace(tmp_path / "home").ensure()
    db = seed_workspace(workspace, data_dir=str(tiny_data))
    from PIL import Image

    from engine.datasets import load_split

    valid = load_split(tiny_data, "valid").samples
    hem, all_ = [s for s in valid if s.label == 0][:2], [s for s in valid if s.label == 1][:2]
    best = db.get_run(1).best_epoch
    db.add_evaluation(1, checkpoint="best", epoch=best, split="valid", tta="single", n=4, metrics={"acc": 0.5},
                      predictions=[(all_[0].ident, 0.9, 1, 1), (all_[1].ident, 0.4, 0, 1), (hem[0].ident, 0.2, 0, 0),
                                   (hem[1].ident, 0.6, 1, 0)])
    checkpoint = workspace.checkpoint_path(1, "best")
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"a checkpoint")
    maps = workspace.cam_folder(1, "best")
    maps.mkdir(parents=True)
    Image.new("RGB", (40, 40), (200, 40, 40)).save(maps / workspace.cam_name(all_[1].ident, 0))  # the false negative's; the other not drawn
    result = build_report(db, workspace, select_runs(db, sweep=1), tmp_path / "report")
    db.close()
    assert "preprocessing" in result.figures and "roc" in result.figures and "mistakes-run-1" in result.figures
    assert any("maps of run 1 are not drawn yet" in note for note in result.notes)
    page = tmp_path / "report" / "report.html"
    out = subprocess.run(
        [browser, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    dom = out.stdout
    figures = re.search(r'data-figures="(\d+)"', dom)
    loaded = re.search(r'data-figures-loaded="(\d+)"', dom)
    assert figures and loaded, "the page's load handler did not run:\n" + dom[:500]
    assert int(figures.group(1)) == len(result.figures) == int(loaded.group(1))
    assert 'data-errors=""' in dom
    console = [line for line in out.stderr.splitlines() if ":CONSOLE" in line]
    assert console == []
