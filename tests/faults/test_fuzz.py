"""What users feed us, fuzzed: every input ends in a result or a one-line error, never a traceback.

CSV rows and encodings, image files, flag values, filter expressions, keymap.json and submission
files, each through the same function the CLI and the app call.
"""

from __future__ import annotations

import io
import json
import string
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from db import Database, Workspace
from db.errors import UserError
from engine.config import RunConfig
from engine.datasets import load_split
from engine.preprocess import Preprocess
from engine.scoring import score_submission
from leuktui import query
from leuktui.actions import validate_keymap
from leuktui.cli import build_parser
from leuktui.cli.common import config_from_args

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
CELLS = st.text(alphabet=string.printable + "éü\u00a0\ufeff\x00", max_size=30)


def one_line(exc: Exception) -> bool:
    return "\n" not in str(exc) and bool(str(exc).strip())


@st.composite
def csv_files(draw) -> bytes:
    header = draw(st.sampled_from(["Path,label", "Path", "label,Path", "ID,label", "", "Path;label", "\ufeffPath,label"]))
    rows = draw(st.lists(st.lists(CELLS, max_size=4).map(",".join), max_size=6))
    text = "\n".join([header, *rows])
    encoding = draw(st.sampled_from(["utf-8", "utf-16", "latin-1"]))
    return text.encode(encoding, errors="replace")


@FUZZ
@given(train=csv_files(), valid=csv_files())
def test_dataset_csvs(tmp_path_factory, train, valid):
    root = tmp_path_factory.mktemp("csv")
    (root / "train.csv").write_bytes(train)
    (root / "valid.csv").write_bytes(valid)
    for name in ("train", "valid"):
        try:
            split = load_split(root, name)
        except UserError as exc:
            assert one_line(exc) and str(root) in str(exc)
        else:
            assert all(sample.label in (0, 1) for sample in split.samples)


@st.composite
def image_files(draw) -> bytes:
    kind = draw(st.sampled_from(["random", "truncated", "valid", "empty"]))
    if kind == "random":
        return draw(st.binary(max_size=300))
    if kind == "empty":
        return b""
    size = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    mode = draw(st.sampled_from(["RGB", "L", "RGBA", "P", "1", "I;16"]))
    out = io.BytesIO()
    Image.new(mode, size).save(out, format=draw(st.sampled_from(["BMP", "PNG"])) if mode != "I;16" else "PNG")
    data = out.getvalue()
    return data[: max(1, len(data) // 2)] if kind == "truncated" else data


@FUZZ
@given(data=image_files(), hist_eq=st.booleans(), crop=st.booleans(), center=st.booleans())
def test_image_files(tmp_path_factory, data, hist_eq, crop, center):
    from engine.pipeline import read_image

    path = tmp_path_factory.mktemp("img") / "0.bmp"
    path.write_bytes(data)
    try:
        image = read_image(path, Preprocess(24, hist_eq=hist_eq, crop_to_cell=crop, center_crop=center))
    except UserError as exc:
        assert one_line(exc) and str(path) in str(exc)
    else:
        side = Preprocess(24, center_crop=center).output_size
        assert image.shape == (side, side, 3) and image.dtype == np.uint8


FLAGS = [f.replace("_", "-") for f in RunConfig.field_names()]


@FUZZ
@given(flag=st.sampled_from(FLAGS), value=st.text(max_size=20))
def test_flag_values(flag, value):
    from leuktui.cli import UsageError

    parser = build_parser()
    try:
        args = parser.parse_args(["queue", f"--{flag}={value}"])
        config = config_from_args(args)
    except UsageError as exc:
        assert one_line(exc)
    else:
        config.validate()


NUMERIC = [f.name for f in __import__("dataclasses").fields(RunConfig) if str(f.type).startswith(("int", "float"))]
NUMBERS = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(2**70), 2**70) | \
    st.sampled_from(["nan", "inf", "-inf", "NaN", "1e999", "-0", "1e-320"])


@FUZZ
@given(field=st.sampled_from(NUMERIC), value=NUMBERS)
def test_numeric_fields_take_only_finite_numbers_in_range(field, value):
    """Every numeric field of the config, from a flag, a form or a stored row: a finite number in
    its range, or one line naming the field; never a non-finite value in a config."""
    import math

    from engine.config import ConfigError

    try:
        config = RunConfig.from_dict({field: value})
    except ConfigError as exc:
        assert exc.field == field and one_line(exc)
    else:
        assert math.isfinite(getattr(config, field))


@FUZZ
@given(key=st.sampled_from(["max_parallel", "per_gpu", "idle_timeout", "partition", "sbatch_args", "backend", "other"]),
       value=NUMBERS | st.text(max_size=10) | st.none() | st.booleans() | st.lists(st.text(max_size=5), max_size=3))
def test_scheduler_options_are_checked_as_read(key, value):
    import math

    from runner.options import Options

    try:
        options = Options.from_dict({key: value})
    except UserError as exc:
        assert one_line(exc) and repr(key) in str(exc)
    else:
        assert options.max_parallel >= 1 and options.per_gpu >= 1 and math.isfinite(options.idle_timeout)


@FUZZ
@given(text=st.text(alphabet=string.ascii_letters + string.digits + "=<>!.%_- :,", max_size=40))
def test_filter_expressions(text):
    run_like = _a_run()
    try:
        keep = query.matcher(text)
    except UserError as exc:
        assert one_line(exc)
        return
    assert keep(run_like) in (True, False), "a filter that parses matches without errors"


def _a_run():
    from db.models import Run

    return Run(id=1, name="r", model="resnet18", status="completed", tags=["demo"], config=RunConfig().to_dict(),
               best_val_acc=0.9, best_val_f1=0.9, best_val_auc=0.95, epochs_done=3, summary={"val_acc": 0.9, "mcc": 0.7})


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=12), children, max_size=4),
                    max_leaves=8)


