"""The command line through `main(argv)` on a real workspace (a real subprocess where the process is what is tested)."""

import contextlib
import csv
import json
import os
import sqlite3
import sys
from pathlib import Path

import pytest
from test_metrics import from_confusion

from conftest import cli, run_cli, wait_for
from db.vocabulary import METRICS

# The tests of the trained workspace on one pytest-xdist worker: that run is trained once.
ON_TRAINED = pytest.mark.xdist_group("cli-trained")


def _csv(path):
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_data):
    """One workspace with one completed run, shared by the read-only tests below."""
    home = tmp_path_factory.mktemp("cli") / "home"
    result = cli("run", "--data-dir", str(tiny_data), "--image-size", "32", "--epochs", "2", "--batch-size", "16",
                     "--name", "first", "--tag", "smoke", "--no-vflip", home=home)
    run_id = int(result.stdout.strip().splitlines()[-1])
    return home, run_id, result


@ON_TRAINED
def test_run_prints_epochs_and_the_run_id(trained):
    home, run_id, result = trained
    assert run_id == 1
    assert "epoch   2/2" in result.stdout
    assert "completed" in result.stdout


@ON_TRAINED
def test_ls_and_show_json(trained):
    home, run_id, _ = trained
    runs = json.loads(cli("ls", "--json", home=home).stdout)
    assert [(r["id"], r["name"], r["status"], r["tags"], r["epochs_done"]) for r in runs] == [(1, "first", "completed", ["smoke"], 2)]
    detail = json.loads(cli("show", str(run_id), "--json", home=home).stdout)
    assert detail["config"]["vflip"] is False and detail["config"]["image_size"] == 32
    assert [e["epoch"] for e in detail["epochs"]] == [1, 2]
    assert detail["best_val_acc"] == max(e["val_acc"] for e in detail["epochs"])
    best = next(e for e in detail["epochs"] if e["epoch"] == detail["best_epoch"])
    for metric in METRICS:  # every registered metric, MCC and balanced accuracy included
        assert runs[0][metric.summary_key] == best[metric.epoch_column] is not None, metric.key
    for epoch in detail["epochs"]:
        for key, value in from_confusion(epoch["confusion"]).items():
            assert epoch[next(m.epoch_column for m in METRICS if m.key == key)] == pytest.approx(value), key
    assert "first" in cli("ls", home=home).stdout
    assert "best epoch" in cli("show", str(run_id), home=home).stdout


@ON_TRAINED
def test_eval_records_test_time_augmentation(trained):
    home, run_id, _ = trained
    import contextlib
    import io

    from leuktui.cli import main

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    # On a terminal it is never silent while it works: each phase on stderr, the JSON alone on stdout.
    said, out = Terminal(), io.StringIO()
    with contextlib.redirect_stderr(said), contextlib.redirect_stdout(out):
        assert main(["--home", str(home), "eval", str(run_id), "--json"]) == 0
    assert f"loading run {run_id}'s best checkpoint" in said.getvalue() and "predicting" in said.getvalue()
    assert json.loads(out.getvalue())["tta"] == "single"
    done = cli("eval", str(run_id), "--tta", "five", "--json", home=home)
    assert done.stderr == ""  # to a pipe: nothing but the result (an error would be its one line)
    result = json.loads(done.stdout)
    assert result["tta"] == "five" and result["split"] == "valid" and result["n"] == 24
    assert sum(map(sum, result["confusion"])) == 24
    detail = json.loads(cli("show", str(run_id), "--json", home=home).stdout)
    assert any(e["tta"] == "five" and e["acc"] == result["acc"] for e in detail["evaluations"])
    for key, value in from_confusion(result["confusion"]).items():
        assert result[key] == pytest.approx(value), key
    assert "Matthews correlation" in cli("eval", str(run_id), "--tta", "single", home=home).stdout


@ON_TRAINED
def test_export_writes_the_submission_in_the_test_csvs_order(trained, tiny_data, tmp_path):
    home, run_id, _ = trained
    out = tmp_path / "submission.csv"
    result = cli("export", str(run_id), "-o", str(out), "--tta", "ten", home=home)
    assert f"wrote 16 rows to {out}" in result.stdout
    rows = _csv(out)
    assert rows[0] == ["ID", "label"]
    # resnet18's run defaults to resnet_18_test.csv and keeps its row order exactly.
    assert [r[0] for r in rows[1:]] == [r[0] for r in _csv(tiny_data / "resnet_18_test.csv")[1:]]
    assert {r[1] for r in rows[1:]} <= {"0", "1"}

    other = tmp_path / "152.csv"
    cli("export", str(run_id), "-o", str(other), "--test-csv", str(tiny_data / "resnet_152_test.csv"), "--proba", home=home)
    rows152 = _csv(other)
    assert rows152[0] == ["ID", "label", "prob_all"]
    assert [r[0] for r in rows152[1:]] == [r[0] for r in _csv(tiny_data / "resnet_152_test.csv")[1:]]
    assert all(0 <= float(r[2]) <= 1 and r[1] == str(int(float(r[2]) >= 0.5)) for r in rows152[1:])

    score = json.loads(cli("score", str(other), "--key", str(tiny_data / "test_answer_key.csv"), "--json").stdout)
    assert score["n"] == 16 and 0 <= score["acc"] <= 1

    valid = tmp_path / "valid.csv"
    cli("export", str(run_id), "-o", str(valid), "--test-csv", str(tiny_data / "valid.csv"), home=home)
    assert len(_csv(valid)) == 25


