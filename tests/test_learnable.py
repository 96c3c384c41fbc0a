"""The synthetic data is learnable but not trivial, like the real task."""

import pytest

from conftest import tiny_config
from engine.synth import make_dataset
from engine.train import Trainer
from runner.control import create_run


@pytest.mark.slow
def test_resnet18_learns_the_synthetic_cells_well_but_not_perfectly(tmp_path, db, workspace):
    root = make_dataset(tmp_path / "cells", n_train=320, n_valid=200, n_test=4, size=48, seed=11)
    config = tiny_config(root, image_size=48, batch_size=32, epochs=6, scheduler="cosine", rotation=20, workers=2)
    run = create_run(db, config)
    assert Trainer(db, workspace, run.id).run() == "completed"
    best = db.get_run(run.id).best_val_acc
    assert 0.85 <= best <= 0.97, f"best validation accuracy {best:.3f}"
