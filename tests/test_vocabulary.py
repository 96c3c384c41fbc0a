"""The one vocabulary: metrics, run states and keys each defined once and used from there."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from db import Database, states
from db.models import Base
from db.states import TransitionError
from db.vocabulary import BEST_METRICS, CANCELLING, METRICS, RUN_STATUSES, TRANSITIONS
from engine.config import ConfigError, RunConfig
from leuktui.actions import ACTIONS, SCREENS, help_markdown, readme_block, validate_keymap

ROOT = Path(__file__).resolve().parent.parent
# The only code that may write a run's status, and the calls that may name one without writing it.
STATUS_OWNER = ROOT / "db" / "states.py"
# Reads that filter by status, and the inserts of new runs (a new run starts queued, or running
# in the foreground): neither changes a run's status.
STATUS_READS_OR_INSERTS = {"runs_with_config", "create_run", "Run", "compare_and_set_status"}
UPDATES = {"values", "update_run", "update", "execute", "transition"}


def _name(call: ast.Call) -> str:
    return call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")


def status_writes(source: str, filename: str = "<source>") -> list[str]:
    """Places in ``source`` that set a run's status: a ``status=`` keyword in a call, a
    ``"status"`` key in a dict handed to an update, or an assignment to ``.status``."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Call):
            name = _name(node)
            if any(k.arg == "status" for k in node.keywords) and name not in STATUS_READS_OR_INSERTS:
                found.append(f"{filename}:{node.lineno} {name}(status=...)")
            if name in UPDATES and any(
                isinstance(arg, ast.Dict) and any(isinstance(k, ast.Constant) and k.value == "status" for k in arg.keys)
                for arg in node.args
            ):
                found.append(f"{filename}:{node.lineno} {{'status': ...}}")
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Attribute) and t.attr == "status" for t in targets):
                found.append(f"{filename}:{node.lineno} .status = ...")
    return sorted(found, key=lambda place: int(place.split(" ", 1)[0].rsplit(":", 1)[1]))


