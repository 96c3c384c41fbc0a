"""leuktui in a real terminal (tmux): queue a tiny run from the keyboard, watch it complete,
export the submission, quit — then check the CSV."""

from __future__ import annotations

import csv
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from db import Workspace
from engine.synth import make_dataset
from runner import daemon

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
# A tmux server of the tests' own, started from their environment (SLURM_CONF, the services'
# addresses): a server a developer already runs would give the panes its environment instead.
TMUX = ["tmux", "-L", f"leuktui-tests-{os.getpid()}"]


class Terminal:
    def __init__(self, session: str, command: str, cwd, width: int = 120, height: int = 40):
        self.session = session
        subprocess.run([*TMUX, "kill-session", "-t", session], capture_output=True)
        # COLUMNS and LINES (pytest's terminal sets them in its environment) would fix the app's size
        # at theirs, whatever the window's: the pane's size is the one it must see.
        command = f"env -u COLUMNS -u LINES {command}"
        subprocess.run([*TMUX, "new-session", "-d", "-s", session, "-x", str(width), "-y", str(height), "-c", str(cwd), command], check=True)

    def screen(self, *, escapes: bool = False) -> str:
        """The visible screen as text; with ``escapes``, with the colour and style sequences too."""
        result = subprocess.run([*TMUX, "capture-pane", "-p", *(["-e"] if escapes else []), "-t", self.session],
                                capture_output=True, text=True)
        return result.stdout

    def keys(self, *keys: str, literal: bool = False) -> None:
        for key in keys:
            subprocess.run([*TMUX, "send-keys", "-t", self.session, *(["-l"] if literal else []), key], check=True)
            time.sleep(0.15)

    def type(self, text: str) -> None:
        self.keys(text, literal=True)

    def wait_for(self, text: str, timeout: float) -> str:
        deadline = time.time() + timeout
        while time.time() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.25)
        raise AssertionError(f"{text!r} not on screen after {timeout:.0f} s:\n{self.screen()}")

    def alive(self) -> bool:
        return subprocess.run([*TMUX, "has-session", "-t", self.session], capture_output=True).returncode == 0

    def close(self) -> None:
        subprocess.run([*TMUX, "kill-session", "-t", self.session], capture_output=True)


def test_a_folder_of_other_files_becomes_a_workspace_only_when_asked(tmp_path):
    """`leuktui --home ~` (a mistyped workspace): the app asks before making a workspace among
    someone's files; no, the default, leaves the folder as it was."""
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    command = f"{shlex.quote(sys.executable)} -m leuktui --home {shlex.quote(str(folder))}; sleep 30"
    terminal = Terminal(f"leuktui-e2e-files-{int(time.time())}", command, cwd=tmp_path)
    try:
        asked = terminal.wait_for("holds files but no leuktui workspace", 30)  # the long path wraps the line
        assert "makeonethere?[y/N]" in "".join(asked.split()), asked
        terminal.keys("Enter")
        terminal.wait_for("created", 15)
        said = "".join(terminal.screen().split())  # wrapped at the terminal's width, in a word or between two
        assert "".join(f"leuktui: error: {folder}: not a leuktui workspace; nothing was created".split()) in said, said
        assert [p.name for p in folder.iterdir()] == ["notes.txt"]
    finally:
        terminal.close()


