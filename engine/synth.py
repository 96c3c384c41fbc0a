"""A synthetic C-NMC-like dataset in exactly the lab's layout (demo and test data).

Each image is one segmented white blood cell on black: a stained cytoplasm and a darker nucleus.
ALL (label 1) cells are about 30% larger, with irregular, sometimes notched outlines, a higher
nucleus-to-cytoplasm ratio, finer chromatin and visible nucleoli; HEM (label 0) cells are smaller
and rounder with condensed chromatin. Every feature's distribution overlaps between the classes
and a few cells look like the other class, so a ResNet learns the task well but not perfectly.
Stain colour, brightness and size vary from image to image. Same seed, same bytes.
"""

from __future__ import annotations

import csv
import errno
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from engine.datasets import TEST_CSVS
from engine.errors import UserError

HEM_FRACTION = 0.32          # share of normal cells, as in the lab's data
LOOKALIKE_FRACTION = 0.05    # cells drawn with the other class's features
ANSWER_KEY = "test_answer_key.csv"


@dataclass(frozen=True)
class CellLook:
    radius: float        # cell radius as a fraction of the image side
    irregularity: float  # amplitude of the outline's harmonics
    nc_ratio: float      # nucleus radius / cell radius
    notch: float         # depth of a cleft in the nucleus (0 = none)
    nucleoli: int
    chromatin: float     # texture contrast inside the nucleus
    darkness: float      # how condensed (dark) the nucleus is


def sample_look(rng: np.random.Generator, label: int) -> CellLook:
    if label == 1:
        return CellLook(
            radius=float(np.clip(rng.normal(0.30, 0.04), 0.17, 0.42)),
            irregularity=float(np.clip(rng.normal(0.055, 0.025), 0.0, 0.14)),
            nc_ratio=float(np.clip(rng.normal(0.82, 0.05), 0.6, 0.93)),
            notch=float(rng.uniform(0.12, 0.3)) if rng.random() < 0.4 else 0.0,
            nucleoli=int(min(rng.poisson(1.4), 4)),
            chromatin=float(rng.uniform(6, 16)),
            darkness=float(rng.normal(0, 8)),
        )
    return CellLook(
        radius=float(np.clip(rng.normal(0.23, 0.035), 0.14, 0.36)),
        irregularity=float(np.clip(rng.normal(0.025, 0.015), 0.0, 0.09)),
        nc_ratio=float(np.clip(rng.normal(0.73, 0.06), 0.5, 0.9)),
        notch=float(rng.uniform(0.08, 0.2)) if rng.random() < 0.1 else 0.0,
        nucleoli=int(min(rng.poisson(0.25), 2)),
        chromatin=float(rng.uniform(12, 26)),
        darkness=float(rng.normal(-14, 8)),
    )


