"""The deterministic per-image preprocessing steps (crop to cell, gray histogram equalization,
resize, centre crop), with PIL and numpy only: the report draws its examples with them without
loading torch, and the pipeline decodes its cache with them."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from engine.config import RunConfig, center_crop_size

__all__ = ["CELL_MARGIN", "CELL_THRESHOLD", "Preprocess", "crop_to_cell", "equalize_gray"]

CELL_THRESHOLD = 12      # a pixel brighter than this in any channel belongs to the cell
CELL_MARGIN = 0.04       # crop-to-cell keeps this much black around the cell's box


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB. A 16- or 32-bit gray image is scaled down by its own bit depth (PIL's convert
    would clip every value above 255 to white), a float one by its range."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        return Image.fromarray((np.asarray(image, dtype=np.uint16) >> 8).astype(np.uint8)).convert("RGB")
    if image.mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        if image.mode == "I" and low >= 0 and high <= 65535:
            low, high = 0.0, 65535.0 if high > 255 else 255.0
        scaled = np.zeros_like(values) if high <= low else (values - low) / (high - low) * 255.0
        return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8)).convert("RGB")
    return image.convert("RGB")


@dataclass(frozen=True)
class Preprocess:
    """The deterministic per-image steps, in the order they run."""

    size: int
    hist_eq: bool = False
    crop_to_cell: bool = False
    center_crop: bool = False

    @classmethod
    def from_config(cls, config: RunConfig) -> Preprocess:
        return cls(config.image_size, config.hist_eq, config.crop_to_cell, config.center_crop)

    @property
    def output_size(self) -> int:
        return center_crop_size(self.size) if self.center_crop else self.size

    def __call__(self, image: Image.Image) -> np.ndarray:
        image = to_rgb(image)
        if self.crop_to_cell:
            image = crop_to_cell(image)
        if self.hist_eq:
            image = equalize_gray(image)
        if image.size != (self.size, self.size):
            image = image.resize((self.size, self.size), Image.Resampling.BILINEAR)
        pixels = np.asarray(image, dtype=np.uint8)
        if self.center_crop:
            side = self.output_size
            top = (self.size - side) // 2
            pixels = pixels[top : top + side, top : top + side]
        return pixels


def equalize_gray(image: Image.Image) -> Image.Image:
    """Gray scale, then histogram equalization with OpenCV's ``equalizeHist`` mapping."""
    gray = np.asarray(image.convert("L"), dtype=np.uint8)
    hist = np.bincount(gray.ravel(), minlength=256)
    cdf = np.cumsum(hist)
    cdf_min = cdf[np.flatnonzero(hist)[0]]
    total = gray.size
    if total == cdf_min:  # a single grey level: nothing to spread
        return Image.fromarray(gray).convert("RGB")
    lut = np.clip(np.rint((cdf - cdf_min) * 255.0 / (total - cdf_min)), 0, 255).astype(np.uint8)
    return Image.fromarray(lut[gray]).convert("RGB")


def crop_to_cell(image: Image.Image) -> Image.Image:
    """A square crop around the bounding box of the non-black cell (black padding if needed)."""
    pixels = np.asarray(image)
    mask = pixels.max(axis=2) > CELL_THRESHOLD
    if not mask.any():
        return image
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    side = max(bottom - top, right - left)
    side = int(math.ceil(side * (1 + 2 * CELL_MARGIN)))
    cy, cx = (top + bottom) / 2, (left + right) / 2
    box_left, box_top = int(round(cx - side / 2)), int(round(cy - side / 2))
    return image.crop((box_left, box_top, box_left + side, box_top + side))
