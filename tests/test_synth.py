import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.datasets import TEST_CSVS
from engine.synth import ANSWER_KEY, make_dataset


def _digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as handle:
        return list(csv.reader(handle))


def test_same_seed_same_bytes_and_another_seed_differs(tmp_path):
    kwargs = {"n_train": 10, "n_valid": 6, "n_test": 6, "size": 32}
    a = make_dataset(tmp_path / "a", seed=3, **kwargs)
    b = make_dataset(tmp_path / "b", seed=3, **kwargs)
    c = make_dataset(tmp_path / "c", seed=4, **kwargs)
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)


def test_layout_matches_the_lab(tiny_data):
    train = _rows(tiny_data / "train.csv")
    assert train[0] == ["Path", "label"]
    assert train[1][0] == "./new_dataset/train/0.bmp"
    assert {row[1] for row in train[1:]} == {"0", "1"}
    image = Image.open(tiny_data / "new_dataset" / "train" / "0.bmp")
    assert image.format == "BMP" and image.mode == "RGB" and image.size == (40, 40)

    test_sets = [_rows(tiny_data / name) for name in TEST_CSVS.values()]
    for rows in test_sets:
        assert rows[0] == ["Path"]
    orders = [[row[0] for row in rows[1:]] for rows in test_sets]
    assert all(sorted(order) == sorted(orders[0]) for order in orders)
    assert len({tuple(order) for order in orders}) == 3, "each model's test CSV has its own row order"

    key = _rows(tiny_data / ANSWER_KEY)
    assert key[0] == ["ID", "label"]
    assert sorted(row[0] for row in key[1:]) == sorted(orders[0])


def test_classes_look_like_the_task(tmp_path):
    root = make_dataset(tmp_path / "d", n_train=200, n_valid=4, n_test=4, size=96, seed=1)
    rows = _rows(root / "train.csv")[1:]
    labels = np.array([int(label) for _, label in rows])
    assert (labels == 0).mean() == pytest.approx(0.32, abs=0.01)
    areas = {0: [], 1: []}
    for (path, _), y in zip(rows, labels, strict=True):
        pixels = np.asarray(Image.open(root / path))
        assert pixels[0, 0].tolist() == [0, 0, 0], "cells are segmented onto black"
        areas[y].append((pixels.max(axis=2) > 12).mean())
    ratio = np.mean(areas[1]) / np.mean(areas[0])
    # About 30% larger in diameter means about 1.7x the area; the classes still overlap.
    assert 1.4 < ratio < 2.0
    assert max(areas[0]) > min(areas[1])


def test_refuses_to_overwrite_and_bad_sizes(tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        make_dataset(tmp_path / "busy", n_train=4, n_valid=4, n_test=4, size=32)
    assert (tmp_path / "busy" / "keep.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="--size"):
        make_dataset(tmp_path / "small", size=8)
    assert not (tmp_path / "small").exists()
