"""The app's start-up in a real terminal (tmux), with the terminal asked what it draws images with
(``LEUKTUI_IMAGES=auto``, the default) against the same start without asking (``=text``).

    .venv/bin/python bench/terminal_start.py [--repeats 7]

Each start: a fresh tmux window of 120x40 running ``leuktui --home H --no-scheduler`` on a seeded
workspace of 9 runs, timed from the window's creation to the Runs screen showing "9 of 9 runs"
(read back with ``capture-pane`` every 50 ms: a faster poll takes a core from the app). The two kinds alternate; the medians are printed,
and their difference: the cost of asking the terminal, which the app does while it imports.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def one_start(home: Path, images: str) -> float:
    session = f"bench-start-{images}"
    command = (f"env -u COLUMNS -u LINES LEUKTUI_IMAGES={images} COLORTERM=truecolor "
               f"{shlex.quote(sys.executable)} -m leuktui --home {shlex.quote(str(home))} --no-scheduler")
    subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    started = time.perf_counter()
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "120", "-y", "40", command], check=True)
    try:
        while time.perf_counter() - started < 30:
            screen = subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout
            if "9 of 9 runs" in screen:
                return time.perf_counter() - started
            time.sleep(0.05)
        raise SystemExit(f"the app did not show its runs within 30 s ({images}):\n{screen}")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    if shutil.which("tmux") is None:
        raise SystemExit("tmux is not installed")
    from tui.seed import seed_workspace

    from db import Workspace

    folder = Path(tempfile.mkdtemp(prefix="bench-start-"))
    try:
        home = folder / "home"
        seed_workspace(Workspace(home).ensure()).close()
        one_start(home, "text")  # the first start compiles and caches: not counted
        times: dict[str, list[float]] = {"text": [], "auto": [], "blocks": []}
        kinds = list(times)
        for repeat in range(args.repeats):
            for images in kinds[repeat % 3:] + kinds[:repeat % 3]:  # each kind first in turn
                times[images].append(one_start(home, images))
        off, on = statistics.median(times["text"]), statistics.median(times["auto"])
        print(f"start-up to the Runs screen in tmux, median of {args.repeats}:")
        print(f"  images off (LEUKTUI_IMAGES=text, the reference): {off:.2f} s   (spread {min(times['text']):.2f}-{max(times['text']):.2f})")
        print(f"  images on, the terminal asked (auto):             {on:.2f} s   (spread {min(times['auto']):.2f}-{max(times['auto']):.2f})")
        told = statistics.median(times["blocks"])
        print(f"  images on, told (LEUKTUI_IMAGES=blocks):          {told:.2f} s   (spread {min(times['blocks']):.2f}-{max(times['blocks']):.2f})")
        print(f"  asking costs {on - off:+.2f} s (ratio {on / off:.2f}); told, {told - off:+.2f} s")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
