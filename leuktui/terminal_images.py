"""What this terminal draws images with, asked once before the app starts, and ``textual-image``'s
widget classes for it. Light: no textual, no PIL until an image is shown.

textual-image asks the terminal as it is imported (a sixel query, a kitty graphics query, the
cell size in pixels), waiting a tenth of a second for each answer that does not come; and the
answers arrive on stdin, which the app's driver reads once it runs. So the asking is done here
first, all questions at once, in a thread while the app loads (``Asking``), and the library is
imported later, when an image is first shown, told the answers instead of asking again. ``LEUKTUI_IMAGES`` overrides the answer:
``auto`` (the default), ``kitty``, ``sixel``, ``blocks`` or ``text``.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import struct
import sys
import threading
import time

MODES = ("auto", "kitty", "sixel", "blocks", "text")
ENV = "LEUKTUI_IMAGES"
FEWER_COLOURS = {"256": "256", "standard": "16", "windows": "16"}

# A terminal that has not answered the last question by then answers none. Over SSH on a long or
# busy path the answers come a second or more late, and one that came after the asking stopped
# would be read by the app as keys (`[?62;4c`: `?` opens the help); so the wait is long, which only
# a terminal that never answers pays (every VT100-like one answers the device attributes at once).
ASK_SECONDS = 3.0
# The questions, all at once: kitty's graphics query, the cell size in pixels, and last the primary
# device attributes, which every terminal answers, in order: once that answer is in, any other
# answer that was coming has come.
_QUESTIONS = b"\x1b_Gi=31,s=1,v=1,a=q,t=d,f=24;AAAA\x1b\\" b"\x1b[16t" b"\x1b[c"
_DEVICE = re.compile(rb"\x1b\[\?([\d;]*)c")
_KITTY = re.compile(rb"\x1b_Gi=31;OK\x1b\\")
_CELL = re.compile(rb"\x1b\[6;(\d+);(\d+)t")
_answer: tuple[str, int, int] | None = None  # what the terminal said: the kind, a cell's width and height in pixels


def ask_terminal(timeout: float = ASK_SECONDS) -> tuple[str, int, int] | None:
    """``(kind, cell width, cell height)`` from the terminal on stdin/stdout, or None when they
    are no terminal. The kinds as textual-image ranks them: sixel first (terminals that answer
    both draw sixel better than kitty's placeholders), then kitty graphics, else blocks."""
    import select
    import termios
    import tty

    if sys.stdin is None or sys.stdout is None or not (sys.stdin.isatty() and sys.stdout.isatty()):
        return None
    fd_in, fd_out = sys.stdin.fileno(), sys.stdout.fileno()
    width, height = _window_cell(fd_out) or (0, 0)
    try:
        saved = termios.tcgetattr(fd_in)
    except termios.error:
        return None
    said = b""
    try:
        tty.setcbreak(fd_in, termios.TCSANOW)  # the answers are read, not echoed
        os.write(fd_out, _QUESTIONS)
        deadline = time.monotonic() + timeout
        while _DEVICE.search(said) is None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd_in], [], [], left)[0]:
                break
            said += os.read(fd_in, 4096)
    except (OSError, termios.error):  # the terminal went away as it was asked: the app finds out itself
        return None
    finally:
        with contextlib.suppress(termios.error):
            termios.tcsetattr(fd_in, termios.TCSANOW, saved)
    device = _DEVICE.search(said)
    cell = _CELL.search(said)
    if not (width and height) and cell:
        height, width = int(cell.group(1)), int(cell.group(2))
    if device and "4" in device.group(1).decode().split(";"):
        kind = "sixel"
    elif _KITTY.search(said):
        kind = "kitty"
    else:
        kind = "blocks"
    return kind, width or 10, height or 20  # a VT340's cell where the terminal does not say


def mode() -> str:
    chosen = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if chosen not in MODES:
        chosen = "auto"
    if chosen == "auto" and _answer is not None:
        return _answer[0]
    return chosen


class Asking:
    """The terminal being asked what it draws, in a thread (it waits on the terminal; it computes
    next to nothing): start it before the app is imported, ``wait`` before the app runs, whose
    driver reads stdin from then on."""

    def __init__(self) -> None:
        self.thread: threading.Thread | None = None
        if os.environ.get(ENV, "auto").strip().lower() in ("", "auto"):
            self.thread = threading.Thread(target=self._ask, name="terminal-images", daemon=True)
            self.thread.start()

    @staticmethod
    def _ask() -> None:
        global _answer
        _answer = ask_terminal()

    def wait(self) -> None:
        if self.thread is not None:
            self.thread.join(ASK_SECONDS + 1)


def _library():
    """``textual_image.widget``, imported without asking the terminal: with its answers where the
    app asked them first, else with the window's own cell size (or a VT340's). Asked inside the
    running app, the questions would be lost in its input (and the answers typed into a form)."""
    if "textual_image.widget" in sys.modules:
        from textual_image import widget

        return widget
    from textual_image import _terminal

    width, height = _cell_size()
    _terminal.get_cell_size._result = _terminal.CellSize(width, height)  # its cache of the answer
    real = sys.__stdout__
    sys.__stdout__ = io.StringIO()  # not a terminal: nothing is asked
    try:
        from textual_image import widget
    finally:
        sys.__stdout__ = real
    return widget


def _window_cell(fd: int | None = None) -> tuple[int, int] | None:
    """A cell's width and height in pixels from the window's size (of ``fd``, else stdout's),
    where the terminal keeps it; else None."""
    import fcntl
    import termios

    with contextlib.suppress(OSError, ValueError, AttributeError):
        fd = sys.__stdout__.fileno() if fd is None else fd
        rows, columns, x_pixels, y_pixels = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
        if rows and columns and x_pixels and y_pixels:
            return x_pixels // columns, y_pixels // rows
    return None


def _cell_size() -> tuple[int, int]:
    """A cell's width and height in pixels: the terminal's answer, else the window's, else 10 by 20."""
    return (_answer[1], _answer[2]) if _answer is not None else (_window_cell() or (10, 20))


def image_class():
    """The textual-image widget class for this terminal, or None for text."""
    chosen = mode()
    if chosen == "text":
        return None
    widget = _library()
    return {"kitty": widget.TGPImage, "sixel": widget.SixelImage, "blocks": widget.HalfcellImage}.get(chosen, widget.Image)


def drawn_with() -> str:
    """What the image panes use here, in words."""
    chosen = mode()
    if chosen == "auto":  # nobody asked the terminal first (a test's app): textual-image's own choice
        _library()  # first: imported on its own, the renderables would ask the terminal
        from textual_image import renderable

        chosen = {renderable.TGPImage: "kitty", renderable.SixelImage: "sixel", renderable.HalfcellImage: "blocks"}.get(renderable.Image, "")
    return {"kitty": "kitty graphics", "sixel": "sixel", "blocks": "half-cell blocks", "text": "text"}.get(chosen, "shaded characters")


def cell_ratio() -> float:
    """How much taller a terminal cell is than wide."""
    width, height = _cell_size()
    return height / width if width and height else 2.0