@ON_TRAINED
def test_export_never_overwrites_what_it_does_not_own(trained, tiny_data, tmp_path):
    home, run_id, _ = trained
    dataset_csv = tiny_data / "resnet_18_test.csv"
    before = dataset_csv.read_bytes()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for target, message in ((dataset_csv, "inside the dataset folder"), (tiny_data / "train.csv", "inside the dataset folder"),
                            (Path("/dev/null"), "not a regular file"), (fifo, "not a regular file"),
                            (tmp_path, "is a folder")):
        result = cli("export", str(run_id), "-o", str(target), "--force", home=home, check=False)
        assert result.returncode == 1 and message in result.stderr, (target, result.stderr)
    assert dataset_csv.read_bytes() == before, "the dataset is as it was"

    # Nor the workspace's own files: its database, a run's checkpoint, anything in it but exports/.
    database, checkpoint = home / "leuktui.db", home / "runs" / str(run_id) / "checkpoints" / "best.pt"

    def rows():  # the database's content: its file's bytes move when SQLite checkpoints its -wal into it
        with contextlib.closing(sqlite3.connect(database)) as connection:
            return list(connection.iterdump())

    kept = {checkpoint: checkpoint.read_bytes()}
    content = rows()
    for target in (database, checkpoint, home / "runs" / "new.csv", home / "exports" / ".." / "keymap.json"):
        result = cli("export", str(run_id), "-o", str(target), "--force", home=home, check=False)
        assert result.returncode == 1 and len(result.stderr.splitlines()) == 1, (target, result.stderr)
        assert f"inside the workspace {home.resolve()}, among its database, runs and caches" in result.stderr, result.stderr
    assert rows() == content and all(path.read_bytes() == data for path, data in kept.items())
    assert not (home / "runs" / "new.csv").exists()
    assert not (home / "keymap.json").exists()
    shared = tmp_path / "shared.db"  # a database outside the home ($LEUKTUI_DB) is as much the workspace's
    with sqlite3.connect(database) as source, sqlite3.connect(shared) as copy:
        source.backup(copy)
    copied = shared.read_bytes()
    result = cli("export", str(run_id), "-o", str(shared), "--force", home=home, check=False, env={"LEUKTUI_DB": f"sqlite:///{shared}"})
    assert result.returncode == 1 and f"{shared}: is the workspace's database" in result.stderr, result.stderr
    assert shared.read_bytes() == copied

    # A test CSV that names an ID twice would make a submission Kaggle refuses: refused, naming both lines.
    doubled = tmp_path / "doubled.csv"
    lines = (tiny_data / "resnet_18_test.csv").read_text().splitlines()
    doubled.write_text("\n".join([*lines, lines[3]]) + "\n")
    result = cli("export", str(run_id), "--test-csv", str(doubled), "-o", str(tmp_path / "doubled-out.csv"), home=home, check=False)
    assert result.returncode == 1 and len(result.stderr.splitlines()) == 1, result.stderr
    assert f"{doubled} line {len(lines) + 1}: ID {lines[3].split(',')[0]!r} repeats line 4" in result.stderr, result.stderr
    assert not (tmp_path / "doubled-out.csv").exists()

    # The default names never collide: a second export is a second file.
    first = cli("export", str(run_id), home=home).stdout
    second = cli("export", str(run_id), home=home).stdout
    assert "exports/run-1-single.csv" in first and "exports/run-1-single-2.csv" in second

    mine = tmp_path / "mine.csv"
    cli("export", str(run_id), "-o", str(mine), home=home)
    again = cli("export", str(run_id), "-o", str(mine), home=home, check=False)
    assert again.returncode == 1 and "already exists" in again.stderr
    earlier = json.loads(cli("submissions", "--json", home=home).stdout)[-1]
    assert earlier["path"] == str(mine)
    cli("export", str(run_id), "-o", str(mine), "--force", "--tta", "five", home=home)
    records = json.loads(cli("submissions", "--json", home=home).stdout)
    paths = [r["path"] for r in records]
    assert len(paths) == len(set(paths)), "no two recorded submissions name one file"
    moved = next(r for r in records if r["id"] == earlier["id"])
    assert moved["path"] == str(tmp_path / f"mine.submission-{earlier['id']}.csv") and Path(moved["path"]).is_file()
    assert records[-1]["path"] == str(mine) and records[-1]["tta"] == "five"


