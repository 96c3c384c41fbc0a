"""Hostile strings: a user's name, tag, note or path reaches the terminal as text, never as markup
or control codes, in the command line and in the app; fuzzed with Hypothesis."""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from textual.widgets import DataTable

from conftest import cli
from db import Database, Workspace, states
from leuktui.formatting import visible

HOSTILE = ["[/]", "[red]lost text[/]", "[bold", "\x1b]0;pwned\x07title", "two\nlines", "\x1b[31mred\x1b[0m", "tab\there", "\x9bcsi"]


def seed(workspace: Workspace, names: list[str]) -> list[int]:
    db = Database(workspace.db_url)
    ids = []
    for name in names:
        run = db.create_run(config={"epochs": 3, "eval_mode": "single", "data_dir": f"/data/{name}"}, config_hash="h",
                            model="resnet18", name=name, tags=[name], notes=name)
        db.add_epoch(run.id, 1, 3, {"val_acc": 0.5, "val_loss": 0.7}, best={"epoch": 1, "val_acc": 0.5})
        ids.append(run.id)
    states.move(db, ids[0], "running", phase=HOSTILE[0], device="cpu")
    db.close()
    return ids


def assert_clean(output: str) -> None:
    bad = [c for c in output if not c.isprintable() and c not in "\n"]
    assert bad == [], f"control characters reached the terminal: {bad!r}"


def test_the_command_line_prints_hostile_names_as_text(tmp_path):
    workspace = Workspace(tmp_path / "home").ensure()
    ids = seed(workspace, HOSTILE)
    listing = cli("ls", home=workspace.home).stdout
    assert_clean(listing)
    rows = listing.splitlines()
    assert len(rows) == 1 + len(HOSTILE), "one row a run: no name splits a row"
    for name in HOSTILE:
        assert visible(name) in listing, name
    queue = cli("queue", "ls", home=workspace.home).stdout
    assert_clean(queue)
    assert visible(HOSTILE[0]) in queue
    for run_id, name in zip(ids, HOSTILE, strict=True):
        shown = cli("show", str(run_id), home=workspace.home).stdout
        assert_clean(shown)
        assert visible(name) in shown and f"notes: {visible(name)}" in shown
    assert json.loads(cli("show", str(ids[1]), "--json", home=workspace.home).stdout)["name"] == HOSTILE[1], \
        "JSON keeps the string exactly"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=40))
def test_any_name_is_printed_as_text_and_in_one_row(tmp_path_factory, name):
    workspace = Workspace(tmp_path_factory.mktemp("fuzz") / "home").ensure()
    seed(workspace, [name, "other"])
    for args in (("ls",), ("show", "1"), ("queue", "ls")):
        result = cli(*args, home=workspace.home, check=False)
        assert result.returncode == 0, (args, result.stderr)
        assert_clean(result.stdout)
    assert len(cli("ls", home=workspace.home).stdout.splitlines()) == 3


@given(text=st.text(max_size=60))
def test_visible_leaves_no_control_character_and_keeps_printable_text(text):
    shown = visible(text)
    assert all(c.isprintable() for c in shown)
    if text.isprintable():
        assert shown == text
    assert visible(text + string.ascii_letters).endswith(string.ascii_letters)


async def test_the_app_shows_hostile_names_as_text(tmp_path):
    from tui.conftest import make_app, wait_until

    workspace = Workspace(tmp_path / "home").ensure()
    (workspace.home / "keymap.json").write_text(json.dumps({"[/]": "x", "[red]": "y"}))
    seed(workspace, HOSTILE)
    app = make_app(workspace)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: app.loaded, message="the runs")
        table = app.screen.query_one("#runs", DataTable)
        await wait_until(pilot, lambda: table.row_count == len(HOSTILE), message="every run listed")
        cells = {str(table.get_row_at(row)[2]) for row in range(table.row_count)}
        assert cells == {visible(name) for name in HOSTILE}
        for row in range(table.row_count):  # open each run: its head, config and evaluations render
            table.move_cursor(row=row)
            await pilot.press("enter")
            await wait_until(pilot, lambda: app.screen.id != "runs" and app.screen.__class__.__name__ == "RunDetailScreen",
                             message="the run screen")
            await pilot.pause()
            await pilot.press("escape")
            await wait_until(pilot, lambda: app.screen.query("#runs"), message="back on the runs")
        await pilot.press("slash")  # a filter that quotes markup back in its error notification
        await pilot.press(*"x=[/]", "enter")
        await pilot.pause(0.2)
        await pilot.press("escape")
        await pilot.press("t")  # the tags dialog quotes the name
        await pilot.pause()
        await pilot.press("escape")
        await pilot.press("space", "d")  # the confirmation quotes the ids
        await pilot.pause()
        await pilot.press("escape")
        await pilot.pause()
        assert app.is_running, "nothing crashed the app"


