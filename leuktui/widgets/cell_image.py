"""A cell's image in the terminal, by ``textual-image`` (``leuktui.terminal_images`` says which
kind): kitty graphics or sixel where the terminal has them, coloured half-cell blocks elsewhere
(tmux, any SSH session), a line of text where the terminal has too few colours for blocks."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

from leuktui.formatting import visible
from leuktui.terminal_images import ENV, FEWER_COLOURS, cell_ratio, drawn_with, image_class


class CellImage(Vertical):
    """A title line and an image, or a line that says why there is no image (no file yet, a file
    that cannot be read, a terminal of 256 colours)."""

    DEFAULT_CSS = """
    CellImage { width: 1fr; height: 1fr; align-horizontal: center; }
    CellImage > .cell-title { height: 1; width: 1fr; }
    CellImage > .cell-missing { width: 1fr; height: auto; color: $text-muted; padding-right: 1; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.path: Path | None = None  # the file shown, if any
        self.shown: tuple | None = None  # what show() was last asked for
        self.pixels: tuple[int, int] = (0, 0)  # its width and height

    def compose(self) -> ComposeResult:
        yield Static("", classes="cell-title")
        yield Static("", classes="cell-missing")

    def show(self, path: Path | None, title: Text | str, missing: str = "") -> None:
        """``path``'s image under ``title``; without a readable file, ``missing`` says why. Asked
        for the same again, it does nothing (a file is read once)."""
        asked = (path, str(title), missing)
        if asked == self.shown:
            return
        self.shown = asked
        self.query_one(".cell-title", Static).update(title if isinstance(title, Text) else Text(visible(title)))
        why = missing
        if path is not None and not Path(path).is_file():
            path, why = None, missing or f"{visible(path)}: no such file"
        picture_class = image_class()
        if path is not None and picture_class is None:
            path, why = None, f"{visible(path)} (images are off: {ENV}=text)"
        colours = self.app.console.color_system
        if path is not None and drawn_with() == "half-cell blocks" and colours not in ("truecolor", None):
            path, why = None, (f"{FEWER_COLOURS.get(colours, colours)} colours are too few to show the cell; "
                               f"a true-colour terminal (COLORTERM=truecolor) shows it. The file: {visible(path)}")
        for old in self.query(".cell-picture"):
            old.remove()
        self.query_one(".cell-missing", Static).update(Text(why, style="dim"))
        self.query_one(".cell-missing", Static).display = path is None
        self.path = path
        if path is not None:
            from PIL import Image as PILImage

            try:  # decoded whole here: a damaged file is said in a line, never raised while painting
                with PILImage.open(path) as opened:
                    image = opened.convert("RGB")
            except (OSError, SyntaxError, ValueError, PILImage.DecompressionBombError) as exc:
                reason = getattr(exc, "strerror", None) or str(exc).replace(str(path), "").strip(" :'\"") or exc.__class__.__name__
                self.query_one(".cell-missing", Static).update(Text(f"{visible(path)}: {reason}", style="red"))
                self.query_one(".cell-missing", Static).display = True
                self.path = None
                return
            self.pixels = image.size
            picture = picture_class(image, classes="cell-picture")
            self._fit(picture)
            self.mount(picture)

    def on_resize(self) -> None:
        for picture in self.query(".cell-picture"):
            self._fit(picture)

    def _fit(self, picture) -> None:
        """As large as the pane allows, its pixels square: a terminal cell is about twice as tall
        as it is wide (the terminal says how much, where it can)."""
        columns, rows = self.size.width, self.size.height - 1  # under the title
        width, height = self.pixels
        if columns <= 0 or rows <= 0 or not width or not height:
            return
        ratio = cell_ratio()
        scale = min(columns / width, rows * ratio / height)
        picture.styles.width = max(1, int(width * scale))
        picture.styles.height = max(1, int(height * scale / ratio))