@ON_TRAINED
def test_user_errors_are_one_line_and_non_zero(trained, tmp_path):
    home, run_id, _ = trained
    cases = [
        (("run", "--image-size", "abc"), 2, "--image-size: 'abc' is not an integer"),
        (("run", "--optimizer", "rmsprop"), 2, "--optimizer: 'rmsprop' is not one of adam, adamw, sgd"),
        (("run", "--model", "resnet34"), 2, "--model:"),
        (("show", "99"), 1, "run 99: no such run"),
        (("show", "abc"), 2, "'abc' is not a run id"),
        (("export", str(run_id), "-o", str(tmp_path / "missing" / "x.csv")), 1, "output folder does not exist"),
        (("eval", str(run_id), "--tta", "seven"), 2, "--tta: 'seven'"),
        (("export", str(run_id), "--checkpoint", "middle"), 2, "--checkpoint: invalid choice: 'middle'"),
        (("resume", str(run_id)), 1, "only interrupted, cancelled or failed runs resume"),
    ]
    for args, status, message in cases:
        result = cli(*args, home=home, check=False)
        assert result.returncode == status, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0] and lines[0].startswith("leuktui: error:"), (args, result.stderr)
    assert not (tmp_path / "missing").exists()


def test_a_run_that_cannot_work_here_is_refused_before_it_is_recorded(tmp_path, tiny_data):
    home = tmp_path / "home"
    no_gpus = {"LEUKTUI_GPUS": ""}
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "train.csv").write_text("Path,label\n./missing/0.bmp,1\n")
    cases = [
        (("queue", "--data-dir", str(tmp_path / "no-such-folder"), "--grid", "lr=0.1,0.01"),
         f"--data-dir: {tmp_path / 'no-such-folder'}: no such dataset folder"),
        (("run", "--data-dir", str(tmp_path / "no-such-folder")), "--data-dir:"),
        (("queue", "--data-dir", str(broken)), f"--data-dir: {broken / 'missing' / '0.bmp'}: image file is missing (first row of train.csv)"),
        (("queue", "--data-dir", str(tiny_data), "--test-csv", "nope.csv"), "--test-csv: "),
        (("queue", "--data-dir", str(tiny_data), "--pretrained", str(tmp_path / "w.pth")), f"--pretrained: {tmp_path / 'w.pth'}: no such file"),
        (("queue", "--data-dir", str(tiny_data), "--pretrained", str(tiny_data / "train.csv")),
         f"--pretrained: {tiny_data / 'train.csv'}: not a file torch.save wrote"),
        (("queue", "--data-dir", str(tiny_data / "train.csv")), f"--data-dir: {tiny_data / 'train.csv'}: not a folder; give the dataset folder"),
        (("queue", "--data-dir", str(tiny_data), "--device", "cuda:1"), "--device: 'cuda:1' asked for, but this machine has no CUDA device"),
        (("queue", "--data-dir", str(tiny_data), "--device", "mps"), "--device: 'mps' asked for, but this machine has no Apple GPU"),
        (("queue", "--data-dir", str(tiny_data), "--lr", "nan"), "--lr: nan is not a finite number"),
        (("queue", "--data-dir", str(tiny_data), "--tag", ""), "--tag: a tag is not empty"),
        (("queue", "--data-dir", str(tiny_data), "--tag", "x,y"), "--tag: 'x,y' has a comma (tags are listed comma-separated)"),
        (("queue", "--data-dir", str(tiny_data), "--tag", "a\x1b[31m"), "--tag: 'a\\x1b[31m' has a control character"),
        (("run", "--data-dir", str(tiny_data), "--tag", "x,y"), "--tag: 'x,y' has a comma"),
        (("queue", "--data-dir", str(tiny_data), "--grid", "lr=0.1,inf"), "--lr: inf is not a finite number (in --grid lr=...)"),
        (("queue", "--data-dir", str(tiny_data), "--grid", "lr=,"), "--grid: 'lr=,' has an empty value"),
        (("queue", "--data-dir", str(tiny_data), "--grid", "lr=0.01,"), "--grid: 'lr=0.01,' has an empty value"),
        (("queue", "--data-dir", str(tiny_data), "--notes", "ok\nthen\x1b]0;title\x07"),
         "--notes: line 2 has a control character ('\\x1b'); notes are lines of text"),
        (("run", "--data-dir", str(tiny_data), "--notes", "\u202e"), "--notes: line 1 has a control character"),
        (("queue", "--data-dir", str(tiny_data), "--notes", "GOOD\rBAD"), "--notes: line 1 has a control character ('\\r')"),
        (("queue", "--data-dir", str(tiny_data), "--notes", "a\udcffb"), "--notes: has bytes that are not UTF-8 text"),  # printf 'a\xffb'
        (("run", "--data-dir", str(tiny_data), "--name", "n\udcffm"), "--name: has bytes that are not UTF-8 text"),
        (("queue", "--data-dir", str(tiny_data), "--tag", "t\udcff"), "--tag: has bytes that are not UTF-8 text"),
    ]
    for args, message in cases:
        result = cli(*args, "--no-start", home=home, check=False, env=no_gpus) if args[0] == "queue" else \
            cli(*args, home=home, check=False, env=no_gpus)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and message in lines[0], (args, result.stderr)
    assert not home.exists(), "nothing recorded: not even the workspace these refused commands would have made"
    # Text from a word processor or a web page is text: no-break spaces, an emoji's joiner, Windows line ends.
    pasted = "5\xa0mg per\u2009dose 👩\u200d🔬\r\nsecond line\tand a tab"
    cli("queue", "--data-dir", str(tiny_data), "--notes", pasted, "--no-start", home=tmp_path / "notes-home")
    assert json.loads(cli("ls", "--json", home=tmp_path / "notes-home").stdout)[0]["notes"] == pasted
    bad_gpus = cli("queue", "--data-dir", str(tiny_data), "--no-start", home=home, check=False, env={"LEUKTUI_GPUS": "0,x"})
    assert bad_gpus.returncode == 1 and bad_gpus.stderr.strip() == \
        "leuktui: error: LEUKTUI_GPUS='0,x': expected GPU indices such as 0,1 (or empty for none)"