def test_a_new_run_never_trains_on_or_resumes_from_an_older_records_folder(tmp_path, tiny_data):
    home = tmp_path / "home"
    home.mkdir()
    for run_id, owner in ((1, "run 1 created 1700000000.0\n"), (2, None)):  # another record's, and one from before owners
        old = home / "runs" / str(run_id) / "checkpoints"
        old.mkdir(parents=True)
        (old / "last.pt").write_bytes(b"another run's checkpoint")
        if owner:
            (old.parent / "owner").write_text(owner)
    small = ["--data-dir", str(tiny_data), "--image-size", "16", "--batch-size", "16", "--epochs", "1", "--amp", "off"]
    for run_id in (1, 2):
        result = cli("run", *small, "--seed", str(run_id), home=home)
        assert result.stdout.strip().splitlines()[-1] == str(run_id)
        shown = json.loads(cli("show", str(run_id), "--json", home=home).stdout)
        assert shown["status"] == "completed" and [e["epoch"] for e in shown["epochs"]] == [1]
        (aside,) = (home / "runs").glob(f"{run_id}.orphan-*")
        assert (aside / "checkpoints" / "last.pt").read_bytes() == b"another run's checkpoint", "nothing lost"
        owner = (home / "runs" / str(run_id) / "owner").read_text().strip()
        assert owner == f"run {run_id} created {shown['created_at']!r}"
    # Its own folder is its own: a resume keeps it.
    cli("resume", "1", "--foreground", home=home, check=False)
    assert len(list((home / "runs").glob("1.orphan-*"))) == 1


def test_an_empty_database_file_is_refused_not_taken_for_a_new_one(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "leuktui.db").write_bytes(b"")
    for args in (("ls",), ("queue", "ls")):
        result = cli(*args, home=home, check=False)
        assert result.returncode == 1, args
        assert result.stderr.strip() == (f"leuktui: error: {home / 'leuktui.db'}: an empty file (0 bytes), not a leuktui "
                                         "database; restore it, or move it away to start anew"), args
    assert (home / "leuktui.db").stat().st_size == 0, "left as it was"


def test_a_run_config_from_the_database_never_makes_the_worker_import_code(tmp_path, tiny_data):
    """A lab member edits a shared database's row: ``model = "tempfile:mkdtemp"``. The worker of
    the user who runs it refuses; the function is never called."""
    import os
    import subprocess
    import sys

    from conftest import tiny_config

    workspace = Workspace(tmp_path / "home").ensure()
    db = Database(workspace.db_url)
    config = {**tiny_config(tiny_data, fast=True, epochs=1).to_dict(), "model": "tempfile:mkdtemp"}
    run = db.create_run(config=config, config_hash="edited", model="tempfile:mkdtemp", name="planted")
    assert states.move(db, run.id, "running")
    trap = tmp_path / "tmp"
    trap.mkdir()
    env = {**os.environ, "TMPDIR": str(trap), "XDG_CONFIG_HOME": str(tmp_path / "config"), "PYTHONSAFEPATH": "1"}
    env.pop("LEUKTUI_MODELS", None)
    worker = subprocess.run([sys.executable, "-m", "engine.worker", str(run.id), "--home", str(workspace.home)],
                            capture_output=True, text=True, env=env, timeout=120)
    assert worker.returncode == 1
    assert "which you have not allowed" in db.get_run(run.id).error
    assert db.get_run(run.id).status == "failed"
    assert list(trap.iterdir()) == [], "mkdtemp never ran"
    queued = cli("queue", "--data-dir", str(tiny_data), "--model", "tempfile:mkdtemp", "--no-start", home=workspace.home,
                 check=False, env={"XDG_CONFIG_HOME": str(tmp_path / "config")})
    assert queued.returncode == 2 and "--model: 'tempfile:mkdtemp' runs code from 'tempfile'" in queued.stderr
    db.close()


