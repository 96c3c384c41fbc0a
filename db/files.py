"""Opening a file we are told is a file: its kind is checked on the open descriptor, so a FIFO,
a folder or a device in its place is one line naming it, never a read that hangs or never ends."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import IO, Any

from db.errors import UserError

KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"),
         (stat.S_ISSOCK, "a socket"))


class NotAFile(UserError, OSError):
    """Where a regular file was expected there is something else; the message names it."""


def kind_of(mode: int) -> str:
    return next((name for test, name in KINDS if test(mode)), "not a regular file")


def open_regular(path: Path | str, mode: str = "r", **options: Any) -> IO:
    """``open(path, mode)`` for reading, refusing anything but a regular file. A FIFO is opened
    without waiting for a writer, then refused."""
    assert "w" not in mode and "a" not in mode and "+" not in mode, mode
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        kind = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(kind):
            raise NotAFile(f"{path}: is {kind_of(kind)}, not a file")
        os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, mode, **options)
    except BaseException:
        os.close(descriptor)
        raise


def read_regular_text(path: Path | str, **options: Any) -> str:
    with open_regular(path, "r", **options) as handle:
        return handle.read()