@ON_TRAINED
def test_a_submission_is_never_scored_against_itself_or_a_non_file(trained, tiny_data, tmp_path):
    home, run_id, _ = trained
    out = tmp_path / "sub.csv"
    cli("export", str(run_id), "-o", str(out), "--proba", home=home)
    copy = tmp_path / "copy.csv"
    copy.write_text("\n".join(",".join(row[:2]) for row in _csv(out)) + "\n")
    cli("export", str(run_id), "-o", str(tmp_path / "plain.csv"), home=home)
    fifo = tmp_path / "key.fifo"
    os.mkfifo(fifo)
    for key, message in ((out, "is recorded submission "), (tmp_path / "plain.csv", "is recorded submission"),
                         (fifo, "is a FIFO, not a file"), (tmp_path, "is a folder")):
        result = cli("score", str(out), "--key", str(key), home=home, check=False)
        assert result.returncode == 1 and message in result.stderr, (key, result.stderr)
    outside = cli("score", str(copy), "--key", str(copy), check=False)  # no workspace to know it by: the same file
    assert outside.returncode == 1 and "the answer key is the submission itself" in outside.stderr
    other = tmp_path / "other.csv"
    other.write_text("ID,label,prob_all\n./new_dataset/test/0.bmp,1,0.9\n")
    refused = cli("score", str(out), "--key", str(other), check=False)
    assert refused.returncode == 1 and "has a prob_all column, so it is a submission" in refused.stderr
    scores = [s["score"] for s in json.loads(cli("submissions", "--json", home=home).stdout)]
    assert scores.count(1.0) == 0, "no perfect score was recorded"


def test_score_names_the_bad_row(tmp_path, tiny_data):
    bad = tmp_path / "bad.csv"
    bad.write_text("ID,label\n./new_dataset/test/0.bmp,1\n./new_dataset/test/1.bmp,yes\n")
    result = cli("score", str(bad), "--key", str(tiny_data / "test_answer_key.csv"), check=False)
    assert result.returncode == 1
    assert "bad.csv line 3: label 'yes' is not a number" in result.stderr


def test_unwritable_workspace_is_one_line(tmp_path, tiny_data):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = cli("queue", "--data-dir", str(tiny_data), "--no-start", home=blocker / "home", check=False)
    assert result.returncode == 1 and "workspace folder is not writable" in result.stderr


@ON_TRAINED
def test_global_options_go_before_or_after_the_command(trained):
    home, run_id, _ = trained
    before = json.loads(cli("--home", str(home), "--json", "ls").stdout)
    assert json.loads(cli("ls", "--home", str(home), "--json").stdout) == before
    assert json.loads(cli("--json", "show", str(run_id), "--home", str(home)).stdout)["id"] == run_id
    assert [r["id"] for r in before] == [run_id]
    refused = cli("--json", "cancel", str(run_id), home=home, check=False)
    assert refused.returncode == 2 and refused.stderr.strip() == "leuktui: error: --json: `leuktui cancel` has no JSON output"


