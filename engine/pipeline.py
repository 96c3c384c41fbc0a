"""The input pipeline: decode each image once into a uint8 cache, then augment whole batches on
the training device.

Per-image work (decoding, histogram equalization, crop-to-cell, resizing, the centre crop) is
deterministic, so it runs once per dataset and preprocessing setting and is kept in a memory-
mapped ``.npy`` file in the workspace cache. Random work (flips, rotation) runs per batch on the
device as one ``grid_sample``, and the batch leaves in channels-last layout.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from db.files import NotAFile
from engine.config import RunConfig, center_crop_size
from engine.datasets import DatasetError, Sample, open_image
from engine.files import atomic_write
from engine.preprocess import Preprocess, crop_to_cell, equalize_gray  # noqa: F401  (the pipeline's steps, re-exported)

CACHE_VERSION = 1
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
def read_image(path: Path, preprocess: Preprocess) -> np.ndarray:
    try:
        with open_image(path) as image:
            return preprocess(image)
    except FileNotFoundError:
        raise DatasetError(f"{path}: image file is missing") from None
    except NotAFile as exc:
        raise DatasetError(f"{exc} (an image was expected)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DatasetError(f"{path}: more than {Image.MAX_IMAGE_PIXELS} pixels, refused (a decompression bomb?)") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DatasetError(f"{path}: image cannot be read ({exc.__class__.__name__})") from None


# -- the decoded cache ------------------------------------------------------------------------


def _cache_key(paths: Sequence[Path], preprocess: Preprocess) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps([CACHE_VERSION, preprocess.__dict__], sort_keys=True).encode())
    for path in paths:
        try:
            stat = path.stat()
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        except FileNotFoundError:
            raise DatasetError(f"{path}: image file is missing") from None
        except (OSError, ValueError) as exc:  # a loop of links, a name too long, a NUL in the name
            raise DatasetError(f"{path}: image cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
    return digest.hexdigest()[:24]


def decode_images(
    samples: Sequence[Sample],
    preprocess: Preprocess,
    *,
    cache_dir: Path | None = None,
    workers: int = 2,
    on_progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """All samples' images as one ``(N, H, W, 3)`` uint8 array, decoded at most once per setting.

    With a ``cache_dir`` the array is a read-only memory map of a file written atomically there,
    so later runs, evaluations and exports on the same images skip decoding entirely.
    ``on_progress(done, total)`` follows the decoding.
    """
    paths = [s.path for s in samples]
    side = preprocess.output_size
    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / f"{_cache_key(paths, preprocess)}.npy"
        if cache_file.exists():
            try:
                cached = np.load(cache_file, mmap_mode="r")
            except (ValueError, OSError, EOFError):
                cached = None  # truncated or damaged: decoded again below, and the file replaced
            if cached is not None and cached.shape == (len(paths), side, side, 3):
                return cached
    images = np.empty((len(paths), side, side, 3), dtype=np.uint8)

    def fill(index: int) -> None:
        images[index] = read_image(paths[index], preprocess)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for done, _ in enumerate(pool.map(fill, range(len(paths))), start=1):
            if on_progress is not None:
                on_progress(done, len(paths))
    if cache_file is not None:
        _save_cache(cache_file, images)
    return images


def _save_cache(cache_file: Path, images: np.ndarray) -> None:
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(cache_file) as out:
            np.save(out, images)
    except OSError:
        pass  # the cache only saves time; a full or read-only disk must not stop training


# -- batches -----------------------------------------------------------------------------------


def batch_indices(
    labels: np.ndarray,
    batch_size: int,
    generator: torch.Generator,
    *,
    shuffle: bool,
    balance: bool = False,
) -> list[np.ndarray]:
    """Index arrays for one epoch. Balanced sampling draws classes equally, with replacement."""
    n = len(labels)
    if balance:
        counts = np.bincount(labels, minlength=2).astype(np.float64)
        weights = torch.from_numpy(1.0 / counts[labels])
        order = torch.multinomial(weights, n, replacement=True, generator=generator).numpy()
    elif shuffle:
        order = torch.randperm(n, generator=generator).numpy()
    else:
        order = np.arange(n)
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    if shuffle and len(batches) > 1 and len(batches[-1]) == 1:
        batches.pop()  # BatchNorm cannot train on a batch of one
    return batches


def iterate_batches(
    images: np.ndarray,
    labels: np.ndarray | None,
    batches: Sequence[np.ndarray],
    device: torch.device,
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """uint8 NHWC batches on ``device``, gathered one batch ahead in a background thread."""
    pin = device.type == "cuda"

    def gather(index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
        # Sorted reads are sequential on a memory map; the order inside a batch is irrelevant.
        index = np.sort(index)
        x = torch.from_numpy(np.ascontiguousarray(images[index]))
        y = torch.from_numpy(labels[index]) if labels is not None else None
        if pin:
            x = x.pin_memory()
        return x, y

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(gather, batches[0]) if batches else None
        for position in range(len(batches)):
            x, y = pending.result()
            if position + 1 < len(batches):
                pending = pool.submit(gather, batches[position + 1])
            yield x.to(device, non_blocking=pin), (y.to(device, non_blocking=pin) if y is not None else None)


# -- on-device transforms ---------------------------------------------------------------------


class BatchTransform:
    """uint8 NHWC -> normalised float NCHW (channels-last), with optional random flips/rotation."""

    def __init__(
        self,
        *,
        hflip: bool = False,
        vflip: bool = False,
        rotation: float = 0.0,
        channels_last: bool = True,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ):
        self.hflip, self.vflip, self.rotation = hflip, vflip, rotation
        self.channels_last = channels_last
        self.scale = torch.tensor([1.0 / (255.0 * s) for s in std]).view(1, 3, 1, 1)
        self.shift = torch.tensor([-m / s for m, s in zip(mean, std, strict=True)]).view(1, 3, 1, 1)

    @classmethod
    def for_training(cls, config: RunConfig) -> BatchTransform:
        return cls(hflip=config.hflip, vflip=config.vflip, rotation=config.rotation, channels_last=config.channels_last)

    @classmethod
    def for_eval(cls, config: RunConfig) -> BatchTransform:
        return cls(channels_last=config.channels_last)

    @property
    def random(self) -> bool:
        return self.hflip or self.vflip or self.rotation > 0

    def __call__(self, batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x = batch.permute(0, 3, 1, 2).float()
        if self.random:
            if generator is None:
                raise ValueError("random transforms need a generator")
            x = self._augment(x, generator)
        x = x * self.scale.to(x.device) + self.shift.to(x.device)
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        return x.contiguous(memory_format=memory_format)

    def _augment(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n = x.shape[0]
        # Random numbers come from a CPU generator so a seed gives the same run on any device.
        flip_x = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0) if self.hflip else torch.ones(n)
        flip_y = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0) if self.vflip else torch.ones(n)
        if self.rotation <= 0:
            x = torch.where(flip_x.to(x.device).view(n, 1, 1, 1) < 0, x.flip(3), x)
            return torch.where(flip_y.to(x.device).view(n, 1, 1, 1) < 0, x.flip(2), x)
        angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(self.rotation)
        cos, sin = torch.cos(angle), torch.sin(angle)
        # Output pixel -> input pixel: rotate, then mirror; zeros (black) fill the corners.
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0] = cos * flip_x
        theta[:, 0, 1] = -sin * flip_x
        theta[:, 1, 0] = sin * flip_y
        theta[:, 1, 1] = cos * flip_y
        grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def tta_views(x: torch.Tensor, mode: str) -> list[torch.Tensor]:
    """The views averaged at test time: the image, or five / ten overlapping crops.

    Crops keep 384/450 of the side (the lab's crop), at the four corners and the centre; ten-crop
    adds their mirror images.
    """
    if mode == "single":
        return [x]
    height, width = x.shape[-2:]
    side = center_crop_size(min(height, width))
    corners = [(0, 0), (0, width - side), (height - side, 0), (height - side, width - side)]
    corners.append((int(round((height - side) / 2.0)), int(round((width - side) / 2.0))))
    crops = [x[..., top : top + side, left : left + side] for top, left in corners]
    if mode == "ten":
        crops += [crop.flip(-1) for crop in crops]
    elif mode != "five":
        raise ValueError(f"unknown eval mode {mode!r}")
    return crops