def test_queue_watch_export_and_quit_in_a_real_terminal(tmp_path):
    data = make_dataset(tmp_path / "data" / "demo", n_train=48, n_valid=16, n_test=16, size=32, seed=2)
    home = tmp_path / "home"
    command = f"{shlex.quote(sys.executable)} -m leuktui --home {shlex.quote(str(home))}"
    terminal = Terminal(f"leuktui-e2e-{int(time.time())}", command, cwd=tmp_path)
    try:
        # A new --home is made only when asked (the long path may wrap the line before "[y/N]").
        assert "[y/N]" in terminal.wait_for("does not exist; make a new workspace there?", 30)
        assert not home.exists()
        terminal.type("y")
        terminal.keys("Enter")
        terminal.wait_for("no runs yet", 30)
        terminal.keys("n")
        terminal.wait_for("will queue 1 run", 15)
        terminal.type("tmux-run")
        for field_value in ((8, "32"), (1, "16"), (1, "1")):  # image_size, batch_size, epochs (after name, tags, again, ...)
            tabs, value = field_value
            terminal.keys(*["Tab"] * tabs)
            terminal.keys("C-u")
            terminal.type(value)
        terminal.keys("C-s")
        terminal.wait_for("tmux-run", 15)
        terminal.wait_for("completed", 180)
        terminal.keys("e")
        terminal.wait_for("Export the submission", 10)
        terminal.keys("C-s")
        terminal.wait_for("wrote 16 rows", 120)
        terminal.keys("Escape")
        time.sleep(0.5)
        terminal.keys("q")
        deadline = time.time() + 10
        while terminal.alive() and "leuktui" in terminal.screen() and time.time() < deadline:
            time.sleep(0.2)
    finally:
        terminal.close()
        daemon.stop(Workspace(home))

    with open(home / "exports" / "run-1-single.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    with open(data / "resnet_18_test.csv", newline="") as handle:
        expected = [row[0] for row in list(csv.reader(handle))[1:]]
    assert rows[0] == ["ID", "label"]
    assert [row[0] for row in rows[1:]] == expected
    assert {row[1] for row in rows[1:]} <= {"0", "1"}


def test_a_256_colour_terminal_at_80x24_gets_256_colours(tmp_path):
    """The app's theme is true colour; a terminal that only has 256 colours must get 256-colour
    sequences, not true-colour ones it would show wrongly, and every screen edge must fit 80x24."""
    from tui.seed import seed_workspace

    home = tmp_path / "home"
    seed_workspace(Workspace(home).ensure()).close()
    command = (f"env -u COLORTERM TERM=xterm-256color {shlex.quote(sys.executable)} -m leuktui "
               f"--home {shlex.quote(str(home))} --no-scheduler")
    terminal = Terminal(f"leuktui-256-{int(time.time())}", command, cwd=tmp_path, width=80, height=24)
    try:
        terminal.wait_for("^p palette", 30)
        screen = terminal.wait_for("9 of 9 runs", 15)
        lines = screen.splitlines()
        assert "leuktui" in lines[0] and "^p palette" in lines[23], screen
        coloured = terminal.screen(escapes=True)
        assert "38;5;" in coloured or "48;5;" in coloured, "256-colour sequences"
        assert "38;2;" not in coloured and "48;2;" not in coloured, "no true-colour sequences"
        terminal.keys("Enter")  # the run under the cursor: its charts in 256 colours too
        terminal.wait_for("loss per epoch", 15)
        coloured = terminal.screen(escapes=True)
        assert "38;2;" not in coloured and "48;2;" not in coloured
        terminal.keys("q")
    finally:
        terminal.close()


def test_the_first_five_minutes_of_make_run(tmp_path):
    """What the README's quick start promises, in a real terminal: `make run` writes the demo
    data, opens the app on a new workspace with one queued demo run, the scheduler trains it with
    a rate and an ETA shown during its first epoch, `?` lists the keys, and `q` quits at once
    (the run trains on; the Mistakes tab's own tests look at a trained run's cells)."""
    root = Path(__file__).resolve().parents[2]
    home, demo = tmp_path / "home", tmp_path / "demo"
    command = (f"env COLORTERM=truecolor make -s -C {shlex.quote(str(root))} run HOME_DIR={shlex.quote(str(home))} "
               f"DEMO={shlex.quote(str(demo))}; echo make-ended-$?; sleep 30")
    terminal = Terminal(f"leuktui-make-run-{int(time.time())}", command, cwd=tmp_path)
    try:
        terminal.wait_for("1 of 1 runs", 120)
        assert (demo / "train.csv").is_file() and (home / "leuktui.db").is_file()
        terminal.wait_for("running", 60)
        terminal.keys("Enter")
        deadline = time.time() + 120
        while time.time() < deadline:  # a rate and an ETA as soon as a few steps are done, in epoch 1 already
            screen = terminal.screen()
            if re.search(r"epoch 1/6 step \d+/\d+ +\d+ img/s +ETA \d", screen):
                break
            time.sleep(0.2)
        assert re.search(r"epoch 1/6 step \d+/\d+ +\d+ img/s +ETA \d", screen), screen
        terminal.keys("Escape")
        time.sleep(0.6)
        terminal.keys("?")
        terminal.wait_for("leuktui keys", 10)
        terminal.keys("Escape")
        time.sleep(0.6)  # an escape with a key hard on its heels reads as alt+key
        started = time.time()
        terminal.keys("q")
        terminal.wait_for("make-ended-0", 10)
        assert time.time() - started < 3, "quitting takes no longer than a moment"
    finally:
        terminal.close()
        daemon.stop(Workspace(home))
