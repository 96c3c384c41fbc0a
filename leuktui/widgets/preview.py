"""The new-run and sweep forms' preprocessing preview: the first training image of the form's
dataset as the pipeline would feed it (crop to cell, gray histogram equalization, resize, centre
crop: ``engine.preprocess``, the steps the worker runs), with one random flip and rotation as the
training augmentation would draw it; redrawn as the fields change. No torch: PIL and numpy."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Static
from textual.worker import get_current_worker

from engine.config import RunConfig
from leuktui.widgets.cell_image import CellImage

PREVIEW_FOLDER = "preview"  # under the workspace's cache folder
PREVIEW_SEED = 0  # one fixed draw of the augmentation: a field's change is what changes the picture


def augmentation(config: RunConfig, seed: int = PREVIEW_SEED) -> tuple[bool, bool, float]:
    """(horizontal flip, vertical flip, degrees) of one draw of the training augmentation."""
    rng = random.Random(seed)
    return (config.hflip and rng.random() < 0.5, config.vflip and rng.random() < 0.5,
            rng.uniform(-config.rotation, config.rotation) if config.rotation else 0.0)


def render_preview(config: RunConfig, source: Path, folder: Path) -> tuple[Path, str]:
    """The PNG of ``source`` through ``config``'s preprocessing and one draw of its augmentation,
    cached in ``folder`` by what made it; and a line saying what was done."""
    from PIL import Image

    from engine.files import atomic_write
    from engine.preprocess import Preprocess, to_rgb

    steps = Preprocess.from_config(config)
    hflip, vflip, degrees = augmentation(config)
    status = source.stat()
    key = f"{source}:{status.st_size}:{status.st_mtime_ns}:{steps}:{hflip}:{vflip}:{degrees:.3f}"
    path = folder / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.png"
    if not path.is_file():
        with Image.open(source) as opened:
            image = Image.fromarray(steps(to_rgb(opened)))
        if hflip:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if vflip:
            image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
        if degrees:
            image = image.rotate(degrees, resample=Image.Resampling.BILINEAR)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as out:
            image.save(out, format="PNG")
    done = [step for step, on in (("crop to cell", config.crop_to_cell), ("gray + hist. eq.", config.hist_eq)) if on]
    done.append(f"{config.image_size} px")
    if config.center_crop:
        done.append(f"centre {steps.output_size} px")
    moved = [word for word, on in (("h-flip", hflip), ("v-flip", vflip)) if on]
    if degrees:
        moved.append(f"{degrees:+.0f}° (of ±{config.rotation:g})")
    return path, " → ".join(done) + ("; then " + ", ".join(moved) if moved else "")


class PreprocessPreview(Vertical):
    """``show(config)`` draws it (in a thread: decoding a large image takes a moment)."""

    DEFAULT_CSS = """
    PreprocessPreview { width: 44; height: 1fr; padding: 0 1; border-left: vkey $surface-lighten-1; }
    PreprocessPreview #preview-title { height: auto; }
    PreprocessPreview #preview-steps { height: auto; color: $text-muted; }
    PreprocessPreview Horizontal { height: 1fr; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.shown_for: tuple | None = None
        self._first: dict[str, Path | None] = {}  # data folder -> its first training image

    def compose(self) -> ComposeResult:
        yield Static(Text("the first training image, as the network gets it", style="bold"), id="preview-title")
        yield Static("", id="preview-steps")
        with Horizontal():
            yield CellImage(id="preview-source")
            yield CellImage(id="preview-fed")

    def show(self, config: RunConfig) -> None:
        if not self.display:
            return
        wanted = (config.data_dir, config.crop_to_cell, config.hist_eq, config.image_size, config.center_crop,
                  config.hflip, config.vflip, config.rotation)
        if wanted != self.shown_for:
            self.shown_for = wanted
            self._draw(config)

    @work(thread=True, exclusive=True, group="preview", exit_on_error=False)
    def _draw(self, config: RunConfig) -> None:
        from engine.datasets import load_split

        worker = get_current_worker()

        def hand(method, *args) -> None:  # a newer draw (the fields changed again) took this one's place
            if not worker.is_cancelled:
                self.app.call_from_thread(method, *args)

        data = config.data_dir
        try:
            if data not in self._first:
                samples = load_split(data, "train").samples
                self._first[data] = samples[0].path if samples else None
            source = self._first[data]
            if source is None:
                hand(self._say, f"{data}: no training images")
                return
            path, steps = render_preview(config, source, self.app.workspace.cache_dir / PREVIEW_FOLDER)
        except Exception as exc:  # no dataset there yet, a damaged CSV or image: said, the form goes on
            hand(self._say, f"no training image to show: {exc}")
            return
        hand(self._picture, source, path, steps)

    def _say(self, message: str) -> None:
        self.query_one("#preview-steps", Static).update(Text(message, style="dim"))
        self.query_one("#preview-source", CellImage).show(None, "", "")
        self.query_one("#preview-fed", CellImage).show(None, "", "")

    def _picture(self, source: Path, path: Path, steps: str) -> None:
        self.query_one("#preview-steps", Static).update(Text(steps))
        self.query_one("#preview-source", CellImage).show(source, Text("the file", style="dim"))
        self.query_one("#preview-fed", CellImage).show(path, Text("fed", style="dim"))
