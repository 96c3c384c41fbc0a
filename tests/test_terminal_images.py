"""What the app asks a terminal before it starts, against a pseudo-terminal that answers as kitty,
a sixel terminal, tmux, or nothing at all."""

from __future__ import annotations

import os
import pty
import select
import sys
import threading
import time

import pytest

from leuktui import terminal_images


def ask_a(answers: dict[bytes, bytes], monkeypatch, timeout: float | None = 1.0, delay: float = 0.0):
    """``ask_terminal`` (``timeout`` None: its own) on a pty whose other end answers each question
    it recognises, ``delay`` seconds after it is asked; what was asked, said, and left unread."""
    master, slave = pty.openpty()
    heard = bytearray()

    def terminal() -> None:
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                return
            heard.extend(chunk)
            time.sleep(delay)
            for question, answer in answers.items():
                if question in chunk:
                    os.write(master, answer)
            if b"\x1b[c" in chunk:
                return

    other_end = threading.Thread(target=terminal, daemon=True)
    other_end.start()
    with os.fdopen(os.dup(slave), "r") as tty_in, os.fdopen(os.dup(slave), "w") as tty_out:
        monkeypatch.setattr(sys, "stdin", tty_in)
        monkeypatch.setattr(sys, "stdout", tty_out)
        said = terminal_images.ask_terminal() if timeout is None else terminal_images.ask_terminal(timeout=timeout)
    other_end.join(delay + 2)
    left = os.read(slave, 4096) if select.select([slave], [], [], 0.1)[0] else b""
    os.close(slave)
    os.close(master)
    return said, bytes(heard), left


KITTY_QUERY = b"\x1b_Gi=31,s=1,v=1,a=q,t=d,f=24;AAAA\x1b\\"


@pytest.mark.parametrize("answers, kind, cell", [
    ({KITTY_QUERY: b"\x1b_Gi=31;OK\x1b\\", b"\x1b[16t": b"\x1b[6;36;17t", b"\x1b[c": b"\x1b[?62;c"}, "kitty", (17, 36)),
    ({b"\x1b[16t": b"\x1b[6;20;10t", b"\x1b[c": b"\x1b[?62;4;22c"}, "sixel", (10, 20)),  # WezTerm, foot, xterm -ti vt340
    ({KITTY_QUERY: b"\x1b_Gi=31;OK\x1b\\", b"\x1b[c": b"\x1b[?62;4c"}, "sixel", (10, 20)),  # both: sixel first
    ({b"\x1b[c": b"\x1b[?1;2c"}, "blocks", (10, 20)),  # tmux: no graphics, no cell size (a VT340's)
])
def test_the_terminal_is_asked_once_and_its_answers_decide_the_images(answers, kind, cell, monkeypatch):
    said, heard, left = ask_a(answers, monkeypatch)
    assert said == (kind, *cell) and left == b""
    assert heard.endswith(b"\x1b[c") and KITTY_QUERY in heard, "all questions at once, the device attributes last"


def test_a_terminal_that_answers_nothing_gets_blocks_after_the_timeout(monkeypatch):
    said, _, _ = ask_a({}, monkeypatch, timeout=0.3)
    assert said == ("blocks", 10, 20)


def test_a_slow_link_is_waited_for_so_its_answers_never_reach_the_app_as_keys(monkeypatch):
    """Over SSH on a long or busy path the answers come a second or more late; one that came after
    the asking stopped would be read by the app as keys (``[?62;4c``: ``?`` opens the help)."""
    said, _, left = ask_a({b"\x1b[16t": b"\x1b[6;20;10t", b"\x1b[c": b"\x1b[?62;4c"}, monkeypatch, timeout=None, delay=1.5)
    assert said == ("sixel", 10, 20)
    assert left == b"", f"left for the app to read: {left!r}"


def test_no_terminal_is_not_asked(monkeypatch, tmp_path):
    with (tmp_path / "out").open("w") as out:
        monkeypatch.setattr(sys, "stdout", out)
        assert terminal_images.ask_terminal() is None
    assert (tmp_path / "out").read_text() == ""


def test_the_answer_and_the_override_choose_the_widget(monkeypatch):
    from textual_image import widget

    monkeypatch.setattr(terminal_images, "_answer", ("sixel", 10, 20))
    monkeypatch.delenv("LEUKTUI_IMAGES", raising=False)
    assert terminal_images.image_class() is widget.SixelImage and terminal_images.drawn_with() == "sixel"
    monkeypatch.setenv("LEUKTUI_IMAGES", "blocks")
    assert terminal_images.image_class() is widget.HalfcellImage and terminal_images.drawn_with() == "half-cell blocks"
    monkeypatch.setenv("LEUKTUI_IMAGES", "text")
    assert terminal_images.image_class() is None
    monkeypatch.setattr(terminal_images, "_answer", ("kitty", 17, 36))
    monkeypatch.setenv("LEUKTUI_IMAGES", "auto")
    assert terminal_images.image_class() is widget.TGPImage and terminal_images.cell_ratio() == pytest.approx(36 / 17)


def test_the_library_is_imported_without_asking_the_terminal_again(tmp_path):
    """In the running app the terminal is the app's: textual-image, imported when the first image
    shows (with an answer or with none, as under LEUKTUI_IMAGES=blocks), writes it nothing."""
    import subprocess
    import time

    master, slave = pty.openpty()
    script = ("import sys; from leuktui import terminal_images as t; t._answer = None; "
              "widget = t.image_class(); print(widget.__name__, t.cell_ratio(), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", script], stdin=slave, stdout=slave, stderr=subprocess.PIPE, text=True,
                          timeout=60, env={**os.environ, "LEUKTUI_IMAGES": "blocks"})
    os.close(slave)
    time.sleep(0.1)
    os.set_blocking(master, False)
    try:
        written = os.read(master, 4096)
    except (BlockingIOError, OSError):
        written = b""
    os.close(master)
    assert done.returncode == 0 and done.stderr.startswith("HalfcellImage 2.0"), done.stderr
    assert written == b"", "no question reached the terminal"