def test_a_fifo_a_folder_or_a_device_where_a_file_belongs_is_one_line(tmp_path, tiny_data):
    import os
    import shutil

    from db.files import NotAFile, open_regular

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    image = next((data / "new_dataset" / "valid").glob("*.bmp"))
    image.unlink()
    os.mkfifo(image)  # a FIFO opened for reading would wait for a writer forever
    checked = cli("data", "check", str(data), check=False)
    assert checked.returncode == 1 and f"{image}: is a FIFO, not a file" in checked.stdout
    (data / "valid.csv").unlink()
    os.mkfifo(data / "valid.csv")
    assert f"{data / 'valid.csv'}: is a FIFO, not a file" in cli("data", "check", str(data), check=False).stdout
    queued = cli("queue", "--data-dir", str(data), "--no-start", home=tmp_path / "h", check=False)
    assert queued.returncode == 2 and f"{data / 'valid.csv'}: is a FIFO, not a file" in queued.stderr

    home = tmp_path / "home"
    Database(Workspace(home).ensure().db_url).close()
    os.mkfifo(home / "scheduler.json")
    status = cli("scheduler", "status", home=home, check=False)
    assert status.returncode == 1 and status.stderr.strip() == \
        f"leuktui: error: {home / 'scheduler.json'}: is a FIFO, not a file; it should hold the scheduler's options"
    os.mkfifo(home / "marked.json")
    assert Workspace(home).marked_runs() == []
    for path, kind in ((Path("/dev/null"), "a device"), (tmp_path, "a folder")):
        with pytest.raises(NotAFile, match=f"is {kind}, not a file"):
            open_regular(path)


def test_a_csv_row_no_file_can_be_named_by_is_one_line_naming_its_line(tmp_path, tiny_data):
    """A field past the csv module's limit, a Path longer than a file name may be, a NUL in a Path,
    and an image that is a loop of links: one line each, naming the file and line."""
    import os
    import shutil

    from engine.datasets import DatasetError, load_split
    from engine.pipeline import Preprocess, decode_images

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    train = (data / "train.csv").read_text()
    line = len(train.splitlines()) + 1
    for row, words in (("x" * 200_000 + ",1", "field larger than field limit (131072)"),
                       ("./new_dataset/train/" + "n" * 5000 + ".bmp,1", "cannot name a file (File name too long)"),
                       ("./new_dataset/train/a\0b.bmp,1", "the Path holds a NUL character")):
        (data / "train.csv").write_text(train + row + "\n")
        checked = cli("data", "check", str(data), check=False)
        assert checked.returncode == 1 and f"{data / 'train.csv'} line {line}: " in checked.stdout and words in checked.stdout
        queued = cli("queue", "--data-dir", str(data), "--no-start", home=tmp_path / "h", check=False)
        assert queued.returncode == 2 and queued.stderr.count("\n") == 1 and words in queued.stderr, queued.stderr
    assert not (tmp_path / "h" / "leuktui.db").exists() or Database(Workspace(tmp_path / "h").db_url).list_runs() == []
    (data / "train.csv").write_text(train)

    image = sorted((data / "new_dataset" / "train").glob("*.bmp"))[0]
    image.unlink()
    os.symlink(image.name, image)  # a link to itself
    samples = load_split(data, "train").samples
    with pytest.raises(DatasetError, match=rf"^{image}: image cannot be read \(Too many levels of symbolic links\)$"):
        decode_images(samples, Preprocess(size=16), cache_dir=tmp_path / "cache")

    big = tmp_path / "big.csv"
    big.write_text("ID,label\n" + "y" * 200_000 + ",1\n")
    scored = cli("score", str(big), "--key", str(data / "test_answer_key.csv"), check=False)
    assert scored.returncode == 1 and scored.stderr.strip() == f"leuktui: error: {big} line 2: field larger than field limit (131072)"