def _outline(rng: np.random.Generator, theta: np.ndarray, irregularity: float) -> np.ndarray:
    """A closed, smoothly wobbling radius factor around 1 for each angle."""
    factor = np.ones_like(theta)
    for k in range(2, 7):
        amplitude = rng.normal(0, irregularity / np.sqrt(k - 1))
        factor += amplitude * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    return factor


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Zero-mean noise with features about size/cells pixels wide, in [-1, 1]."""
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    image = Image.fromarray(coarse, mode="F").resize((size, size), Image.Resampling.BICUBIC)
    noise = np.asarray(image, dtype=np.float32)
    return np.clip(noise / 1.5, -1, 1)


def render_cell(rng: np.random.Generator, label: int, size: int) -> np.ndarray:
    """One RGB uint8 image of a cell of class ``label``."""
    looks_like = 1 - label if rng.random() < LOOKALIKE_FRACTION else label
    look = sample_look(rng, looks_like)

    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    cx, cy = size / 2 + rng.normal(0, 0.03 * size, 2)
    rc = look.radius * size
    dx, dy = xs - cx, ys - cy
    r = np.hypot(dx, dy)
    theta = np.arctan2(dy, dx)
    cell_edge = rc * _outline(rng, theta, look.irregularity)

    # The nucleus sits off-centre inside the cell.
    rn = rc * look.nc_ratio
    shift = (rc - rn) * rng.uniform(0.1, 0.6)
    angle = rng.uniform(0, 2 * np.pi)
    nx, ny = cx + shift * np.cos(angle), cy + shift * np.sin(angle)
    ndx, ndy = xs - nx, ys - ny
    nr = np.hypot(ndx, ndy)
    ntheta = np.arctan2(ndy, ndx)
    nucleus_edge = rn * _outline(rng, ntheta, look.irregularity * 1.3)
    if look.notch:
        centre = rng.uniform(-np.pi, np.pi)
        gap = np.angle(np.exp(1j * (ntheta - centre)))
        nucleus_edge = nucleus_edge * (1 - look.notch * np.exp(-((gap / 0.35) ** 2)))
    nucleus_edge = np.minimum(nucleus_edge, cell_edge - (r - nr) - 1.0)

    edge_width = max(0.8, size / 300)
    cell_alpha = np.clip((cell_edge - r) / edge_width, 0, 1)
    nucleus_alpha = np.clip((nucleus_edge - nr) / edge_width, 0, 1)

    # Stain: a per-image tint and brightness, then cytoplasm and nucleus colours.
    tint = rng.normal(0, 12, 3)
    brightness = rng.uniform(0.85, 1.1)
    cytoplasm = (np.array([178.0, 160.0, 212.0]) + tint) * brightness
    nucleus = (np.array([104.0, 66.0, 156.0]) + tint * 0.7 + look.darkness) * brightness

    texture = _smooth_noise(rng, size, max(4, size // 10))
    grain = _smooth_noise(rng, size, max(6, size // 5))
    image = cytoplasm[None, None, :] + 10 * texture[..., None]
    chromatin = nucleus[None, None, :] + look.chromatin * grain[..., None]
    for _ in range(look.nucleoli):
        radius = rn * rng.uniform(0.08, 0.15)
        offset = rn * 0.55 * np.sqrt(rng.random())
        direction = rng.uniform(0, 2 * np.pi)
        ox, oy = nx + offset * np.cos(direction), ny + offset * np.sin(direction)
        spot = np.clip((radius - np.hypot(xs - ox, ys - oy)) / edge_width, 0, 1)
        chromatin = chromatin + 38 * spot[..., None]
    image = image * (1 - nucleus_alpha[..., None]) + chromatin * nucleus_alpha[..., None]
    image = image * cell_alpha[..., None]
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _labels(rng: np.random.Generator, n: int) -> np.ndarray:
    """Exactly round(n * HEM_FRACTION) normal cells, shuffled."""
    labels = np.ones(n, dtype=np.int64)
    labels[: round(n * HEM_FRACTION)] = 0
    rng.shuffle(labels)
    return labels


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def make_dataset(
    root: Path | str,
    *,
    n_train: int = 800,
    n_valid: int = 200,
    n_test: int = 200,
    size: int = 128,
    seed: int = 0,
    workers: int = 2,
) -> Path:
    """Write a dataset in the lab's layout under ``root`` and return ``root``.

    The dataset is built in a temporary folder beside ``root`` and moved into place, so an
    interrupted run never leaves a half-written dataset behind.
    """
    root = Path(root)
    for name, value in (("--n-train", n_train), ("--n-valid", n_valid), ("--n-test", n_test)):
        if value < 2:
            raise ValueError(f"{name}: {value} is too small (at least 2)")
    if not 16 <= size <= 1024:
        raise ValueError(f"--size: {size} is outside [16, 1024]")
    if root.exists() and not root.is_dir():
        raise FileExistsError(f"{root}: is a file, not a folder for the dataset")
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root}: folder exists and is not empty")
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    except OSError as exc:
        raise UserError(f"{root}: the dataset cannot be written there ({exc.strerror})") from None
    try:
        _generate(staging, n_train, n_valid, n_test, size, seed, workers)
        if root.exists():
            root.rmdir()
        os.replace(staging, root)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS):
            raise
        raise UserError(f"{root}: the dataset could not be written ({exc.strerror}); nothing written") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return root



def _generate(root: Path, n_train: int, n_valid: int, n_test: int, size: int, seed: int, workers: int) -> None:
    sequence = np.random.SeedSequence(seed)
    label_seed, *split_seeds = sequence.spawn(4)
    label_rng = np.random.default_rng(label_seed)
    splits = {
        "train": _labels(label_rng, n_train),
        "valid": _labels(label_rng, n_valid),
        "test": _labels(label_rng, n_test),
    }
    jobs = []
    for (split, labels), split_seed in zip(splits.items(), split_seeds, strict=True):
        folder = root / "new_dataset" / split
        folder.mkdir(parents=True)
        for index, (label, image_seed) in enumerate(zip(labels, split_seed.spawn(len(labels)), strict=True)):
            jobs.append((folder / f"{index}.bmp", int(label), image_seed))

    def draw(job: tuple[Path, int, np.random.SeedSequence]) -> None:
        path, label, image_seed = job
        pixels = render_cell(np.random.default_rng(image_seed), label, size)
        Image.fromarray(pixels, mode="RGB").save(path, format="BMP")

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(draw, jobs))

    def rel(split: str, index: int) -> str:
        return f"./new_dataset/{split}/{index}.bmp"

    for split, csv_name in (("train", "train.csv"), ("valid", "valid.csv")):
        _write_csv(root / csv_name, ["Path", "label"], [[rel(split, i), int(y)] for i, y in enumerate(splits[split])])
    # The lab hands out the same test images in a different row order for each model.
    order_rng = np.random.default_rng(seed + 1)
    for depth, csv_name in TEST_CSVS.items():
        order = np.arange(n_test) if depth == 18 else order_rng.permutation(n_test)
        _write_csv(root / csv_name, ["Path"], [[rel("test", int(i))] for i in order])
    _write_csv(root / ANSWER_KEY, ["ID", "label"], [[rel("test", i), int(y)] for i, y in enumerate(splits["test"])])