def test_an_explicit_home_that_does_not_exist_is_refused_not_made(tmp_path, tiny_data):
    missing = tmp_path / "typo-home"
    for args in (("ls",), ("show", "1"), ("queue", "ls"), ("scheduler", "status"), ("submissions",), ("export", "1")):
        result = cli(*args, home=missing, check=False)
        assert result.returncode == 1, args
        assert result.stderr.strip() == f"leuktui: error: {missing}: no such workspace (--home {missing}); " \
                                        "`leuktui queue` or `leuktui run` makes one", args
        assert not missing.exists(), args
    env_missing = cli("ls", check=False, env={"LEUKTUI_HOME": str(missing)})
    assert env_missing.returncode == 1 and f"$LEUKTUI_HOME={missing}" in env_missing.stderr
    # A command that makes a workspace asks everything that can refuse it first: a refused one makes none.
    for args in (("queue", "--data-dir", str(tmp_path / "no-data"), "--no-start"), ("run", "--data-dir", str(tmp_path / "no-data")),
                 ("queue", "--data-dir", str(tiny_data), "--grid", "lr=0.1,x", "--no-start")):
        refused = cli(*args, home=missing / "deeper", check=False)
        assert refused.returncode == 2 and not missing.exists(), (args, refused.stderr)
    elsewhere = cli("queue", "--data-dir", str(tmp_path / "no-data"), "--no-start", home=missing, check=False,
                    env={"LEUKTUI_DB": f"sqlite:///{tmp_path / 'elsewhere.db'}"})
    assert elsewhere.returncode == 2 and not missing.exists() and not (tmp_path / "elsewhere.db").exists()
    kept = tmp_path / "empty-already"
    kept.mkdir()
    assert cli("queue", "--data-dir", str(tmp_path / "no-data"), "--no-start", home=kept, check=False).returncode == 2
    assert kept.is_dir() and list(kept.iterdir()) == [], "a folder that was there before is the user's: left, and nothing written in it"
    cli("queue", "--data-dir", str(tiny_data), "--no-start", home=missing)  # queue makes a workspace
    assert (missing / "leuktui.db").is_file()
    refused = cli("queue", "--data-dir", str(tmp_path / "no-data"), "--no-start", home=missing, check=False)
    assert refused.returncode == 2 and cli("ls", "--json", home=missing).stdout.count('"id"') == 1, "a workspace in use is kept"

    # A folder that is there but holds no workspace (a mistyped `--home ~`, the dataset) is refused
    # by the commands that only read or act on runs, and nothing is written in it.
    for folder in (tmp_path / "project", tiny_data):
        folder.mkdir(exist_ok=True)
        before = sorted(p.name for p in folder.iterdir())
        for args in (("ls",), ("show", "1"), ("submissions", "--json"), ("report", "-o", str(tmp_path / "r")), ("cancel", "1")):
            result = cli(*args, home=folder, check=False)
            assert result.returncode == 1 and result.stderr.strip() == (
                f"leuktui: error: {folder}: not a leuktui workspace (no leuktui.db in it); `leuktui queue` or `leuktui run` makes one"
            ), (folder, args, result.stderr)
        assert sorted(p.name for p in folder.iterdir()) == before, "nothing written in it"
    for args in (("queue", "--data-dir", str(tiny_data), "--no-start"), ("score", str(tiny_data / "test_answer_key.csv"), "--key",
                 str(tiny_data / "test_answer_key.csv"))):
        empty = cli(*args, "--home", "", check=False)  # `--home "$LAB"`, $LAB unset
        assert empty.returncode == 2 and empty.stderr.strip() == "leuktui: error: --home: empty; give the workspace folder", args


@ON_TRAINED
def test_a_bad_choice_is_refused_with_the_valid_ones(trained):
    home, _, _ = trained
    result = cli("ls", "--status", "bogus", home=home, check=False)
    assert result.returncode == 2 and result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("leuktui: error: --status: invalid choice: 'bogus'")
    assert all(f"'{status}'" in line for status in ("queued", "held", "running", "completed", "failed", "cancelled", "interrupted"))
    assert "no runs with status failed" in cli("ls", "--status", "failed", home=home).stdout


@ON_TRAINED
def test_the_views_have_one_flag_in_every_command(trained, tiny_data, tmp_path):
    home, run_id, _ = trained
    queued = json.loads(cli("queue", "--data-dir", str(tiny_data), "--tta", "five", "--no-start", "--json", "--force",
                            home=tmp_path / "h").stdout)
    shown = json.loads(cli("show", str(queued["run_ids"][0]), "--json", home=tmp_path / "h").stdout)
    assert shown["config"]["eval_mode"] == "five"
    assert json.loads(cli("eval", str(run_id), "--eval-mode", "none", "--json", home=home).stdout)["tta"] == "single"


def test_version():
    from importlib.metadata import version

    result = cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"leuktui {version('leuktui')}"


def test_the_config_flags_say_their_default_once_and_never_as_none():
    text = " ".join(cli("queue", "--help").stdout.split())
    assert "(default: None)" not in text and "model depth) (default:" not in text
    assert "--test-csv TEST_CSV test CSV for predictions (default: the one matching the model depth) --model" in text
    assert "(default: none, trained from scratch)" in text and "(default: bce)" in text