def test_a_path_with_control_characters_is_printed_as_text_when_all_goes_well(tmp_path):
    """Success lines name paths as text too: an ESC or BEL in a folder's name never reaches the
    terminal (it would retitle or recolour it)."""
    from leuktui.formatting import visible

    root = tmp_path / "syn\x1b]0;TITLE\x07"
    said = cli("data", "synth", str(root), "--n-train", "4", "--n-valid", "4", "--n-test", "2", "--size", "16").stdout
    assert "\x1b" not in said and "\x07" not in said and f"to {visible(str(root))}" in said, said


def test_an_image_too_large_to_be_a_cell_is_refused_naming_it(tmp_path, monkeypatch):
    from PIL import Image

    from engine.datasets import DatasetError
    from engine.pipeline import read_image
    from engine.preprocess import Preprocess

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # as if each were a bomb of 90 megapixels
    for side in (40, 100):  # over the warning limit, and over twice it (PIL's own error)
        path = tmp_path / f"bomb-{side}.png"
        Image.new("RGB", (side, side)).save(path)
        with pytest.raises(DatasetError, match=f"{path}: more than 1000 pixels, refused"):
            read_image(path, Preprocess(16))


def test_a_16_bit_image_is_scaled_not_clipped_to_white(tmp_path):
    import numpy as np
    from PIL import Image

    from engine.pipeline import read_image
    from engine.preprocess import Preprocess

    ramp = np.tile(np.linspace(0, 65535, 32, dtype=np.uint16), (32, 1))
    path = tmp_path / "deep.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I")
    pixels = read_image(path, Preprocess(32))
    assert pixels[:, 0].max() == 0 and pixels[:, -1].min() == 255
    assert 100 < pixels.mean() < 155, "a ramp, not a white square"


def test_a_truncated_cache_file_is_decoded_again(tmp_path, tiny_data):
    from engine.datasets import load_split
    from engine.pipeline import decode_images
    from engine.preprocess import Preprocess

    samples = load_split(tiny_data, "valid").samples
    first = decode_images(samples, Preprocess(16), cache_dir=tmp_path)
    (cache,) = tmp_path.glob("*.npy")
    cache.write_bytes(cache.read_bytes()[:200])
    again = decode_images(samples, Preprocess(16), cache_dir=tmp_path)
    assert (again == first).all()
    assert cache.stat().st_size > 200, "the damaged file was replaced"


def test_settings_and_database_urls_of_the_wrong_kind_are_one_line(tmp_path):
    home = tmp_path / "home"
    Database(Workspace(home).ensure().db_url).close()
    cases = [
        ({"LEUKTUI_BUSY_TIMEOUT_MS": "soon"}, "LEUKTUI_BUSY_TIMEOUT_MS='soon': expected a whole number"),
        ({"LEUKTUI_WRITE_WAIT_SECONDS": "nan"}, "LEUKTUI_WRITE_WAIT_SECONDS='nan': expected a number"),
        ({"LEUKTUI_DB": "mysql://lab@db/x"}, "leuktui runs on sqlite or postgresql, not 'mysql'"),
        ({"LEUKTUI_DB": "postgresql://lab:s3cret@db:port/x"}, "not a database URL"),
    ]
    for env, message in cases:
        result = cli("ls", home=home, check=False, env=env)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1 and message in lines[0], (env, result.stderr)
        assert "s3cret" not in result.stderr


def test_a_one_class_training_set_is_refused_at_queue_time_as_by_data_check(tmp_path, tiny_data):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    rows = (data / "train.csv").read_text().splitlines()
    (data / "train.csv").write_text("\n".join([rows[0], *(r.rsplit(",", 1)[0] + ",1" for r in rows[1:])]) + "\n")
    message = f"{data / 'train.csv'}: only one class present; training needs ALL and HEM"
    assert message in cli("data", "check", str(data), check=False).stdout
    queued = cli("queue", "--data-dir", str(data), "--no-start", home=tmp_path / "home", check=False)
    assert queued.returncode == 2 and queued.stderr.strip() == f"leuktui: error: --data-dir: {message}"