@FUZZ
@given(keymap=JSON | st.dictionaries(st.sampled_from(["new-run", "compare", "quit", "nope", "hold"]),
                                     st.sampled_from(["N", "q", "c", "", "ctrl+x", ",", "n,N"]), max_size=4))
def test_keymaps(keymap):
    usable, warnings = validate_keymap(json.loads(json.dumps(keymap)))
    assert all(one_line(Exception(w)) for w in warnings)
    assert isinstance(usable, dict) and all(isinstance(k, str) for k in usable.values())


@FUZZ
@given(submission=csv_files())
def test_submission_files(tmp_path_factory, submission):
    folder = tmp_path_factory.mktemp("score")
    key = folder / "key.csv"
    key.write_text("ID,label\na.bmp,1\nb.bmp,0\n")
    path = Path(folder / "submission.csv")
    path.write_bytes(submission)
    try:
        metrics = score_submission(path, key)
    except UserError as exc:
        assert one_line(exc) and str(folder) in str(exc)
    else:
        assert metrics["n"] == 2


def test_a_filter_value_of_the_wrong_type_is_refused_when_typed_not_when_matched():
    for text, message in (("acc>abc", "'abc' is not a number in 'acc>abc'"), ("hist_eq=maybe", "'maybe' is not true or false"),
                          ("model>resnet", "model compares with = or != only")):
        try:
            query.parse(text)
        except UserError as exc:
            assert message in str(exc)
        else:
            raise AssertionError(f"{text!r} parsed")
    assert query.matcher("acc>85% mcc>0.5 image_size>=128")(_a_run())
    assert not query.matcher("acc>95%")(_a_run())


READERS = ("train.csv", "valid.csv", "image", "score key", "score submission", "scheduler.json", "marked.json", "keymap.json",
           "export output")
KINDS = ("fifo", "folder", "device")


@settings(max_examples=27, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(reader=st.sampled_from(READERS), kind=st.sampled_from(KINDS))
def test_every_reader_refuses_what_is_not_a_file_in_one_line(tmp_path_factory, tiny_data, reader, kind):
    """A FIFO (which would hang a read), a folder or a device where a reader expects a file: one
    line naming it, or (for the app's optional files) the default, never a hang or a traceback."""
    import os
    import shutil

    from conftest import cli

    root = tmp_path_factory.mktemp("kinds")
    data = root / "data"
    shutil.copytree(tiny_data, data)
    home = root / "home"
    Database(Workspace(home).ensure().db_url).close()  # a workspace, its database made
    key = data / "test_answer_key.csv"
    submission = root / "submission.csv"
    submission.write_text(key.read_text().replace("Path,", "ID,", 1))
    targets = {
        "train.csv": data / "train.csv", "valid.csv": data / "valid.csv",
        "image": next((data / "new_dataset" / "valid").glob("*.bmp")), "score key": key, "score submission": submission,
        "scheduler.json": home / "scheduler.json", "marked.json": home / "marked.json", "keymap.json": home / "keymap.json",
        "export output": root / "out.csv",
    }
    target = targets[reader]
    if target.exists():
        target.unlink()
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "folder":
        target.mkdir()
    else:
        target.symlink_to("/dev/zero")  # endless: a read of it never ends

    if reader in ("train.csv", "valid.csv", "image"):
        result = cli("data", "check", str(data), check=False)
        assert result.returncode == 1 and "error:" in result.stdout
        assert str(target) in result.stdout, result.stdout  # train.csv too: there, but not a file
    elif reader.startswith("score"):
        result = cli("score", str(submission), "--key", str(key), check=False)
        assert result.returncode == 1 and str(target) in result.stderr and len(result.stderr.strip().splitlines()) == 1
    elif reader == "scheduler.json":
        result = cli("scheduler", "status", home=home, check=False)
        assert result.returncode == 1 and str(target) in result.stderr
    elif reader == "marked.json":
        assert Workspace(home).marked_runs() == []
    elif reader == "keymap.json":
        from db.files import NotAFile, read_regular_text

        with pytest.raises(NotAFile, match=str(target)):
            read_regular_text(target)  # the app's keymap loader: a warning naming it, then the default keys
    else:
        from engine.predict import PredictError, check_writable

        with pytest.raises(PredictError, match="is a folder|not a regular file"):
            check_writable(target, force=True)