def test_a_name_or_a_tag_too_long_for_a_line_is_refused(tmp_path, tiny_data):
    home = tmp_path / "home"
    for args, said in ((("--name", "n" * 201), "leuktui: error: --name: 201 characters; a name has at most 200"),
                       (("--tag", "t" * 65), "leuktui: error: --tag: 'tttttttttttttttttttt'… has 65 characters; a tag has at most 64")):
        for command in ("queue", "run"):
            refused = cli(command, "--data-dir", str(tiny_data), "--no-start" if command == "queue" else "--epochs", *(
                () if command == "queue" else ("1",)), *args, home=home, check=False)
            assert refused.returncode == 2 and refused.stderr.strip() == said, (command, refused.stderr)
    assert not home.exists(), "nothing made for a refused command"
    cli("queue", "--data-dir", str(tiny_data), "--no-start", "--name", "n" * 200, "--tag", "t" * 64, home=home)


def test_output_to_a_pipe_is_never_cut_to_the_terminals_width(tmp_path, tiny_data):
    home = tmp_path / "home"
    name = "a-long-run-name-" + "x" * 150
    cli("queue", "--data-dir", str(tiny_data), "--no-start", "--name", name, "--tag", "t" * 40, home=home)
    for args in (("ls",), ("queue", "ls"), ("show", "1")):
        piped = run_cli(*args, home=home, env={"COLUMNS": "80"})  # a real pipe, and a terminal width that would cut
        assert any(name in line for line in piped.stdout.splitlines()), (args, piped.stdout)
        assert "…" not in piped.stdout, (args, piped.stdout)


def test_delete_then_queue_never_reuses_the_id(tmp_path, tiny_data):
    home = tmp_path / "home"
    for _ in range(2):
        cli("queue", "--data-dir", str(tiny_data), "--no-start", "--force", home=home)
    unconfirmed = cli("delete", "2", home=home, check=False)
    assert unconfirmed.returncode == 2 and "nothing deleted" in unconfirmed.stderr
    assert "deleted run 2" in cli("delete", "2", "--yes", home=home).stdout
    queued = json.loads(cli("queue", "--data-dir", str(tiny_data), "--no-start", "--force", "--json", home=home).stdout)
    assert queued["run_ids"] == [3]
    assert [r["id"] for r in json.loads(cli("ls", "--json", home=home).stdout)] == [3, 1]
    missing = cli("delete", "1", "99", "--yes", home=home, check=False)
    assert missing.returncode == 1 and "run 99: no such run" in missing.stderr
    assert [r["id"] for r in json.loads(cli("ls", "--json", home=home).stdout)] == [3, 1], "nothing deleted when one id is wrong"


def test_data_commands(tmp_path):
    root = tmp_path / "synthetic"
    cli("data", "synth", str(root), "--n-train", "8", "--n-valid", "4", "--n-test", "4", "--size", "24")
    assert "ready to train" in cli("data", "check", str(root)).stdout
    again = cli("data", "synth", str(root), check=False)
    assert again.returncode == 2 and "not empty" in again.stderr
    (root / "new_dataset" / "valid" / "2.bmp").unlink()
    report = cli("data", "check", str(root), check=False)
    assert report.returncode == 1 and "valid/2.bmp: missing" in report.stdout
    as_json = json.loads(cli("data", "check", str(root), "--json", check=False).stdout)
    assert as_json["ok"] is False and as_json["splits"]["train"]["rows"] == 8
    for seed in ("-1", str(2**32)):
        bad = cli("data", "synth", str(tmp_path / "other"), "--seed", seed, check=False)
        assert bad.returncode == 2 and bad.stderr.strip() == f"leuktui: error: --seed: '{seed}' is not between 0 and {2**32 - 1}"
    assert not (tmp_path / "other").exists()