def test_data_synth_onto_a_file_or_where_nothing_can_be_written_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    onto = cli("data", "synth", str(blocker), check=False)
    assert onto.returncode == 2 and onto.stderr.strip() == f"leuktui: error: {blocker}: is a file, not a folder for the dataset"
    into = cli("data", "synth", "/proc/leuktui-synth", check=False)
    assert into.returncode == 1 and "/proc/leuktui-synth: the dataset cannot be written there" in into.stderr


def test_the_report_folder_follows_the_workspaces_mode(tmp_path):
    import os
    import stat

    from tui.seed import seed_workspace

    from leuktui.report.build import build_report

    workspace = Workspace(tmp_path / "home").ensure()
    db = seed_workspace(workspace)
    saved = os.umask(0o077)
    try:
        result = build_report(db, workspace, [db.get_run(1)], tmp_path / "private")
        assert stat.S_IMODE(result.folder.stat().st_mode) == 0o700
        os.umask(0o007)
        result = build_report(db, workspace, [db.get_run(1)], tmp_path / "group")
        assert stat.S_IMODE(result.folder.stat().st_mode) == 0o770
    finally:
        os.umask(saved)
        db.close()


def test_a_planted_run_folder_is_moved_aside_not_written_through(tmp_path):
    import os

    from runner import control

    workspace = Workspace(tmp_path / "home").ensure()
    db = Database(workspace.db_url)
    run = db.create_run(config={"epochs": 1}, config_hash="h", model="resnet18", name="r")
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    planted = workspace.run_dir(run.id)
    planted.mkdir(parents=True)
    os.mkfifo(planted / "owner")  # a read of it would hang the scheduler
    (planted / "train.log").symlink_to(victim)  # an append through it would write the victim
    aside = workspace.claim_run_dir(run.id, run.owner, fresh=True)
    assert aside is not None and (aside / "train.log").is_symlink()
    assert (planted / "owner").read_text().strip() == run.owner and not (planted / "train.log").exists()
    assert victim.read_text() == "keep me"

    # delete removes its own folder, never another record's.
    other = db.create_run(config={"epochs": 1}, config_hash="h", model="resnet18", name="other")
    theirs = workspace.run_dir(other.id)
    theirs.mkdir(parents=True)
    (theirs / "owner").write_text("run 99 created 1.0\n")
    control.delete(db, workspace, other.id)
    assert theirs.is_dir(), "another record's folder stays"
    control.delete(db, workspace, run.id)
    assert not planted.exists()
    db.close()


def test_a_scheduler_json_of_another_user_gives_no_backend_settings(tmp_path):
    import os

    if os.getuid() != 0:
        pytest.skip("a file of another user is made with chown, which needs root")
    home = tmp_path / "home"
    Database(Workspace(home).ensure().db_url).close()
    options = home / "scheduler.json"
    options.write_text(json.dumps({"backend": "slurm", "partition": "gpu", "sbatch_args": ["--export=ALL,BASH_ENV=/tmp/x"]}))
    os.chown(options, 4321, 4321)
    result = cli("scheduler", "status", home=home, check=False)
    assert result.returncode == 1 and "written by another user (uid 4321)" in result.stderr
    options.write_text(json.dumps({"max_parallel": 2}))  # ours again? no: still uid 4321, but no settings
    assert "max_parallel 2" in cli("scheduler", "status", home=home).stdout
    os.chown(options, 0, 0)
    for planted in ({"backend": "slurm", "partition": "gpu\n#SBATCH --wrap=evil"}, {"backend": "slurm", "sbatch_args": ["x"]}):
        options.write_text(json.dumps(planted))
        refused = cli("scheduler", "status", home=home, check=False)
        assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr


def test_an_export_through_a_link_is_recorded_under_the_links_name(tmp_path, tiny_data):
    home = tmp_path / "home"
    cli("run", "--data-dir", str(tiny_data), "--image-size", "16", "--batch-size", "16", "--epochs", "1", "--amp", "off", home=home)
    target = tmp_path / "target.csv"
    target.write_text("old")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    result = cli("export", "1", "-o", str(link), "--force", home=home)
    assert f"wrote 16 rows to {link}" in result.stdout and "recorded as submission 1" in result.stdout
    assert json.loads(cli("submissions", "--json", home=home).stdout)[0]["path"] == str(link)


@settings(max_examples=80, deadline=None)
@given(name=st.text(max_size=40))
def test_any_string_in_an_app_cell_renders_as_itself(name):
    """What every table, dialog and notification of the app shows a user's string through
    (``cells.plain``, and ``refill`` for table cells): rendered as written, markup or not."""
    import io

    from rich.console import Console
    from textual.widgets._data_table import default_cell_formatter

    from leuktui.cells import plain

    out = io.StringIO()
    console = Console(file=out, width=200, color_system=None)
    console.print(default_cell_formatter(plain(name)))
    console.print(plain(f"run 1 ({name})"))
    rendered = out.getvalue()
    assert_clean(rendered)
    assert visible(name).strip() in rendered.replace("\n", "") or not visible(name).strip()


def test_delete_then_queue_never_reuses_an_id_on_postgresql(tmp_path, tiny_data, pg_url):
    home = tmp_path / "home"
    env = {"LEUKTUI_DB": pg_url}
    for _ in range(2):
        cli("queue", "--data-dir", str(tiny_data), "--no-start", "--force", home=home, env=env)
    cli("delete", "2", "--yes", home=home, env=env)
    queued = json.loads(cli("queue", "--data-dir", str(tiny_data), "--no-start", "--force", "--json", home=home, env=env).stdout)
    assert queued["run_ids"] == [3]


def test_a_report_on_hostile_names_holds_them_as_text_in_every_file(tmp_path):
    """A run's name reaches the report's Markdown, HTML, CSV tables and SVG figures as text: no
    control character (`cat report.md` would retitle the terminal, and an SVG with one is not
    XML), no HTML a Markdown viewer would run, and no font warnings on stderr."""
    import warnings
    import xml.etree.ElementTree as ElementTree

    from leuktui.report.build import build_report

    workspace = Workspace(tmp_path / "home").ensure()
    names = ["n\x1b]0;pwn\x07\x1b[31mred\r\nline2\x9b1m", "<script>alert(1)</script>", "one`tick <i>it</i> **b** _x_ [l](u) a\\b |p|"]
    ids = seed(workspace, names)
    db = Database(workspace.db_url)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = build_report(db, workspace, [db.get_run(i) for i in ids], tmp_path / "report")
    finally:
        db.close()
    assert [str(w.message) for w in caught if "Glyph" in str(w.message)] == []
    files = [path for path in result.folder.rglob("*") if path.suffix in (".md", ".html", ".csv", ".svg")]
    assert any(path.suffix == ".svg" for path in files)
    for path in files:
        content = path.read_text(encoding="utf-8")
        assert_clean(content.replace("\t", " ").replace("\r", ""))
        if path.suffix == ".svg":
            ElementTree.fromstring(content)  # well-formed XML
    markdown = (result.folder / "report.md").read_text()
    import re

    prose = re.sub(r"```.*?```", "", markdown, flags=re.DOTALL)  # a code block shows its text as it is
    assert "<script>" not in prose and "\\<script\\>alert(1)\\</script\\>" in prose
    assert "<script>alert" not in (result.folder / "report.html").read_text()
    assert "n\\x1b]0;pwn\\x07\\x1b[31mred↵↵line2\\x9b1m" in markdown
    # Backticks, emphasis, links and pipes in a name are shown, not taken as formatting, in both documents.
    assert "one\\`tick \\<i\\>it\\</i\\> \\*\\*b\\*\\* \\_x\\_ \\[l\\](u) a\\\\b \\|p\\|" in prose, prose
    page = (result.folder / "report.html").read_text()
    assert "one`tick &lt;i&gt;it&lt;/i&gt; **b** _x_ [l](u) a\\b |p|" in page
    assert "<code>tick" not in page, "a name's backtick opens no code span"