def test_only_db_states_writes_a_runs_status():
    offenders = []
    for folder in ("db", "runner", "engine", "leuktui", "bench"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path == STATUS_OWNER or "migrations" in path.parts:
                continue
            offenders += status_writes(path.read_text(), str(path.relative_to(ROOT)))
    assert offenders == [], "status is written only by db/states.py (compare-and-set)"


def status_literals(source: str, filename: str = "<source>") -> list[str]:
    """Run states spelled as string literals (dict keys aside: ``{"running": ...}`` is a word of
    a JSON answer, not a run's state)."""
    keys = set()
    tree = ast.parse(source, filename)
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            keys.update(id(key) for key in node.keys if key is not None)
    return [f"{filename}:{node.lineno} {node.value!r}" for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and node.value in (*RUN_STATUSES, CANCELLING) and id(node) not in keys]


def test_run_states_are_spelled_once_in_the_vocabulary():
    offenders = []
    for folder in ("db", "runner", "engine", "leuktui", "bench"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path == ROOT / "db" / "vocabulary.py" or "migrations" in path.parts:
                continue
            offenders += status_literals(path.read_text(), str(path.relative_to(ROOT)))
    assert offenders == [], "run states come from db.vocabulary's constants"
    assert status_literals('if run.status == "running": pass\nprint({"running": True})') == ["<source>:1 'running'"]


def test_the_status_check_finds_each_kind_of_write():
    planted = '''
db.update_run(run_id, status="failed")
session.execute(update(Run).values({"status": "completed"}))
run.status = "running"
db.runs_with_config(digest, status="completed")  # a read: allowed
'''
    assert [line.split(" ", 1)[1] for line in status_writes(planted)] == [
        "update_run(status=...)", "{'status': ...}", ".status = ...",
    ]


def test_status_moves_only_along_the_table(db):
    run = db.create_run(config={}, config_hash="x", model="resnet18", name="r")
    assert states.move(db, run.id, "held") and db.get_run(run.id).status == "held"
    assert not states.move(db, run.id, "running"), "held cannot start"
    assert states.move(db, run.id, "queued") and states.move(db, run.id, "running")
    assert not states.move(db, run.id, "queued", only_from=("failed",)), "compare-and-set: the run is running"
    assert states.finish(db, run.id, "completed") and db.get_run(run.id).finished_at is not None
    with pytest.raises(TransitionError, match="from completed to queued"):
        states.move(db, run.id, "queued", only_from=("completed",))
    with pytest.raises(ValueError, match="db.states"):
        db.update_run(run.id, status="failed")
    assert set(TRANSITIONS) == set(RUN_STATUSES)


def test_every_metric_has_its_columns_and_a_best_metric_flag():
    epoch, evaluation = Base.metadata.tables["epoch"].columns, Base.metadata.tables["evaluation"].columns
    for metric in METRICS:
        assert metric.epoch_column in epoch and metric.key in evaluation
    assert {"val_mcc", "val_balanced_acc", "val_acc", "val_loss"} <= set(BEST_METRICS)
    assert RunConfig.from_dict({"best_metric": "val_mcc"}).best_metric == "val_mcc"
    with pytest.raises(ConfigError, match="best_metric"):
        RunConfig.from_dict({"best_metric": "val_speed"})


def test_the_readme_key_table_is_the_registrys():
    readme = (ROOT / "README.md").read_text()
    assert readme_block() in readme, "regenerate it: python -m leuktui.actions --write"


def test_every_screen_class_takes_its_keys_from_the_registry():
    ids = [action.id for action in ACTIONS]
    assert len(ids) == len(set(ids)), "binding ids are unique"
    assert {action.screen for action in ACTIONS} == set(SCREENS)
    for screen in SCREENS:
        keys = [action.key for action in ACTIONS if action.screen == screen]
        assert len(keys) == len(set(keys)), f"two actions share a default key on {screen}"


def test_a_keymap_is_checked_against_the_registry():
    keymap = {"new-run": "N", "nwe-run": "M", "compare": "g", "sort": 5, "hold": "N", "mark": "n"}
    usable, warnings = validate_keymap(keymap)
    assert usable == {"new-run": "N", "hold": "N", "mark": "n"}, "hold is on another screen; new-run gave n up"
    assert any("unknown binding id 'nwe-run'" in w for w in warnings)
    assert any("'g' for 'compare' is already the key of 'new-sweep' on the Runs (home) screen" in w for w in warnings)
    assert any("'sort'" in w and "key name" in w for w in warnings)
    assert validate_keymap(["new-run"])[1][0].startswith("keymap.json: expected an object")
    clash_with_app_key, warnings = validate_keymap({"compare": "q"})
    assert clash_with_app_key == {} and "'quit'" in warnings[0], "the app's keys count on every screen"
    assert "| N | new run | `new-run` |" in help_markdown({"new-run": "N"})


def test_metrics_of_a_recorded_epoch_agree_with_its_confusion_matrix(tmp_path):
    from test_metrics import from_confusion

    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    run = db.create_run(config={}, config_hash="x", model="resnet18", name="r")
    import numpy as np

    from engine.metrics import classification_metrics
    from engine.train import epoch_row

    rng = np.random.default_rng(1)
    labels = (rng.random(200) < 0.7).astype(int)
    metrics = classification_metrics(labels, np.clip(labels * 0.4 + rng.random(200) * 0.6, 0, 1))
    row = epoch_row(1, {"train_loss": 0.5, "train_acc": 0.8, "images": 10, "seconds": 1.0}, metrics, 1e-3, 1.5)
    db.add_epoch(run.id, 1, 10, row)
    stored = db.epochs(run.id)[0]
    for key, value in from_confusion(stored.confusion).items():
        column = next(m.epoch_column for m in METRICS if m.key == key)
        assert getattr(stored, column) == pytest.approx(value), key