@ON_TRAINED
def test_commands_that_do_not_train_never_import_torch(trained, tiny_data, tmp_path):
    home, run_id, _ = trained
    key = str(tiny_data / "test_answer_key.csv")
    answers = tmp_path / "answers.csv"  # a submission that answers every row right
    answers.write_text((tiny_data / "test_answer_key.csv").read_text().replace("Path,", "ID,", 1))
    probe = (
        "import sys\n"
        "from leuktui.cli import main\n"
        f"for argv in ({['--home', str(home), 'ls']!r}, {['--home', str(home), 'show', str(run_id)]!r},"
        f" {['score', str(answers), '--key', key]!r}, {['data', 'check', str(tiny_data)]!r}):\n"
        "    assert main(argv) == 0, argv\n"
        "heavy = sorted(m for m in ('torch', 'torchvision', 'textual') if m in sys.modules)\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    import subprocess

    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert "HEAVY=\n" in result.stdout


def test_resume_says_whether_a_run_continues_or_starts_over(tmp_path, tiny_data):
    home = tmp_path / "home"
    cli("queue", "--data-dir", str(tiny_data), "--no-start", home=home)
    cli("cancel", "1", home=home)
    fresh = cli("resume", "1", "--no-start", home=home).stdout
    assert fresh.strip() == "run 1 queued; it stopped before its first checkpoint, so it starts from epoch 1"
    cli("cancel", "1", home=home)
    last = home / "runs" / "1" / "checkpoints" / "last.pt"
    last.parent.mkdir(parents=True)
    last.write_bytes(b"")
    assert cli("resume", "1", "--no-start", home=home).stdout.strip() == "run 1 queued to resume from its last checkpoint"


@pytest.mark.parametrize("command", [("show", "1"), ("ls",), ("show", "1", "--json")])
def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path, command):
    """`leuktui show 1 | head -1`: the reader closes the pipe before the command writes. The
    command ends with status 0 and says nothing (Rich's own way out is status 1)."""
    import subprocess

    from tui.seed import seed_workspace

    from db import Workspace

    seed_workspace(Workspace(tmp_path / "home").ensure()).close()
    reader, writer = os.pipe()
    os.close(reader)  # gone before the first byte
    try:
        done = subprocess.run([sys.executable, "-m", "leuktui", "--home", str(tmp_path / "home"), *command],
                              stdout=writer, stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(writer)
    assert done.returncode == 0 and done.stderr == ""


def test_ctrl_c_before_training_starts_ends_the_run_interrupted_in_one_line(tmp_path, tiny_data):
    """Ctrl-C while `leuktui run` still imports torch (the run recorded, the trainer not yet
    started): the run ends interrupted, as the line says, and resumes."""
    import signal
    import subprocess

    home = tmp_path / "home"
    process = subprocess.Popen([sys.executable, "-m", "leuktui", "--home", str(home), "run", "--data-dir", str(tiny_data),
                                "--image-size", "16", "--epochs", "3", "--amp", "off"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200"},
                               # as a terminal's foreground job: a suite started in the background (`make test &`,
                               # CI) ignores SIGINT, and a child would inherit that
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        def recorded():  # read with sqlite3 itself, a millisecond a look: the moment seen is the moment signalled
            if not (home / "leuktui.db").exists():
                return None
            with contextlib.closing(sqlite3.connect(f"file:{home / 'leuktui.db'}?mode=ro", uri=True, timeout=5)) as db:
                try:
                    row = db.execute("SELECT status, epochs_done, phase FROM run WHERE id = 1").fetchone()
                except sqlite3.OperationalError:  # the tables not made yet
                    return None
            return row is not None and row[0] == "running" and row[1] == 0 and row[2] in (None, "importing torch")
        wait_for(recorded, 60, "the run recorded, the trainer not started", interval=0.005)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, out + err
    assert "run 1 interrupted; continue it with: leuktui resume 1" in out and "Traceback" not in out + err, out + err
    assert json.loads(cli("show", "1", "--json", home=home).stdout)["status"] == "interrupted"
    assert "starts from epoch 1" in cli("resume", "1", "--no-start", home=home).stdout


def test_a_foreground_resume_of_a_run_stopped_before_its_first_checkpoint_starts_from_epoch_1(tmp_path, tiny_data):
    home = tmp_path / "home"
    flags = ("--data-dir", str(tiny_data), "--image-size", "16", "--batch-size", "8", "--epochs", "1", "--rotation", "0", "--amp", "off")
    (run_id,) = json.loads(cli("queue", *flags, "--no-start", "--json", home=home).stdout)["run_ids"]
    cli("cancel", str(run_id), home=home)
    assert json.loads(cli("show", str(run_id), "--json", home=home).stdout)["status"] == "cancelled"
    resumed = cli("resume", str(run_id), "--foreground", home=home, check=False)
    assert resumed.returncode == 0 and f"run {run_id} completed" in resumed.stdout, resumed.stdout + resumed.stderr
    shown = json.loads(cli("show", str(run_id), "--json", home=home).stdout)
    assert shown["status"] == "completed" and [e["epoch"] for e in shown["epochs"]] == [1]


def test_a_run_whose_cancel_is_pending_is_cancelling_in_every_message_and_listing(tmp_path, tiny_data):
    from db import Database, Workspace, states
    from runner import control

    home = tmp_path / "home"
    (run_id,) = json.loads(cli("queue", "--data-dir", str(tiny_data), "--no-start", "--json", home=home).stdout)["run_ids"]
    db = Database(Workspace(home).db_url)
    assert states.move(db, run_id, "running", phase="epoch 1/10 step 3/6")  # as its worker does
    assert control.cancel(db, run_id) == "cancelling"  # no worker here to act on it: it stays pending
    for args, says in ((("delete", str(run_id), "--yes"), f"run {run_id} is cancelling; delete it once it has stopped"),
                       (("resume", str(run_id), "--no-start"), f"run {run_id} is cancelling; only interrupted, cancelled or failed runs"),
                       (("retry", str(run_id), "--no-start"), f"run {run_id} is cancelling; only finished runs can be retried")):
        result = cli(*args, home=home, check=False)
        assert result.returncode != 0 and says in result.stderr and len(result.stderr.strip().splitlines()) == 1, (args, result.stderr)
    (listed,) = json.loads(cli("ls", "--json", home=home).stdout)
    assert (listed["status"], listed["state"]) == ("running", "cancelling")
    assert json.loads(cli("queue", "ls", "--json", home=home).stdout)["runs"][0]["state"] == "cancelling"
    assert "cancelling" in cli("ls", home=home).stdout
    # A second run queued, and one running without a cancel: `--status` selects by what ls shows.
    (other,) = json.loads(cli("queue", "--data-dir", str(tiny_data), "--no-start", "--json", "--force", home=home).stdout)["run_ids"]
    (third,) = json.loads(cli("queue", "--data-dir", str(tiny_data), "--no-start", "--json", "--force", home=home).stdout)["run_ids"]
    assert states.move(db, third, "running")

    def listed_ids(*statuses):
        return sorted(r["id"] for r in json.loads(cli("ls", *(f"--status={s}" for s in statuses), "--json", home=home).stdout))

    assert listed_ids("cancelling") == [run_id]
    assert listed_ids("running") == [run_id, third]  # a cancelling run is still running
    assert listed_ids("cancelling", "queued") == [run_id, other]
    assert listed_ids("completed") == []
    # The app's filter says the same.
    from leuktui import query

    runs = db.list_runs()
    assert [r.id for r in runs if query.matcher("status=cancelling")(r)] == [run_id]
    assert sorted(r.id for r in runs if query.matcher("status=running")(r)) == [run_id, third]
    assert sorted(r.id for r in runs if query.matcher("status!=cancelling")(r)) == [other, third]
    assert [r.id for r in runs if query.matcher("cancelling")(r)] == [run_id]
    db.close()


def test_a_cancel_of_a_run_whose_process_died_with_no_scheduler_ends_it_cancelled(tmp_path, tiny_data):
    import subprocess

    from db import Database, Workspace, states
    from runner import control

    home = tmp_path / "home"
    (run_id,) = json.loads(cli("queue", "--data-dir", str(tiny_data), "--no-start", "--json", home=home).stdout)["run_ids"]
    db = Database(Workspace(home).db_url)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert states.move(db, run_id, "running", pid=gone.pid, host=None)  # its worker killed, and no scheduler running
    assert control.cancel(db, run_id) == "cancelled"
    run = db.get_run(run_id)
    assert run.status == "cancelled" and run.finished_at and run.pid is None
    db.close()


def test_a_submission_that_names_a_column_twice_is_refused_not_guessed(tmp_path):
    key = tmp_path / "key.csv"
    key.write_text("ID,label\na.bmp,1\nb.bmp,0\n")
    for header, rows, message in (
        ("ID,label,label", ["a.bmp,1,0", "b.bmp,0,0"], "header names the label column twice"),
        ("ID,Path,label", ["a.bmp,x.bmp,1", "b.bmp,y.bmp,0"], "header has both ID and Path columns"),
    ):
        submission = tmp_path / "submission.csv"
        submission.write_text("\n".join([header, *rows]) + "\n")
        result = cli("score", str(submission), "--key", str(key), check=False)
        assert (result.returncode, result.stderr.strip()) == (1, f"leuktui: error: {submission}: {message}"
                                                              + ("; keep the one that names the images" if "both" in message else ""))
    huge = tmp_path / "huge.csv"
    huge.write_text("ID,label\na.bmp,1" + "0" * 400 + "\nb.bmp,0\n")  # a number float() makes inf
    result = cli("score", str(huge), "--key", str(key), check=False)
    assert (result.returncode, result.stderr.strip()) == (1, f"leuktui: error: {huge} line 2: label '1{'0' * 39}' is not 0 or 1")


def test_a_path_given_empty_is_refused_never_taken_for_the_default_or_this_folder(tmp_path):
    for args, flag in ((("export", "1", "-o", ""), "-o"), (("report", "-o", ""), "-o"), (("data", "check", ""), "DIR"),
                       (("data", "synth", ""), "DIR"), (("score", "", "--key", "k.csv"), "FILE"), (("score", "s.csv", "--key", ""), "--key"),
                       (("queue", "--data-dir", ""), "--data-dir"), (("mistakes", "1", "-o", ""), "-o"),
                       (("queue", "--data-dir", "d", "--pretrained", ""), "--pretrained")):
        result = cli(*args, home=tmp_path / "home", check=False)
        assert (result.returncode, result.stderr.strip()) == (2, f"leuktui: error: {flag}: empty; give a path"), args
    assert not (tmp_path / "home").exists()


def test_a_file_where_the_workspace_keeps_its_runs_is_refused_before_a_run_is_queued(tmp_path, tiny_data):
    home = tmp_path / "home"
    cli("queue", "--data-dir", str(tiny_data), "--no-start", home=home)
    if (home / "runs").is_dir():
        (home / "runs").rmdir()
    (home / "runs").write_text("not a folder")
    result = cli("queue", "--data-dir", str(tiny_data), "--no-start", "--force", home=home, check=False)
    assert (result.returncode, result.stderr.strip()) == (
        1, f"leuktui: error: {home / 'runs'}: not a folder, where the workspace keeps its runs; move it away")
    assert len(json.loads(cli("ls", "--json", home=home).stdout)) == 1, "nothing queued"
